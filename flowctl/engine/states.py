"""The statuses of a workflow execution and of a task, and an execution's transitions.

A task goes PENDING → RUNNING → COMPLETED | FAILED, or from PENDING straight to SKIPPED,
UPSTREAM_FAILED or FAILED (an expression in `when` that cannot render); on resume, tasks
that did not complete start again from PENDING. Every task's final state is checkpointed
before anything that depends on it starts (see orchestrator.py).
"""

from __future__ import annotations

from enum import StrEnum


class WorkflowStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"

    @property
    def is_final(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


WORKFLOW_TRANSITIONS: dict[WorkflowStatus, frozenset[WorkflowStatus]] = {
    WorkflowStatus.QUEUED: frozenset({WorkflowStatus.RUNNING, WorkflowStatus.CANCELLED}),
    WorkflowStatus.RUNNING: frozenset(
        # RUNNING → RUNNING: a resume takes over an interrupted (killed) execution.
        {
            WorkflowStatus.RUNNING,
            WorkflowStatus.COMPLETED,
            WorkflowStatus.FAILED,
            WorkflowStatus.CANCELLED,
        }
    ),
    # A failed or cancelled execution can be resumed; a completed one is final.
    WorkflowStatus.FAILED: frozenset({WorkflowStatus.RUNNING}),
    WorkflowStatus.CANCELLED: frozenset({WorkflowStatus.RUNNING}),
    WorkflowStatus.COMPLETED: frozenset(),
}


def can_resume(status: WorkflowStatus) -> bool:
    return WorkflowStatus.RUNNING in WORKFLOW_TRANSITIONS[status]
