"""The history's tables (the seed's schema), as SQLAlchemy 2 models.

Migrations live in flowctl/engine/state/migrations; change both together
(`tests/engine/test_history.py` checks that the migrated schema matches these models).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class WorkflowDefinition(Base):
    """One version of a pipeline in the registry (`flowctl apply`)."""

    __tablename__ = "workflow_definitions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        # At most one active version per name, whatever two concurrent applies do.
        Index(
            "uq_workflow_definitions_active_name",
            "name",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the TaskFlow IR
    source_path: Mapped[str | None] = mapped_column(Text)
    source_commit: Mapped[str | None] = mapped_column(String(64))
    source_branch: Mapped[str | None] = mapped_column(Text)
    source_author: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied_by: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=False)


class DefinitionEvent(Base):
    """A change of which version of a pipeline is active: applied, pruned, rolled back.

    Versions are never rewritten; this table is the timeline of activations.
    """

    __tablename__ = "definition_events"
    __table_args__ = (Index("ix_definition_events_name_id", "name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(16))  # created | updated | pruned | rollback
    from_version: Mapped[int | None] = mapped_column(Integer)  # active before; None: none
    to_version: Mapped[int | None] = mapped_column(Integer)  # active after; None: none
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    by: Mapped[str | None] = mapped_column(Text)


class WorkflowExecution(Base):
    """One run of a pipeline; keeps the IR it ran so a resume needs nothing else."""

    __tablename__ = "workflow_executions"
    __table_args__ = (Index("ix_workflow_executions_pipeline_created", "pipeline", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    definition_id: Mapped[int | None] = mapped_column(ForeignKey("workflow_definitions.id"))
    pipeline: Mapped[str] = mapped_column(String(63))
    digest: Mapped[str] = mapped_column(String(80))
    ir: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pipeline_dir: Mapped[str | None] = mapped_column(Text)  # relative paths resolve here
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskExecution(Base):
    """One checkpoint: a task attempt's outcome (or a skip), written before the next step."""

    __tablename__ = "task_executions"
    __table_args__ = (Index("ix_task_executions_execution", "execution_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("workflow_executions.id"))
    task_id: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[Any] = mapped_column(JSON, nullable=True)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AgentDefinition(Base):
    """A `kind: Agent` document: an LLM with tools (used by later releases)."""

    __tablename__ = "agent_definitions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
