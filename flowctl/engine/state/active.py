"""The active state: where a running execution's live status lives (memory now, Redis later).

The orchestrator writes every task transition here and to the history; the active
state answers "what is running right now" cheaply, the history is the source of truth.
"""

from __future__ import annotations

from typing import Any, Protocol


class ActiveState(Protocol):
    async def set_execution(self, execution_id: str, status: str) -> None: ...

    async def set_task(self, execution_id: str, task_id: str, state: dict[str, Any]) -> None: ...

    async def get(self, execution_id: str) -> dict[str, Any] | None: ...

    async def forget(self, execution_id: str) -> None: ...


class MemoryActiveState:
    def __init__(self) -> None:
        self._executions: dict[str, dict[str, Any]] = {}

    async def set_execution(self, execution_id: str, status: str) -> None:
        self._executions.setdefault(execution_id, {"tasks": {}})["status"] = status

    async def set_task(self, execution_id: str, task_id: str, state: dict[str, Any]) -> None:
        self._executions.setdefault(execution_id, {"tasks": {}})["tasks"][task_id] = state

    async def get(self, execution_id: str) -> dict[str, Any] | None:
        return self._executions.get(execution_id)

    async def forget(self, execution_id: str) -> None:
        self._executions.pop(execution_id, None)
