"""The registry of pipeline definitions (`flowctl apply`, `history`, `rollback`, `run NAME`).

It lives in the history database (table `workflow_definitions`). A pipeline's versions
are numbered 1, 2, 3… per name and never rewritten; at most one version per name is
active (a partial unique index says so), and `definition_events` records every change
of which one is.

`make_plan` is pure: the folder and the registry's current state in, the steps out.
`apply_plan` writes a plan in one transaction and checks, as it writes, that the
registry is still the one the plan was made from (compare-and-set on the active row,
unique (name, version)); when another apply got there first, `apply` reads the
registry again, plans again and retries, then reports a conflict.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from flowctl.engine.gitinfo import GitSource
from flowctl.engine.state.history import (
    HistoryError,
    driver_message,
    open_history_engine,
    utcnow,
)
from flowctl.engine.state.models import DefinitionEvent, WorkflowDefinition
from flowctl.errors import FlowctlError, NotFoundError

ATTEMPTS = 5

_definitions = cast(Table, WorkflowDefinition.__table__)
_events = cast(Table, DefinitionEvent.__table__)


class Action(StrEnum):
    CREATED = "created"  # a new name: version 1
    UPDATED = "updated"  # a new digest (or a name that had no active version): a new version
    UNCHANGED = "unchanged"
    PRUNED = "pruned"  # active in the registry, not in the folder, --prune: deactivated
    MISSING = "missing"  # active in the registry, not in the folder, kept (no --prune)
    ROLLBACK = "rollback"  # only in events: `flowctl rollback`


CHANGES = frozenset({Action.CREATED, Action.UPDATED, Action.PRUNED})


class ConflictError(FlowctlError):
    """Other writers kept changing the registry while this apply tried to write."""


class StaleRegistry(Exception):
    """The registry changed between reading it and writing the plan (internal: retried)."""


@dataclass(frozen=True, slots=True)
class Current:
    """A name's state in the registry: its newest version and its active one."""

    name: str
    latest_version: int
    active_id: int | None = None
    active_version: int | None = None
    active_digest: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """A compiled pipeline to apply, and where its file came from."""

    ir: dict[str, Any]
    path: str
    git: GitSource | None = None

    @property
    def name(self) -> str:
        name: str = self.ir["name"]
        return name

    @property
    def digest(self) -> str:
        digest: str = self.ir["digest"]
        return digest


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    action: Action
    version: int | None  # active after the step
    previous_version: int | None  # active before it
    digest: str | None  # of the version active after the step (or before, when pruned)
    source: Source | None = None
    previous_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        git = self.source.git if self.source else None
        return {
            "name": self.name,
            "action": str(self.action),
            "version": self.version,
            "previous_version": self.previous_version,
            "digest": self.digest,
            "path": self.source.path if self.source else None,
            "commit": git.commit if git else None,
            "branch": git.branch if git else None,
            "author": git.author if git else None,
            "uncommitted": bool(git and git.dirty),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]

    @property
    def changes(self) -> bool:
        return any(step.action in CHANGES for step in self.steps)

    def count(self, action: Action) -> int:
        return sum(1 for step in self.steps if step.action is action)


@dataclass(frozen=True, slots=True)
class Definition:
    """One stored version of a pipeline."""

    id: int
    name: str
    version: int
    digest: str
    spec: dict[str, Any]
    source_path: str | None
    source_commit: str | None
    source_branch: str | None
    source_author: str | None
    applied_at: datetime
    applied_by: str | None
    active: bool

    def as_dict(self, *, with_spec: bool = False) -> dict[str, Any]:
        entry = {
            "name": self.name,
            "version": self.version,
            "active": self.active,
            "digest": self.digest,
            "source_path": self.source_path,
            "source_commit": self.source_commit,
            "source_branch": self.source_branch,
            "source_author": self.source_author,
            "applied_at": self.applied_at.isoformat(),
            "applied_by": self.applied_by,
        }
        return {**entry, "spec": self.spec} if with_spec else entry


