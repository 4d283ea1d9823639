"""The `sql` executor against SQLite (a file under tmp_path) and a real PostgreSQL.

Covers bound parameters (injection stays data), executemany, fetch modes, one
transaction for `statements`, named connections, JSON-safe values, errors that never
show a password, cancellation rolling back, and engines disposed when the run ends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import create_engine, make_url, text

from executors.one_task import run_task
from flowctl.config import Settings
from flowctl.engine.executors.base import TaskContext, executor_class
from flowctl.engine.executors.sql import SqlExecutor, json_safe
from flowctl.engine.states import TaskStatus, WorkflowStatus
from flowctl.errors import ExecutorError

PASSWORD = "s3cr3t-pw-42"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def ctx(task_id: str = "q") -> TaskContext:
    return TaskContext("exec-1", task_id, 1)


def run(
    params: dict[str, Any], settings: Settings | None = None, executor: SqlExecutor | None = None
) -> Any:
    """Runs one task on a fresh executor (closed afterwards), or on `executor`."""

    async def go() -> Any:
        sql = executor or SqlExecutor(settings or Settings())
        try:
            return await sql.run(ctx(), params)
        finally:
            if executor is None:
                await sql.aclose()

    return asyncio.run(go())


def query(url: str, statement: str) -> list[dict[str, Any]]:
    """What is in the database, read outside the executor."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(statement))]
    finally:
        engine.dispose()


@pytest.fixture
def items(db_url: str) -> str:
    """A table `items` with one row, id 1 'apple'."""
    run(
        {
            "connection": db_url,
            "statements": [
                {"statement": "create table items (id integer primary key, name text not null)"},
                {"statement": "insert into items (id, name) values (1, 'apple')"},
            ],
        }
    )
    return db_url


def test_the_registry_finds_the_executor() -> None:
    assert executor_class("sql") is SqlExecutor


def test_create_insert_select(db_url: str) -> None:
    created = run(
        {
            "connection": db_url,
            "statement": "create table people (id integer primary key, name text, age integer)",
        }
    )
    assert created["rows"] == []
    inserted = run(
        {
            "connection": db_url,
            "statement": "insert into people (id, name, age) values (:id, :name, :age)",
            "parameters": {"id": 1, "name": "Ada", "age": 36},
        }
    )
    assert inserted == {"rows": [], "rowcount": 1}
    selected = run(
        {
            "connection": db_url,
            "statement": "select id, name, age from people where name = :name",
            "parameters": {"name": "Ada"},
        }
    )
    assert selected == {"rows": [{"id": 1, "name": "Ada", "age": 36}], "rowcount": 1}


def test_fetch_all_one_none(items: str) -> None:
    run(
        {
            "connection": items,
            "statement": "insert into items (id, name) values (2, 'pear'), (3, 'plum')",
        }
    )
    select = {"connection": items, "statement": "select id, name from items order by id"}
    everything = run(select)  # default: all, since the statement returns rows
    assert [row["name"] for row in everything["rows"]] == ["apple", "pear", "plum"]
    assert everything["rowcount"] == 3
    assert run({**select, "fetch": "all"}) == everything
    assert run({**select, "fetch": "one"}) == {
        "rows": [{"id": 1, "name": "apple"}],
        "rowcount": 1,
    }
    assert run({**select, "fetch": "none"}) == {"rows": [], "rowcount": 0}
    nothing = {"connection": items, "statement": "select id from items where id < 0"}
    assert run({**nothing, "fetch": "one"}) == {"rows": [], "rowcount": 0}


def test_executemany(items: str) -> None:
    rows = [{"id": i, "name": f"item {i}"} for i in range(10, 15)]
    result = run(
        {
            "connection": items,
            "statement": "insert into items (id, name) values (:id, :name)",
            "parameters": rows,
        }
    )
    assert result == {"rows": [], "rowcount": 5}
    stored = query(items, "select id, name from items where id >= 10 order by id")
    assert stored == rows
    empty = run(
        {
            "connection": items,
            "statement": "insert into items (id, name) values (:id, :name)",
            "parameters": [],
        }
    )
    assert empty == {"rows": [], "rowcount": 0}  # nothing to insert: nothing runs


