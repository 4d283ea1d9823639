"""Live progress of a run on a terminal: a line per finished task, a bar per for_each."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from flowctl.engine.orchestrator import TaskState
from flowctl.engine.states import TaskStatus

_STYLE = {
    TaskStatus.COMPLETED: ("✔", "green"),
    TaskStatus.FAILED: ("✘", "red"),
    TaskStatus.SKIPPED: ("↷", "yellow"),
    TaskStatus.UPSTREAM_FAILED: ("⊘", "red"),
}


class TerminalProgress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.started: dict[str, float] = {}
        self.progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.bars: dict[str, TaskID] = {}

    def __enter__(self) -> TerminalProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def task_started(self, task_id: str, attempt: int) -> None:
        self.started.setdefault(task_id, time.perf_counter())
        if attempt > 1 and task_id not in self.bars:
            self.console.print(f"  [yellow]↻[/] {task_id}  retry (attempt {attempt})")

    def task_finished(self, task_id: str, state: TaskState) -> None:
        if task_id in self.bars:
            self.progress.remove_task(self.bars.pop(task_id))
        mark, colour = _STYLE.get(state.status, ("·", "white"))
        elapsed = time.perf_counter() - self.started.get(task_id, time.perf_counter())
        line = f"  [{colour}]{mark}[/] {task_id}  [{colour}]{state.status}[/]"
        if state.status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            line += f"  {elapsed:.2f}s"
        if state.error and state.status is TaskStatus.FAILED:
            line += f"  [dim]{escape(state.error)}[/]"  # errors may hold [brackets]
        self.console.print(line, highlight=False, markup=True)

    def items_progress(self, task_id: str, done: int, total: int) -> None:
        if task_id not in self.bars:
            self.bars[task_id] = self.progress.add_task(task_id, total=total)
        self.progress.update(self.bars[task_id], completed=done)