@dataclass(frozen=True, slots=True)
class Event:
    action: Action
    from_version: int | None
    to_version: int | None
    at: datetime
    by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "from_version": self.from_version,
            "to_version": self.to_version,
            "at": self.at.isoformat(),
            "by": self.by,
        }


# -- planning (pure) ----------------------------------------------------------------------


def make_plan(sources: Iterable[Source], registry: Mapping[str, Current], *, prune: bool) -> Plan:
    """The steps that make the registry's active versions equal the folder, by name."""
    steps: list[Step] = []
    seen: set[str] = set()
    for source in sources:
        seen.add(source.name)
        current = registry.get(source.name)
        if current is None:
            steps.append(Step(source.name, Action.CREATED, 1, None, source.digest, source))
        elif current.active_digest == source.digest:
            version = current.active_version
            steps.append(Step(source.name, Action.UNCHANGED, version, version, source.digest))
        else:
            steps.append(
                Step(
                    source.name,
                    Action.UPDATED,
                    current.latest_version + 1,
                    current.active_version,
                    source.digest,
                    source,
                    current.active_id,
                )
            )
    for name, current in registry.items():
        if name in seen or current.active_version is None:
            continue
        action = Action.PRUNED if prune else Action.MISSING
        after = None if prune else current.active_version
        steps.append(
            Step(
                name,
                action,
                after,
                current.active_version,
                current.active_digest,
                previous_id=current.active_id,
            )
        )
    return Plan(tuple(sorted(steps, key=lambda step: step.name)))


# -- reading ------------------------------------------------------------------------------


connect = open_history_engine


def read_registry(connection: Connection) -> dict[str, Current]:
    latest = (
        select(_definitions.c.name, func.max(_definitions.c.version).label("latest"))
        .group_by(_definitions.c.name)
        .subquery()
    )
    active = (
        select(
            _definitions.c.name,
            _definitions.c.id,
            _definitions.c.version,
            _definitions.c.digest,
        )
        .where(_definitions.c.active.is_(True))
        .subquery()
    )
    query = select(
        latest.c.name, latest.c.latest, active.c.id, active.c.version, active.c.digest
    ).select_from(latest.outerjoin(active, latest.c.name == active.c.name))
    return {
        row[0]: Current(row[0], row[1], row[2], row[3], row[4])
        for row in connection.execute(query).all()
    }


def versions(engine: Engine, name: str) -> list[Definition]:
    """Every version of `name`, oldest first."""
    query = select(_definitions).where(_definitions.c.name == name).order_by(_definitions.c.version)
    with engine.connect() as connection:
        return [_definition(row._mapping) for row in connection.execute(query).all()]


def events(engine: Engine, name: str) -> list[Event]:
    """Every change of `name`'s active version, oldest first."""
    query = select(_events).where(_events.c.name == name).order_by(_events.c.id)
    with engine.connect() as connection:
        return [
            Event(Action(row.action), row.from_version, row.to_version, row.at, row.by)
            for row in connection.execute(query).all()
        ]


def active_definitions(engine: Engine, names: Sequence[str] | None = None) -> list[Definition]:
    """The active version of every pipeline (or of `names`), by name."""
    query = select(_definitions).where(_definitions.c.active.is_(True))
    if names is not None:
        query = query.where(_definitions.c.name.in_(list(names)))
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(_definitions.c.name)).all()
    return [_definition(row._mapping) for row in rows]


def active_definition(engine: Engine, name: str) -> Definition | None:
    found = active_definitions(engine, [name])
    return found[0] if found else None


# -- writing ------------------------------------------------------------------------------


def apply(
    engine: Engine,
    sources: Sequence[Source],
    *,
    prune: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
    attempts: int = ATTEMPTS,
) -> Plan:
    """Plans against the current registry and writes the plan in one transaction.

    Returns the plan that was written (or, with `dry_run`, would be).
    """
    for attempt in range(attempts):
        with engine.connect() as connection:
            plan = make_plan(sources, read_registry(connection), prune=prune)
        if dry_run or not plan.changes:
            return plan
        try:
            with engine.begin() as connection:
                apply_plan(connection, plan, actor=actor)
            return plan
        except (IntegrityError, StaleRegistry):
            pass
        except OperationalError as error:
            if not _is_contention(error):
                raise HistoryError(f"cannot write the registry: {driver_message(error)}") from None
        backoff(attempt)
    raise ConflictError(
        f"the registry kept changing under this apply ({attempts} attempts); nothing was "
        "written by this one: run it again"
    )