def test_a_named_connection_comes_from_settings(items: str) -> None:
    settings = Settings(connections={"WAREHOUSE": items})
    select = {"statement": "select name from items", "fetch": "one"}
    assert run({"connection": "warehouse", **select}, settings)["rows"] == [{"name": "apple"}]
    assert run({"connection": "WAREHOUSE", **select}, settings)["rows"] == [{"name": "apple"}]
    environment = Settings.from_env({"FLOWCTL_CONN_WAREHOUSE": items})
    assert run({"connection": "warehouse", **select}, environment)["rows"] == [{"name": "apple"}]


def test_statements_run_in_one_transaction(items: str) -> None:
    with pytest.raises(ExecutorError) as failure:
        run(
            {
                "connection": items,
                "statements": [
                    {
                        "statement": "insert into items (id, name) values (:id, :name)",
                        "parameters": [{"id": 2, "name": "pear"}, {"id": 3, "name": "plum"}],
                    },
                    {"statement": "update items set name = 'APPLE' where id = 1"},
                    {"statement": "insert into items (id, name) values (1, 'duplicate')"},
                ],
            }
        )
    message = str(failure.value)
    assert message.startswith("sql statement 3 of 3 failed: ")
    assert "\n" not in message
    assert "unique" in message.lower()  # the driver's own words
    assert query(items, "select id, name from items order by id") == [{"id": 1, "name": "apple"}]


def test_statements_return_the_last_statements_rows(items: str) -> None:
    result = run(
        {
            "connection": items,
            "statements": [
                {
                    "statement": "insert into items (id, name) values (:id, 'fig')",
                    "parameters": {"id": 7},
                },
                {"statement": "select count(*) as n from items"},
            ],
        }
    )
    assert result == {"rows": [{"n": 2}], "rowcount": 1}


def test_an_injection_attempt_is_stored_as_data(items: str) -> None:
    evil = "x'); DROP TABLE items; --"
    run(
        {
            "connection": items,
            "statement": "insert into items (id, name) values (:id, :name)",
            "parameters": {"id": 2, "name": evil},
        }
    )
    found = run(
        {
            "connection": items,
            "statement": "select name from items where name = :name",
            "parameters": {"name": "'; DROP TABLE items; --"},
        }
    )
    assert found["rows"] == []  # compared as a value, not run as SQL
    assert query(items, "select id, name from items order by id") == [
        {"id": 1, "name": "apple"},
        {"id": 2, "name": evil},
    ]


def test_mapping_and_list_values_are_bound_as_json_text(items: str) -> None:
    value = {"tags": ["a", "b"], "n": 1}
    run(
        {
            "connection": items,
            "statement": "insert into items (id, name) values (5, :name)",
            "parameters": {"name": value},
        }
    )
    stored = query(items, "select name from items where id = 5")[0]["name"]
    assert json.loads(stored) == value


def test_postgresql_values_come_back_json_safe(postgres_url: str) -> None:
    result = run(
        {
            "connection": postgres_url,
            "statements": [
                {
                    "statement": "create table invoices (number text, total numeric(12, 2), "
                    "exact numeric(30, 10), issued date, seen timestamptz, raw bytea, "
                    "ref uuid, doc jsonb, waited interval)"
                },
                {
                    "statement": "insert into invoices values (:number, :total, :exact, "
                    ":issued, :seen, decode('aGk=', 'base64'), :ref, :doc, '90 seconds')",
                    "parameters": {
                        "number": "A-1",
                        "total": 12.5,
                        "exact": "12345678901234567890.0123456789",
                        "issued": "2024-03-01",
                        "seen": "2024-03-01T10:20:30+00:00",
                        "ref": "12345678-1234-5678-1234-567812345678",
                        "doc": {"lines": [{"sku": "x", "qty": 2}]},
                    },
                },
                {"statement": "select * from invoices"},
            ],
        }
    )
    (row,) = result["rows"]
    assert row == {
        "number": "A-1",
        "total": 12.5,
        "exact": "12345678901234567890.0123456789",
        "issued": "2024-03-01",
        "seen": "2024-03-01T10:20:30+00:00",
        "raw": base64.b64encode(b"hi").decode(),
        "ref": "12345678-1234-5678-1234-567812345678",
        "doc": {"lines": [{"sku": "x", "qty": 2}]},
        "waited": 90.0,
    }
    assert json.loads(json.dumps(result)) == result


