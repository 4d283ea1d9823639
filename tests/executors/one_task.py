"""Runs a pipeline of one task through the local Runner, as `flowctl run` would.

The executors' tests use it for what only the orchestrator does: the check of the
rendered `with:` block, and retries (or none, for an error another attempt cannot fix).

    from executors.one_task import TASK, run_task
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowctl.config import Settings
from flowctl.engine.local import Runner, new_execution
from flowctl.engine.orchestrator import ExecutionResult
from flowctl.engine.params import resolve_params
from flowctl.engine.secrets import Secrets
from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.load import load_text
from flowctl.engine.spec.validate import validate_document
from flowctl.engine.state.history import Checkpoint, MemoryHistory
from flowctl.engine.states import TaskStatus

TASK = "task"
_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))


@dataclass(frozen=True)
class Ran:
    result: ExecutionResult
    checkpoints: list[Checkpoint]  # as the history stores them, in order

    @property
    def error(self) -> str | None:
        return self.result.tasks[TASK].error

    @property
    def attempts(self) -> list[tuple[int, TaskStatus]]:
        return [(c.attempt, c.status) for c in self.checkpoints]


def run_task(
    executor: str,
    with_: Mapping[str, Any],
    *,
    retries: int = 3,
    params: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    pipeline_dir: Path | None = None,
) -> Ran:
    """Runs task `task` (`executor`, `with_`, `retries`, 10 ms between attempts).

    `params` are declared (with the type of their value) and given: a value written as
    `"{{ params.x }}"` in `with_` is only known, and checked, at run time.
    """
    declared = {name: {"type": _type(value)} for name, value in (params or {}).items()}
    document_text = json.dumps(  # JSON is YAML
        {
            "apiVersion": "flowctl/v1",
            "kind": "Pipeline",
            "metadata": {"name": "one-task"},
            "spec": {
                "params": declared,
                "tasks": [
                    {
                        "id": TASK,
                        "executor": executor,
                        "retries": retries,
                        "retry_delay": "10ms",
                        "with": dict(with_),
                    }
                ],
            },
        }
    )
    document = load_text(document_text)
    assert [d.format() for d in validate_document(document)] == []
    ir = compile_document(document)
    history = MemoryHistory()
    record = new_execution(history, ir, resolve_params(ir["params"], params or {}, {}))
    runner = Runner(
        history,
        secrets=Secrets(secrets or {}),
        settings=settings or Settings(),
        pipeline_dir=pipeline_dir,
    )
    result = asyncio.run(runner.run(record))
    return Ran(result, history.checkpoints(record.id))


def _type(value: Any) -> str:
    for python, name in _TYPES:
        if isinstance(value, python):
            return name
    return "array" if isinstance(value, list) else "object"
