"""`sql`: statements with bound parameters, in one transaction (the seed's DB executor).

Contract:
- `connection` is a SQLAlchemy URL, or the name of a `FLOWCTL_CONN_<NAME>` connection.
  No message ever shows a password: URLs are rendered with `***` in its place.
- Parameters are always bound by the driver, never interpolated into the SQL text.
- `statements` run in one transaction: all of them commit, or none does.
- Output: `{rows: [dict], rowcount}`; every value in `rows` is JSON-safe.
- What another attempt cannot fix fails the task at once (`retryable=False`): an unknown
  connection name, a malformed URL, an unknown dialect or missing driver, and statements
  the database refuses as written (ProgrammingError, IntegrityError, DataError). A
  connection failure or an OperationalError (a lock, a lost connection) may be retried.

SQLAlchemy is synchronous, so the work of one task runs in a worker thread
(`asyncio.to_thread`). One engine (and its connection pool) is kept per URL for the
executor's life, i.e. one run, and disposed in `aclose()`. A cancelled attempt (a
timeout, Ctrl-C) interrupts the statement and rolls back before the task settles, so a
retry never races a transaction that would still commit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from flowctl.config import Settings
from flowctl.engine.executors.base import BaseExecutor, TaskContext
from flowctl.engine.secrets import REDACTED
from flowctl.engine.state.history import driver_message
from flowctl.errors import ExecutorError
from flowctl.schemas import load_schema

Fetch = Literal["all", "one", "none"]

_CONNECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CANCEL_GRACE = 5.0  # seconds a cancelled attempt waits for its rollback
# The database refused the statements as written: running them again gives the same error.
_PERMANENT_ERRORS = (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.DataError)


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    parameters: dict[str, Any] | list[dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved connection: the URL to connect with and how to name it in messages."""

    url: URL
    label: str  # "connection 'WAREHOUSE'" or the URL with its password hidden
    hide: tuple[str, ...]  # texts to scrub from driver messages (password spellings)

    def redact(self, text: str) -> str:
        for secret in self.hide:
            text = text.replace(secret, REDACTED)
        return text

    def message(self, error: Exception) -> str:
        """The driver's message on one line, without a password or SQLAlchemy's link
        (`driver_message` leaves one that ends the first line: a missing bind parameter)."""
        return self.redact(driver_message(error))


class SqlExecutor(BaseExecutor):
    name: ClassVar[str] = "sql"
    with_schema: ClassVar[dict[str, Any]] = load_schema("executors/sql")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._engines: dict[str, Engine] = {}
        self._locks: dict[str, threading.Lock] = {}  # in-memory SQLite: one connection

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any:
        statements = _statements(params)
        target = self.resolve(params["connection"])
        engine, lock = self._engine(target)
        job = _Job(engine, lock, target, statements, params.get("fetch"))
        work = asyncio.ensure_future(asyncio.to_thread(job.run))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            job.cancel()
            # Let the thread roll back before the attempt settles (bounded: a driver
            # that ignores the interrupt must not hang the run).
            await asyncio.wait({work}, timeout=_CANCEL_GRACE)
            if work.done() and not work.cancelled():
                work.exception()  # retrieved: nobody else will read it
            raise

    async def aclose(self) -> None:
        engines, self._engines, self._locks = list(self._engines.values()), {}, {}
        for engine in engines:
            await asyncio.to_thread(engine.dispose)

    # -- connections ------------------------------------------------------------------

    def resolve(self, connection: str) -> Target:
        """The URL of `connection` (a URL, or a connection name); raises ExecutorError."""
        if "://" in connection:
            return _parse_url(connection, None)
        if not _CONNECTION_NAME.match(connection):
            raise ExecutorError(
                "connection must be a SQLAlchemy URL (dialect+driver://…) or the name of a "
                "FLOWCTL_CONN_<NAME> connection",
                retryable=False,
            )
        known = self.settings.connections
        name = connection if connection in known else connection.upper()
        if name not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ExecutorError(
                f"unknown connection {connection!r}: set FLOWCTL_CONN_{connection.upper()} "
                f"to its SQLAlchemy URL (known connections: {names})",
                retryable=False,
            )
        return _parse_url(known[name], name)

    def _engine(self, target: Target) -> tuple[Engine, threading.Lock | None]:
        key = target.url.render_as_string(hide_password=False)
        engine = self._engines.get(key)
        if engine is None:
            engine = _create_engine(target)
            self._engines[key] = engine
            if isinstance(engine.pool, StaticPool):
                self._locks[key] = threading.Lock()
        return engine, self._locks.get(key)


def _parse_url(text: str, name: str | None) -> Target:
    what = f"connection {name!r} (FLOWCTL_CONN_{name})" if name else "connection"
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        raise ExecutorError(f"{what} is not a valid SQLAlchemy URL", retryable=False) from None
    password = url.password
    hide: tuple[str, ...] = ()
    if password:
        spellings = {str(password), quote(str(password), safe=""), quote_plus(str(password))}
        hide = tuple(sorted((s for s in spellings if len(s) >= 3), key=len, reverse=True))
    label = f"connection {name!r}" if name else url.render_as_string(hide_password=True)
    return Target(url, label, hide)


def _create_engine(target: Target) -> Engine:
    url = target.url
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        # One in-memory database shared by the run's tasks (a pool would give each
        # thread its own, empty one); a lock serialises its use.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    try:
        return sa.create_engine(url, **options)
    except sa.exc.NoSuchModuleError:
        raise ExecutorError(
            f"{target.label}: unknown database dialect {url.drivername!r}", retryable=False
        ) from None
    except ImportError as error:
        raise ExecutorError(
            f"{target.label}: the driver for {url.drivername!r} is not installed "
            f"({error.name or error})",
            retryable=False,
        ) from None
    except (sa.exc.ArgumentError, TypeError, ValueError) as error:
        message = f"{target.label}: {target.message(error)}"
        raise ExecutorError(message, retryable=False) from None