def test_sqlite_blobs_come_back_as_base64(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'blobs.db'}"
    result = run(
        {
            "connection": url,
            "statements": [
                {"statement": "create table b (data blob, amount numeric)"},
                {"statement": "insert into b values (x'00ff10', 2.25)"},
                {"statement": "select data, amount from b"},
            ],
        }
    )
    assert result["rows"] == [{"data": base64.b64encode(b"\x00\xff\x10").decode(), "amount": 2.25}]


def test_json_safe_values() -> None:
    assert json_safe(Decimal("12.50")) == 12.5
    assert json_safe(Decimal("0.1")) == 0.1
    assert json_safe(Decimal("12345678901234567.89")) == "12345678901234567.89"
    assert json_safe(Decimal("NaN")) == "NaN"
    assert json_safe(date(2024, 1, 2)) == "2024-01-02"
    assert json_safe(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05"
    assert json_safe(timedelta(minutes=2)) == 120.0
    assert json_safe(b"\x01\x02") == "AQI="
    assert json_safe(memoryview(b"\x01\x02")) == "AQI="
    assert json_safe(UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert json_safe({"a": (1, Decimal("1.5"))}) == {"a": [1, 1.5]}
    assert json_safe(float("inf")) == "inf"


def test_an_in_memory_sqlite_database_lives_for_the_run() -> None:
    async def go() -> Any:
        sql = SqlExecutor(Settings())
        try:
            await sql.run(ctx(), {"connection": "sqlite://", "statement": "create table t (a)"})
            await asyncio.gather(
                *(
                    sql.run(
                        ctx(),
                        {
                            "connection": "sqlite://",
                            "statement": "insert into t values (:a)",
                            "parameters": {"a": i},
                        },
                    )
                    for i in range(20)
                )
            )
            return await sql.run(
                ctx(), {"connection": "sqlite://", "statement": "select count(*) as n from t"}
            )
        finally:
            await sql.aclose()

    assert asyncio.run(go())["rows"] == [{"n": 20}]


# --- errors never show a password -----------------------------------------------------


def test_a_connection_failure_hides_the_password() -> None:
    url = f"postgresql+psycopg://flow:{PASSWORD}@127.0.0.1:1/warehouse"
    with pytest.raises(ExecutorError) as failure:
        run({"connection": url, "statement": "select 1"})
    message = str(failure.value)
    assert message.startswith("cannot connect to postgresql+psycopg://flow:***@127.0.0.1:1/")
    assert PASSWORD not in message
    assert "\n" not in message


def test_a_driver_message_quoting_the_password_is_redacted(postgres_url: str) -> None:
    # pgserver trusts local connections, so any password connects.
    url = make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)
    with pytest.raises(ExecutorError) as failure:
        run({"connection": url, "statement": f"select '{PASSWORD}'::int"})
    message = str(failure.value)
    assert message.startswith("sql statement failed: invalid input syntax for type integer")
    assert PASSWORD not in message
    assert "***" in message


def test_unknown_and_malformed_connections() -> None:
    settings = Settings(
        connections={"WAREHOUSE": "sqlite:///w.db", "BROKEN": f"pg:/flow:{PASSWORD}@host"}
    )
    with pytest.raises(ExecutorError, match=r"unknown connection 'lake'.*FLOWCTL_CONN_LAKE") as e:
        run({"connection": "lake", "statement": "select 1"}, settings)
    assert "BROKEN, WAREHOUSE" in str(e.value)
    assert "sqlite:///w.db" not in str(e.value)

    with pytest.raises(ExecutorError, match=r"'BROKEN'.*not a valid SQLAlchemy URL") as e:
        run({"connection": "broken", "statement": "select 1"}, settings)
    assert PASSWORD not in str(e.value)

    with pytest.raises(ExecutorError, match="unknown database dialect 'nosuch'") as e:
        run({"connection": f"nosuch://flow:{PASSWORD}@host/db", "statement": "select 1"})
    assert PASSWORD not in str(e.value)

    with pytest.raises(ExecutorError, match="must be a SQLAlchemy URL"):
        run({"connection": "not a url", "statement": "select 1"})


def test_rendered_inputs_are_checked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with_ = {"connection": url, "statement": "select :a", "parameters": "{{ params.p }}"}
    ran = run_task("sql", with_, params={"p": "a=1"})
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error == "task 'task': with.parameters: is not of type 'object', 'array'"
    assert ran.attempts == [(1, TaskStatus.FAILED)]
    with pytest.raises(ExecutorError, match="list containing int"):
        run({"connection": url, "statement": "select :a", "parameters": [1]})
    with pytest.raises(ExecutorError) as missing:
        run({"connection": url, "statement": "select :a, :b", "parameters": {"a": 1}})
    # One line, without SQLAlchemy's "(Background on this error at: …)" that ends it.
    assert str(missing.value) == "sql statement failed: A value is required for bind parameter 'b'"


# --- in a pipeline: what is retried ------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("insert into items (id, name) values (1, 'again')", "unique"),  # IntegrityError
        ("insert into items (id, name) values (2, null)", "null"),  # IntegrityError
        ("select nme from items", "nme"),  # PostgreSQL: ProgrammingError
    ],
    ids=["unique", "not-null", "unknown-column"],
)
def test_statements_the_database_refuses_are_not_retried(
    items: str, statement: str, message: str
) -> None:
    ran = run_task("sql", {"connection": items, "statement": statement}, retries=3)
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error is not None and message in ran.error.lower()
    if statement.startswith("select") and items.startswith("sqlite"):
        # SQLite reports it as an OperationalError, which may be transient: retried.
        assert [attempt for attempt, _ in ran.attempts] == [1, 2, 3, 4]
    else:
        assert ran.attempts == [(1, TaskStatus.FAILED)]


