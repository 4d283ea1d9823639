"""The history: executions and task checkpoints in a SQL database (SQLite or PostgreSQL).

Checkpoints use SQLAlchemy Core on one long-lived connection, one INSERT and one COMMIT
per task attempt: it is the hot path of a run (see benchmarks/bench_orchestrator.py).
`MemoryHistory` is the same interface without a database (`flowctl run --no-history`).
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Engine, Table, create_engine, event, insert, select, update
from sqlalchemy.engine import make_url

from flowctl.engine.state import migrate
from flowctl.engine.state.models import TaskExecution, WorkflowExecution
from flowctl.engine.states import TaskStatus, WorkflowStatus
from flowctl.errors import FlowctlError

_executions = cast(Table, WorkflowExecution.__table__)
_tasks = cast(Table, TaskExecution.__table__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    id: str
    pipeline: str
    digest: str
    ir: dict[str, Any]
    params: dict[str, Any]
    status: WorkflowStatus
    created_at: datetime
    definition_id: int | None = None
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pipeline_dir: str | None = None  # the folder of the pipeline file, if it came from one
    lease_owner: str | None = None  # "host:pid" of the process running it


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A task attempt's outcome, as the history stores it."""

    execution_id: str
    task_id: str
    attempt: int
    status: TaskStatus
    output: Any = None
    error: str | None = None
    input: Any = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class History(Protocol):
    def create_execution(self, record: ExecutionRecord) -> None: ...

    def update_execution(self, execution_id: str, **changes: Any) -> None: ...

    def checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def claim(self, execution_id: str, seen_owner: str | None, owner: str) -> bool: ...

    def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...

    def checkpoints(self, execution_id: str) -> list[Checkpoint]: ...

    def list_executions(
        self, pipeline: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[ExecutionRecord]: ...

    def close(self) -> None: ...


class HistoryError(FlowctlError):
    """The history database cannot be reached or used."""


def create_history_engine(url: str) -> Engine:
    """An engine with the settings flowctl relies on (SQLite: WAL, foreign keys)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False}, json_serializer=_dumps
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=_dumps)


def _dumps(value: Any) -> str:
    """JSON for the history's columns; bytes and other non-JSON values are not an error."""
    try:
        return json.dumps(value, default=_fallback, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or infinity: not JSON (PostgreSQL refuses them); keep them as text
        return json.dumps(_finite(value), default=_fallback, ensure_ascii=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(child) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(child) for child in value]
    return value


class SqlHistory:
    """History in SQLite or PostgreSQL; upgrades its own schema when it opens."""

    def __init__(self, url: str) -> None:
        self.engine = open_history_engine(url)
        try:
            self._connection: Connection = self.engine.connect()
        except Exception as error:
            self.engine.dispose()
            raise HistoryError(
                f"cannot open the history database: {driver_message(error)}"
            ) from None
        self._lock = threading.Lock()  # executors in threads never touch it; resumes might
        # SQLite's checkpoints skip SQLAlchemy's per-statement machinery (~150 us of the
        # ~200 us a checkpoint cost through Core); the rows read back the same through it.
        self._sqlite = (
            self._connection.connection.driver_connection
            if self.engine.dialect.name == "sqlite"
            else None
        )

    def _checkpoint_sqlite(self, checkpoint: Checkpoint) -> None:
        row = (
            checkpoint.execution_id,
            checkpoint.task_id,
            checkpoint.attempt,
            str(checkpoint.status),
            _dumps(checkpoint.input),
            _dumps(checkpoint.output),
            checkpoint.error,
            _sqlite_time(checkpoint.started_at),
            _sqlite_time(checkpoint.finished_at),
        )
        with self._lock:
            assert self._sqlite is not None
            try:
                self._sqlite.execute(_SQLITE_CHECKPOINT, row)
                self._sqlite.commit()
            except Exception:
                self._sqlite.rollback()
                raise

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._lock:
            try:
                yield self._connection
                self._connection.commit()
            except Exception:
                self._connection.rollback()
                raise

    def create_execution(self, record: ExecutionRecord) -> None:
        with self._transaction() as connection:
            connection.execute(
                insert(_executions).values({**_columns(record), "status": str(record.status)})
            )

    def update_execution(self, execution_id: str, **changes: Any) -> None:
        if "status" in changes:
            changes["status"] = str(changes["status"])
        with self._transaction() as connection:
            connection.execute(
                update(_executions).where(_executions.c.id == execution_id).values(**changes)
            )

    def claim(self, execution_id: str, seen_owner: str | None, owner: str) -> bool:
        """Takes over an execution if its owner is still the one seen (compare-and-set):
        of two resumes started at once, exactly one wins."""
        with self._transaction() as connection:
            done = connection.execute(
                update(_executions)
                .where(_executions.c.id == execution_id)
                .where(_executions.c.lease_owner.is_not_distinct_from(seen_owner))
                .values(lease_owner=owner)
            )
        return done.rowcount == 1

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        if self._sqlite is not None:
            self._checkpoint_sqlite(checkpoint)
            return
        with self._transaction() as connection:
            connection.execute(
                _tasks.insert(),
                {
                    "execution_id": checkpoint.execution_id,
                    "task_id": checkpoint.task_id,
                    "attempt": checkpoint.attempt,
                    "status": str(checkpoint.status),
                    "input": checkpoint.input,
                    "output": checkpoint.output,
                    "error": checkpoint.error,
                    "started_at": checkpoint.started_at,
                    "finished_at": checkpoint.finished_at,
                },
            )

    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        with self._transaction() as connection:
            row = connection.execute(
                select(_executions).where(_executions.c.id == execution_id)
            ).first()
        return _execution_record(row._mapping) if row else None

    def checkpoints(self, execution_id: str) -> list[Checkpoint]:
        with self._transaction() as connection:
            rows = connection.execute(
                select(_tasks).where(_tasks.c.execution_id == execution_id).order_by(_tasks.c.id)
            ).all()
        return [
            Checkpoint(**{**_columns_of(Checkpoint, row), "status": TaskStatus(row.status)})
            for row in rows
        ]

    def list_executions(
        self, pipeline: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[ExecutionRecord]:
        query = select(_executions).order_by(_executions.c.created_at.desc()).limit(limit)
        if pipeline:
            query = query.where(_executions.c.pipeline == pipeline)
        if status:
            query = query.where(_executions.c.status == status)
        with self._transaction() as connection:
            rows = connection.execute(query).all()
        return [_execution_record(row._mapping) for row in rows]

    def close(self) -> None:
        self._connection.close()
        self.engine.dispose()


_SQLITE_CHECKPOINT = (
    "INSERT INTO task_executions (execution_id, task_id, attempt, status, input, output, "
    "error, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _sqlite_time(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DateTime type stores (and parses back)."""
    return None if value is None else value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _execution_record(row: Any) -> ExecutionRecord:
    values = _columns_of(ExecutionRecord, row)
    return ExecutionRecord(**{**values, "status": WorkflowStatus(values["status"])})


def _columns(record: Any) -> dict[str, Any]:
    """A record's fields, which are named as the table's columns."""
    return {field.name: getattr(record, field.name) for field in fields(record)}


def _columns_of(cls: Any, row: Any) -> dict[str, Any]:
    """The values of a row (or its mapping) for the fields of `cls`, named alike."""
    mapping = getattr(row, "_mapping", row)
    return {field.name: mapping[field.name] for field in fields(cls)}


def open_history_engine(url: str) -> Engine:
    """An engine on the history database, its schema migrated to the current revision."""
    engine = None
    try:
        engine = create_history_engine(url)
        migrate.ensure_current(engine)
    except Exception as error:  # driver errors: name the database, not the traceback
        if engine is not None:
            engine.dispose()
        if isinstance(error, FlowctlError):
            raise
        raise HistoryError(f"cannot open the history database: {driver_message(error)}") from None
    return engine


_BACKGROUND_LINK = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def driver_message(error: Exception) -> str:
    """The first line of a driver error, without SQLAlchemy's background link."""
    text = _BACKGROUND_LINK.sub("", str(getattr(error, "orig", None) or error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass
class MemoryHistory:
    """The History interface in memory: fastest, and forgotten when the process ends."""

    executions: dict[str, ExecutionRecord] = field(default_factory=dict)
    rows: dict[str, list[Checkpoint]] = field(default_factory=dict)

    def create_execution(self, record: ExecutionRecord) -> None:
        self.executions[record.id] = record
        self.rows[record.id] = []

    def update_execution(self, execution_id: str, **changes: Any) -> None:
        if "status" in changes:
            changes["status"] = WorkflowStatus(changes["status"])
        self.executions[execution_id] = replace(self.executions[execution_id], **changes)

    def claim(self, execution_id: str, seen_owner: str | None, owner: str) -> bool:
        record = self.executions.get(execution_id)
        if record is None or record.lease_owner != seen_owner:
            return False
        self.executions[execution_id] = replace(record, lease_owner=owner)
        return True

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        self.rows[checkpoint.execution_id].append(checkpoint)

    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return self.executions.get(execution_id)

    def checkpoints(self, execution_id: str) -> list[Checkpoint]:
        return list(self.rows.get(execution_id, []))

    def list_executions(
        self, pipeline: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[ExecutionRecord]:
        found = [
            r
            for r in self.executions.values()
            if (pipeline is None or r.pipeline == pipeline)
            and (status is None or r.status == status)
        ]
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]

    def close(self) -> None:
        pass


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
