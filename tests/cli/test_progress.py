"""The live progress of `flowctl run` on a terminal: drawn from task events, never fatal."""

from __future__ import annotations

import asyncio
import io
import textwrap
from typing import Any

from rich.console import Console

from flowctl.cli.progress import TerminalProgress
from flowctl.engine.local import Runner, new_execution
from flowctl.engine.orchestrator import TaskState
from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.load import load_text
from flowctl.engine.state.history import MemoryHistory
from flowctl.engine.states import TaskStatus, WorkflowStatus


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120, color_system=None), out


def test_a_failed_task_is_shown_with_its_error_even_when_it_holds_markup() -> None:
    console, out = terminal()
    with TerminalProgress(console) as progress:
        progress.task_started("load", 1)
        progress.task_finished(
            "load", TaskState(TaskStatus.FAILED, error="bad [/bold] [red]input", attempts=1)
        )
        progress.task_finished("next", TaskState(TaskStatus.UPSTREAM_FAILED))
    text = out.getvalue()
    assert "load  FAILED" in text and "bad [/bold] [red]input" in text
    assert "next  UPSTREAM_FAILED" in text


def test_a_progress_display_that_raises_does_not_stop_the_run() -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any) -> None:
                raise RuntimeError("display is gone")

            return fail

    ir = compile_document(
        load_text(
            textwrap.dedent(
                """\
                apiVersion: flowctl/v1
                kind: Pipeline
                metadata: {name: shown}
                spec:
                  tasks:
                    - {id: a, executor: transform, with: {value: 1}}
                    - {id: b, executor: transform, for_each: [1, 2], with: {value: "{{ item }}"}}
                  output: "{{ tasks.b.output }}"
                """
            )
        )
    )
    history = MemoryHistory()
    runner = Runner(history, observer=Broken())
    result = asyncio.run(runner.run(new_execution(history, ir, {})))
    assert (result.status, result.result) == (WorkflowStatus.COMPLETED, [1, 2])