@pytest.mark.parametrize(
    "connection",
    ["lake", "not a url", "nosuch://host/db"],
    ids=["unknown-name", "malformed", "unknown-dialect"],
)
def test_a_connection_that_cannot_work_is_not_retried(connection: str) -> None:
    ran = run_task("sql", {"connection": connection, "statement": "select 1"}, retries=3)
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.attempts == [(1, TaskStatus.FAILED)]


def test_a_connection_failure_is_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}"
    ran = run_task("sql", {"connection": url, "statement": "select 1"}, retries=2)
    assert ran.result.status is WorkflowStatus.FAILED
    assert ran.error is not None and ran.error.startswith(f"cannot connect to {url}")
    assert ran.attempts == [(1, TaskStatus.FAILED), (2, TaskStatus.FAILED), (3, TaskStatus.FAILED)]


# --- lifetime ----------------------------------------------------------------------------


def _sessions(postgres_url: str) -> int:
    database = make_url(postgres_url).database
    rows = query(
        postgres_url,
        f"select count(*) as n from pg_stat_activity where datname = '{database}' "
        "and pid <> pg_backend_pid()",
    )
    return int(rows[0]["n"])


def test_engines_are_pooled_and_disposed_by_aclose(postgres_url: str, tmp_path: Path) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'x.db'}"

    async def go() -> tuple[int, int, int]:
        sql = SqlExecutor(Settings(connections={"PG": postgres_url}))
        for connection in (postgres_url, "pg", sqlite_url, postgres_url):
            await sql.run(ctx(), {"connection": connection, "statement": "select 1 as one"})
        engines = len(sql._engines)
        open_during = _sessions(postgres_url)
        await sql.aclose()
        return engines, open_during, len(sql._engines)

    engines, open_during, engines_after = asyncio.run(go())
    assert engines == 2  # one per URL: the name and the URL share the PostgreSQL engine
    assert open_during == 1  # pooled: four tasks, one connection kept
    assert engines_after == 0
    assert _sessions(postgres_url) == 0


def test_a_cancelled_attempt_is_interrupted_and_rolled_back(items: str) -> None:
    slow = (
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 100000000) "
        "select count(*) from n"
    )

    async def go() -> float:
        sql = SqlExecutor(Settings())
        started = time.monotonic()
        try:
            async with asyncio.timeout(0.3):
                await sql.run(
                    ctx(),
                    {
                        "connection": items,
                        "statements": [
                            {"statement": "insert into items (id, name) values (9, 'late')"},
                            {"statement": slow},
                        ],
                    },
                )
        except TimeoutError:
            return time.monotonic() - started
        finally:
            await sql.aclose()
        raise AssertionError("the slow statement finished")

    elapsed = asyncio.run(go())
    assert elapsed < 5
    assert query(items, "select id from items") == [{"id": 1}]