# -- the work, in a worker thread ---------------------------------------------------


class _Job:
    """One attempt: runs in a worker thread; `cancel()` is called from the event loop."""

    def __init__(
        self,
        engine: Engine,
        lock: threading.Lock | None,
        target: Target,
        statements: list[Statement],
        fetch: Fetch | None,
    ) -> None:
        self.engine = engine
        self.lock = lock
        self.target = target
        self.statements = statements
        self.fetch = fetch
        self._cancelled = threading.Event()
        self._dbapi: Any = None

    def run(self) -> dict[str, Any]:
        if self.lock is None:
            return self._run()
        with self.lock:
            return self._run()

    def cancel(self) -> None:
        self._cancelled.set()
        dbapi = self._dbapi
        if dbapi is None:
            return
        # sqlite3: interrupt(); psycopg: cancel_safe(), which talks to the server: both may
        # be called from any thread, and neither may block the event loop.
        for method in ("interrupt", "cancel_safe", "cancel"):
            interrupt = getattr(dbapi, method, None)
            if interrupt is not None:
                threading.Thread(target=_quietly, args=(interrupt,), daemon=True).start()
                return

    def _run(self) -> dict[str, Any]:
        try:
            connection = self.engine.connect()
        except sa.exc.SQLAlchemyError as error:
            message = f"cannot connect to {self.target.label}: {self.target.message(error)}"
            raise ExecutorError(message) from None
        with connection:
            self._dbapi = connection.connection.dbapi_connection
            try:
                with connection.begin() as transaction:
                    output = self._statements(connection)
                    if self._cancelled.is_set():
                        transaction.rollback()
            except sa.exc.SQLAlchemyError as error:  # the statements' errors are caught below
                raise ExecutorError(
                    f"sql commit failed: {self.target.message(error)}",
                    retryable=_retryable(error),
                ) from None
        return output

    def _statements(self, connection: Connection) -> dict[str, Any]:
        count = len(self.statements)
        rows: list[dict[str, Any]] = []
        rowcount = 0
        for index, statement in enumerate(self.statements, start=1):
            if self._cancelled.is_set():
                raise ExecutorError("cancelled")
            last = index == count
            if statement.parameters == []:  # executemany of nothing: nothing to run
                rows, rowcount = [], 0
                continue
            try:
                result = connection.execute(sa.text(statement.sql), statement.parameters)
                if not last or not result.returns_rows:
                    rows, rowcount = [], result.rowcount
                    result.close()
                    continue
                fetch = self.fetch or "all"
                if fetch == "all":
                    rows = [_json_row(row._mapping) for row in result]
                elif fetch == "one":
                    first = result.first()
                    rows = [] if first is None else [_json_row(first._mapping)]
                else:
                    rows = []
                    result.close()
                rowcount = len(rows)
            except sa.exc.SQLAlchemyError as error:
                where = f"statement {index} of {count}" if count > 1 else "statement"
                raise ExecutorError(
                    f"sql {where} failed: {self.target.message(error)}",
                    retryable=_retryable(error),
                ) from None
        return {"rows": rows, "rowcount": rowcount}


def _retryable(error: sa.exc.SQLAlchemyError) -> bool:
    """False when the statements themselves are wrong: bad SQL, a constraint, a bad value,
    or a parameter SQLAlchemy refused before sending (a missing bind parameter)."""
    if isinstance(error, _PERMANENT_ERRORS):
        return False
    return not (
        isinstance(error, sa.exc.StatementError) and not isinstance(error, sa.exc.DBAPIError)
    )


def _quietly(call: Any) -> None:
    with contextlib.suppress(Exception):  # the connection may be gone: the rollback follows
        call()


# -- inputs -----------------------------------------------------------------------------


def _statements(params: Mapping[str, Any]) -> list[Statement]:
    if "statements" in params:
        given = params["statements"]
    else:
        given = [{"statement": params["statement"], "parameters": params.get("parameters")}]
    return [
        Statement(item["statement"], _bind(item.get("parameters"), index))
        for index, item in enumerate(given, start=1)
    ]


def _bind(parameters: Any, index: int) -> dict[str, Any] | list[dict[str, Any]] | None:
    """Values the driver binds; a mapping or list value goes as its JSON text."""
    if parameters is None:
        return None
    if isinstance(parameters, Mapping):
        return {str(k): _bind_value(v) for k, v in parameters.items()}
    if isinstance(parameters, Sequence) and not isinstance(parameters, str | bytes):
        rows = []
        for row in parameters:
            if not isinstance(row, Mapping):
                raise ExecutorError(
                    f"statement {index}: parameters must be a mapping or a list of mappings, "
                    f"got a list containing {type(row).__name__}",
                    retryable=False,
                )
            rows.append({str(k): _bind_value(v) for k, v in row.items()})
        return rows
    raise ExecutorError(  # pragma: no cover - the orchestrator's schema check refuses it
        f"statement {index}: parameters must be a mapping or a list of mappings", retryable=False
    )


def _bind_value(value: Any) -> Any:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return value


# -- outputs ----------------------------------------------------------------------------


def _json_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(key): json_safe(value) for key, value in row.items()}


def json_safe(value: Any) -> Any:
    """A database value as JSON: Decimal → float when exact else str, dates → ISO 8601,
    bytes → base64, intervals → seconds, UUIDs and anything else unknown → str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if value.is_finite():
            as_float = float(value)
            if Decimal(repr(as_float)) == value:
                return as_float
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)
