"""The history: the migrated schema matches the models, upgrades are idempotent, and rows
read back with the types they were written with (SQLite fast path and PostgreSQL)."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, select

from flowctl.engine.state import migrate
from flowctl.engine.state.history import (
    Checkpoint,
    ExecutionRecord,
    HistoryError,
    MemoryHistory,
    SqlHistory,
    create_history_engine,
)
from flowctl.engine.state.models import Base, TaskExecution
from flowctl.engine.states import TaskStatus, WorkflowStatus

FLOWCTL = Path(sys.executable).parent / "flowctl"


def schema_of(url: str) -> dict[str, Any]:
    """Tables → columns (name, nullable, primary key), indexes, foreign keys, uniques."""
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        tables = {}
        for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
            primary = set(inspector.get_pk_constraint(table)["constrained_columns"])
            tables[table] = {
                "columns": {
                    column["name"]: (column["nullable"], column["name"] in primary)
                    for column in inspector.get_columns(table)
                },
                "indexes": sorted(
                    (tuple(index["column_names"]), bool(index["unique"]))
                    for index in inspector.get_indexes(table)
                ),
                "foreign_keys": sorted(
                    (tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in inspector.get_foreign_keys(table)
                ),
                "uniques": sorted(
                    tuple(unique["column_names"])
                    for unique in inspector.get_unique_constraints(table)
                ),
            }
        return tables
    finally:
        engine.dispose()


def test_the_migration_creates_exactly_the_models_tables(history_url: str, tmp_path: Path) -> None:
    engine = create_history_engine(history_url)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    engine.dispose()
    migrated = schema_of(history_url)

    if history_url.startswith("sqlite"):
        reference_url = f"sqlite:///{tmp_path / 'from_models.db'}"
    else:  # a second database on the same server
        reference_url = history_url.replace("/t_", "/r_", 1)
        admin = create_engine(history_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            name = reference_url.rsplit("/", 1)[1].split("?", 1)[0]
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
    try:
        reference = create_engine(reference_url)
        Base.metadata.create_all(reference)
        reference.dispose()
        from_models = schema_of(reference_url)
    finally:
        if not history_url.startswith("sqlite"):
            admin = create_engine(history_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

    assert sorted(migrated) == sorted(Base.metadata.tables)
    assert migrated == from_models


def flowctl(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(FLOWCTL), *args, "--database-url", url], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def record(execution_id: str = "e1") -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id,
        pipeline="demo",
        digest="sha256:0",
        ir={"name": "demo", "tasks": []},
        params={"n": 1},
        status=WorkflowStatus.QUEUED,
        created_at=datetime.now(UTC),
    )


def test_db_upgrade_is_idempotent_and_keeps_the_data(history_url: str) -> None:
    first = flowctl("db", "upgrade", url=history_url)
    assert first.returncode == 0, first.stderr
    assert migrate.HEAD_REVISION in first.stdout
    history = SqlHistory(history_url)  # already current: opening migrates nothing
    history.create_execution(record())
    history.close()
    second = flowctl("db", "upgrade", url=history_url)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    history = SqlHistory(history_url)
    try:
        stored = history.get_execution("e1")
        assert stored is not None and stored.params == {"n": 1}
    finally:
        history.close()


def test_an_unreachable_database_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="cannot open the history database"):
        SqlHistory("postgresql+psycopg://nobody@/none?host=" + str(tmp_path / "no-socket"))


def test_checkpoints_read_back_with_their_types(history_url: str) -> None:
    history = SqlHistory(history_url)
    try:
        history.create_execution(record())
        started = datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=UTC)
        finished = started + timedelta(seconds=1, microseconds=5)
        output = {"text": "Größe ✓", "items": [1, 2.5, None, True], "nested": {"k": []}}
        written = [
            Checkpoint("e1", "a", 1, TaskStatus.FAILED, None, "boom", {"x": 1}, started, finished),
            Checkpoint("e1", "a", 2, TaskStatus.COMPLETED, output, None, None, started, finished),
            Checkpoint("e1", "b", 0, TaskStatus.SKIPPED),
            Checkpoint("e1", "c", 1, TaskStatus.COMPLETED, b"\x00raw", None, None, None, None),
            Checkpoint("e1", "d", 1, TaskStatus.COMPLETED, "plain", None, None, started, None),
        ]
        for checkpoint in written:
            history.checkpoint(checkpoint)
        read = history.checkpoints("e1")
    finally:
        history.close()

    def utc(value: datetime | None) -> datetime | None:  # SQLite keeps naive UTC
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)

    assert [(c.task_id, c.attempt, c.status) for c in read] == [
        (c.task_id, c.attempt, c.status) for c in written
    ]
    assert all(isinstance(c.status, TaskStatus) for c in read)
    assert all(isinstance(c.started_at, datetime) for c in read if c.task_id in ("a", "d"))
    assert [(utc(c.started_at), utc(c.finished_at)) for c in read] == [
        (c.started_at, c.finished_at) for c in written
    ]
    assert read[0].input == {"x": 1} and read[0].error == "boom" and read[0].output is None
    assert read[1].output == output
    assert read[2].output is None and read[2].started_at is None
    assert read[3].output == {"$base64": "AHJhdw=="}
    assert read[4].output == "plain"


def test_sqlite_fast_path_rows_match_what_sqlalchemy_reads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    history = SqlHistory(url)
    started = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    try:
        history.create_execution(record())
        history.checkpoint(
            Checkpoint("e1", "a", 3, TaskStatus.COMPLETED, {"n": [1]}, None, {"i": "x"}, started)
        )
    finally:
        history.close()
    engine = create_history_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(select(TaskExecution.__table__)).one()
    finally:
        engine.dispose()
    assert (row.execution_id, row.task_id, row.attempt, row.status) == ("e1", "a", 3, "COMPLETED")
    assert row.output == {"n": [1]} and row.input == {"i": "x"}
    assert row.started_at == started.replace(tzinfo=None)
    assert row.finished_at is None


def test_executions_are_listed_newest_first_and_filtered(history_url: str) -> None:
    history = SqlHistory(history_url)
    try:
        base = datetime(2024, 1, 1, tzinfo=UTC)
        for index in range(5):
            history.create_execution(
                ExecutionRecord(
                    id=f"e{index}",
                    pipeline="even" if index % 2 == 0 else "odd",
                    digest="sha256:0",
                    ir={},
                    params={},
                    status=WorkflowStatus.QUEUED,
                    created_at=base + timedelta(minutes=index),
                )
            )
        history.update_execution("e4", status=WorkflowStatus.FAILED, error="no")
        assert [r.id for r in history.list_executions()] == ["e4", "e3", "e2", "e1", "e0"]
        assert [r.id for r in history.list_executions(pipeline="odd")] == ["e3", "e1"]
        assert [r.id for r in history.list_executions(status="FAILED")] == ["e4"]
        assert [r.id for r in history.list_executions(limit=2)] == ["e4", "e3"]
        stored = history.get_execution("e4")
        assert stored is not None
        assert (stored.status, stored.error) == (WorkflowStatus.FAILED, "no")
        assert isinstance(stored.status, WorkflowStatus)
        assert history.get_execution("missing") is None
    finally:
        history.close()


def test_claiming_an_execution_is_compare_and_set(history_url: str) -> None:
    """Of two resumes that read the same owner, only the first claim wins."""
    history = SqlHistory(history_url)
    try:
        history.create_execution(record())
        assert history.claim("e1", None, "host:1") is True
        assert history.claim("e1", None, "host:2") is False  # the owner it saw is stale
        assert history.claim("e1", "host:1", "host:2") is True
        stored = history.get_execution("e1")
        assert stored is not None and stored.lease_owner == "host:2"
        assert history.claim("missing", None, "host:3") is False
    finally:
        history.close()


def test_the_memory_history_claims_alike() -> None:
    history = MemoryHistory()
    history.create_execution(record())
    assert history.claim("e1", None, "a") and not history.claim("e1", None, "b")


def test_non_finite_outputs_are_stored_as_text(history_url: str) -> None:
    """PostgreSQL's JSON refuses NaN and infinity: a task may still produce them."""
    history = SqlHistory(history_url)
    try:
        history.create_execution(record())
        history.checkpoint(
            Checkpoint("e1", "t", 1, TaskStatus.COMPLETED, output={"a": math.nan, "b": [math.inf]})
        )
        (stored,) = history.checkpoints("e1")
        assert stored.output == {"a": "nan", "b": ["inf"]}
    finally:
        history.close()
