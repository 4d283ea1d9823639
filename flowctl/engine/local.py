"""Starting and resuming executions in this process: the glue the CLI and tests share."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowctl.config import Settings
from flowctl.engine.orchestrator import ExecutionResult, Observer, Orchestrator
from flowctl.engine.secrets import Secrets
from flowctl.engine.state.active import ActiveState, MemoryActiveState
from flowctl.engine.state.history import ExecutionRecord, History, utcnow
from flowctl.engine.states import WorkflowStatus, can_resume
from flowctl.errors import FlowctlError, NotFoundError


def new_execution(
    history: History,
    ir: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    definition_id: int | None = None,
    pipeline_dir: Path | None = None,
) -> ExecutionRecord:
    """Records a QUEUED execution; it exists in the history before anything runs.

    `definition_id` is the registry version it runs (`flowctl run NAME`), if any;
    `pipeline_dir` the folder relative paths in its tasks resolve against, resume included.
    """
    record = ExecutionRecord(
        id=str(uuid.uuid4()),
        pipeline=ir["name"],
        digest=ir["digest"],
        ir=dict(ir),
        params=dict(params),
        status=WorkflowStatus.QUEUED,
        created_at=utcnow(),
        definition_id=definition_id,
        pipeline_dir=str(pipeline_dir) if pipeline_dir is not None else None,
    )
    history.create_execution(record)
    return record


class Runner:
    """Runs executions against one history and active state."""

    def __init__(
        self,
        history: History,
        *,
        active: ActiveState | None = None,
        secrets: Secrets | None = None,
        observer: Observer | None = None,
        pipeline_dir: Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.history = history
        self.settings = settings
        self.active = active or MemoryActiveState()
        self.secrets = secrets
        self.observer = observer
        self.pipeline_dir = pipeline_dir
        self.orchestrator: Orchestrator | None = None

    def _orchestrator(self, record: ExecutionRecord) -> Orchestrator:
        recorded = Path(record.pipeline_dir) if record.pipeline_dir else None
        self.orchestrator = Orchestrator(
            record.ir,
            history=self.history,
            active=self.active,
            secrets=self.secrets,
            observer=self.observer,
            pipeline_dir=recorded or self.pipeline_dir,
            settings=self.settings,
        )
        return self.orchestrator

    async def run(self, record: ExecutionRecord) -> ExecutionResult:
        self.history.update_execution(record.id, lease_owner=process_owner())
        return await self._orchestrator(record).run(record.id, record.params)

    async def resume(self, execution_id: str) -> ExecutionResult:
        record = self.history.get_execution(execution_id)
        if record is None:
            raise NotFoundError(f"no execution {execution_id!r} in the history")
        if not can_resume(record.status):
            raise FlowctlError(
                f"execution {execution_id} is {record.status}; only failed, cancelled or "
                "interrupted executions can be resumed"
            )
        running_in = live_local_process(record.lease_owner)
        if record.status is WorkflowStatus.RUNNING and running_in is not None:
            raise FlowctlError(
                f"execution {execution_id} is still running (process {running_in} on this "
                "machine); stop it first, or wait for it to end"
            )
        if not self.history.claim(record.id, record.lease_owner, process_owner()):
            raise FlowctlError(
                f"execution {execution_id} was just taken over by another process; "
                "see `flowctl status`"
            )
        previous = self.history.checkpoints(execution_id)
        return await self._orchestrator(record).run(record.id, record.params, previous)


def process_owner() -> str:
    """Who runs an execution: "host:pid", recorded so a resume can tell a crash from a run."""
    return f"{socket.gethostname()}:{os.getpid()}"


def live_local_process(owner: str | None) -> int | None:
    """The pid in `owner` if it is a live process on this machine, else None.

    A RUNNING execution whose process is gone was interrupted (killed, crashed) and may be
    resumed. Executions on other machines are the workers' business (leases).
    """
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, under another user
        return int(pid)
    return int(pid)