def backoff(attempt: int) -> None:
    """Waits before retry `attempt` + 1: exponential, with jitter so racers drift apart."""
    time.sleep(random.uniform(0.02, 0.1) * 2**attempt)


def apply_plan(
    connection: Connection, plan: Plan, *, actor: str | None, now: datetime | None = None
) -> None:
    """Writes every change of `plan` on `connection` (the caller owns the transaction).

    Raises StaleRegistry or IntegrityError when the registry is no longer the one the
    plan was made from.
    """
    now = now or utcnow()
    for step in plan.steps:
        if step.action not in CHANGES:
            continue
        if step.previous_id is not None:
            _deactivate(connection, step.previous_id)
        if step.action is not Action.PRUNED:
            assert step.source is not None and step.version is not None
            git = step.source.git
            connection.execute(
                insert(_definitions).values(
                    name=step.name,
                    version=step.version,
                    digest=step.source.digest,
                    spec=step.source.ir,
                    source_path=git.path if git else step.source.path,
                    source_commit=git.commit if git else None,
                    source_branch=git.branch if git else None,
                    source_author=git.author if git else None,
                    applied_at=now,
                    applied_by=actor,
                    active=True,
                )
            )
        _record(connection, step.name, step.action, step.previous_version, step.version, now, actor)


def rollback(
    engine: Engine, name: str, version: int, *, actor: str | None = None
) -> tuple[int | None, bool]:
    """Makes `version` of `name` the active one; returns (the version active before,
    whether anything changed). Recorded as an event; no version is rewritten."""
    with engine.begin() as connection:
        rows = connection.execute(
            select(_definitions.c.id, _definitions.c.version, _definitions.c.active).where(
                _definitions.c.name == name
            )
        ).all()
        if not rows:
            raise NotFoundError(f"no pipeline {name!r} in the registry")
        target = next((row for row in rows if row.version == version), None)
        if target is None:
            known = ", ".join(str(row.version) for row in sorted(rows, key=lambda r: r.version))
            raise NotFoundError(f"pipeline {name!r} has no version {version} (versions: {known})")
        current = next((row for row in rows if row.active), None)
        if current is not None and current.id == target.id:
            return version, False
        try:
            if current is not None:
                _deactivate(connection, current.id)
            connection.execute(
                update(_definitions).where(_definitions.c.id == target.id).values(active=True)
            )
        except (StaleRegistry, IntegrityError):
            raise ConflictError(
                f"pipeline {name!r} changed while rolling back; run the command again"
            ) from None
        previous = current.version if current is not None else None
        _record(connection, name, Action.ROLLBACK, previous, version, utcnow(), actor)
    return previous, True


def _deactivate(connection: Connection, definition_id: int) -> None:
    done = connection.execute(
        update(_definitions)
        .where(_definitions.c.id == definition_id, _definitions.c.active.is_(True))
        .values(active=False)
    )
    if done.rowcount != 1:
        raise StaleRegistry


def _record(
    connection: Connection,
    name: str,
    action: Action,
    from_version: int | None,
    to_version: int | None,
    at: datetime,
    by: str | None,
) -> None:
    connection.execute(
        insert(_events).values(
            name=name,
            action=str(action),
            from_version=from_version,
            to_version=to_version,
            at=at,
            by=by,
        )
    )


def _definition(row: Any) -> Definition:
    return Definition(**{field.name: row[field.name] for field in fields(Definition)})


def _is_contention(error: OperationalError) -> bool:
    """SQLite's busy lock, PostgreSQL's deadlock or serialization failure: worth a retry."""
    text = str(error.orig or error).lower()
    return any(
        marker in text for marker in ("database is locked", "deadlock", "could not serialize")
    )
