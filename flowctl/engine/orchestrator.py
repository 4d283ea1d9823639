"""Runs one execution of a TaskFlow IR: resolve runnable tasks → render → execute → checkpoint.

The orchestrator does not know where its stores come from (memory, SQLite, Redis,
PostgreSQL) nor who started it (the CLI, a Kafka worker, Airflow). It keeps these
promises:

- a task starts only when all its upstreams are final; at most `max_parallel` run;
- every attempt is checkpointed (history + active state) before any task that depends
  on it starts, so a resume never runs a completed task again;
- retries back off exponentially with jitter; a timeout cancels the attempt; an
  ExecutorError with `retryable=False` (or a rendered `with:` block that does not match
  the executor's schema) fails the task at once, its retries unused;
- `when` false → SKIPPED, and tasks whose upstreams were all skipped are skipped too;
- a failure marks downstream tasks UPSTREAM_FAILED, unless `on_failure: continue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from flowctl.config import Settings
from flowctl.engine.executors.base import (
    Executor,
    TaskContext,
    UnknownExecutorError,
    check_rendered_with,
    executor_class,
)
from flowctl.engine.secrets import Secrets
from flowctl.engine.spec.templating import Renderer, TemplateRenderError, compile_value
from flowctl.engine.state.active import ActiveState
from flowctl.engine.state.history import Checkpoint, History, utcnow
from flowctl.engine.states import TaskStatus, WorkflowStatus
from flowctl.errors import ExecutorError, RenderError

MAX_RETRY_DELAY = 600.0
FINAL = frozenset(status for status in TaskStatus if status.is_final)
CANCELLED_ERROR = "cancelled"


@dataclass(slots=True)
class TaskState:
    status: TaskStatus = TaskStatus.PENDING
    output: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "attempts": self.attempts,
            "output": self.output,
            "error": self.error,
        }


@dataclass(slots=True, repr=False)
class ExecutionResult:
    execution_id: str
    pipeline: str
    status: WorkflowStatus
    result: Any = None
    error: str | None = None
    tasks: dict[str, TaskState] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Short on purpose: asyncio reprs a finished task's result, and the default repr
        # of 10,000 task states took 0.1 s at the end of every large run.
        return f"ExecutionResult({self.execution_id!r}, {self.status}, {len(self.tasks)} tasks)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "pipeline": self.pipeline,
            "status": str(self.status),
            "result": self.result,
            "error": self.error,
            "tasks": {task_id: state.as_dict() for task_id, state in self.tasks.items()},
        }


class Observer(Protocol):
    """Live progress (the CLI draws it); every method must return quickly."""

    def task_started(self, task_id: str, attempt: int) -> None: ...

    def task_finished(self, task_id: str, state: TaskState) -> None: ...

    def items_progress(self, task_id: str, done: int, total: int) -> None: ...


class TaskFailure(Exception):
    """The task failed for good: its retries are used up, or retrying cannot help."""


@dataclass(slots=True)
class _CompiledTask:
    """A task of the IR with its templates compiled once for the whole run."""

    id: str
    executor: str
    needs: list[str]
    dependents: list[str]
    with_: Renderer
    when: Renderer | None
    for_each: Renderer | None
    retries: int
    retry_delay: float
    timeout: float | None
    continue_on_failure: bool


class Orchestrator:
    def __init__(
        self,
        ir: Mapping[str, Any],
        *,
        history: History,
        active: ActiveState,
        secrets: Secrets | None = None,
        observer: Observer | None = None,
        pipeline_dir: Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.ir = ir
        self.settings = settings or Settings()
        self.history = history
        self.active = active
        self.secrets = secrets or Secrets({})
        self._secret_values = self.secrets.redactable()  # given to executors, to redact
        self.observer = observer
        self.pipeline_dir = pipeline_dir
        self.max_parallel = int(ir["max_parallel"])
        self.tasks = _compile_tasks(ir)
        self.output = compile_value(ir.get("output"))
        self.states: dict[str, TaskState] = {}
        self._executors: dict[str, Executor] = {}
        self._failure: str | None = None
        self.execution_id = ""
        self.task_view: dict[str, dict[str, Any]] = {}  # `tasks` in expressions
        self.context: dict[str, Any] = {}
        self.final_status = WorkflowStatus.RUNNING
        self.final_result: Any = None
        self.final_error: str | None = None
        self._slots = asyncio.Semaphore(1)  # replaced per run: bounds executor calls

    # -- the loop -------------------------------------------------------------------

    async def run(
        self,
        execution_id: str,
        params: Mapping[str, Any],
        previous: Sequence[Checkpoint] = (),
    ) -> ExecutionResult:
        """Runs (or resumes, given the previous checkpoints) the execution to its end.

        If the calling task is cancelled (Ctrl-C, SIGTERM), running attempts are
        cancelled and checkpointed, the execution is recorded CANCELLED, and
        CancelledError propagates; `result()` then describes the execution.
        """
        self.execution_id = execution_id
        self._slots = asyncio.Semaphore(self.max_parallel)
        self.states = {task_id: TaskState() for task_id in self.tasks}
        self._restore(previous)
        self.task_view = {
            task_id: _view(state) for task_id, state in self.states.items() if state.status.is_final
        }
        self.context = {
            "params": dict(params),
            "tasks": self.task_view,
            "secrets": self.secrets,
            "execution": {"id": execution_id, "pipeline": self.ir["name"]},
        }
        self.history.update_execution(  # a resume starts over from a clean slate
            execution_id,
            status=WorkflowStatus.RUNNING,
            started_at=utcnow(),
            finished_at=None,
            result=None,
            error=None,
        )
        await self.active.set_execution(execution_id, WorkflowStatus.RUNNING)
        try:
            await self._loop()
        except asyncio.CancelledError:
            await self._finish(WorkflowStatus.CANCELLED, None, "execution was cancelled")
            raise
        finally:
            await self._close_executors()
        if self._failure is not None:
            await self._finish(WorkflowStatus.FAILED, None, self._failure)
        else:
            try:
                result = self.output(self.context)
            except TemplateRenderError as error:
                message = str(RenderError("(output)", "output", error.expression, error.reason))
                await self._finish(WorkflowStatus.FAILED, None, message)
            else:
                await self._finish(WorkflowStatus.COMPLETED, result, None)
        return self.result()

    async def _loop(self) -> None:
        waiting = {
            task_id: sum(1 for need in task.needs if not self.states[need].status.is_final)
            for task_id, task in self.tasks.items()
        }
        ready = deque(
            task_id
            for task_id in self.ir["order"]
            if waiting[task_id] == 0 and not self.states[task_id].status.is_final
        )
        running: dict[asyncio.Task[None], str] = {}
        # Finished attempts are queued by a done-callback: asyncio.wait() would re-register
        # a callback on every running task at each step (O(running) per completion).
        finished: deque[asyncio.Task[None]] = deque()
        wakeup = asyncio.Event()

        def on_done(task: asyncio.Task[None]) -> None:
            finished.append(task)
            wakeup.set()

        def release(task_id: str) -> None:
            for dependent in self.tasks[task_id].dependents:
                waiting[dependent] -= 1
                if waiting[dependent] == 0 and self.states[dependent].status not in FINAL:
                    ready.append(dependent)

        try:
            while ready or running:
                while ready and len(running) < self.max_parallel:
                    task_id = ready.popleft()
                    if await self._settle_without_running(task_id):
                        release(task_id)
                        continue
                    if not ready and not running:
                        # The only runnable task: nothing else can start before it ends, so
                        # awaiting it here is equivalent and spares a Task (chains, mostly).
                        await self._run_task(task_id)
                        release(task_id)
                        continue
                    attempt = asyncio.create_task(self._run_task(task_id))
                    attempt.add_done_callback(on_done)
                    running[attempt] = task_id
                if not running:
                    continue
                await wakeup.wait()
                wakeup.clear()
                while finished:
                    done = finished.popleft()
                    task_id = running.pop(done)
                    done.result()  # _run_task records failures itself; bugs surface here
                    release(task_id)
        except asyncio.CancelledError:
            for pending in running:
                pending.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise

    async def _settle_without_running(self, task_id: str) -> bool:
        """Decides UPSTREAM_FAILED / SKIPPED before running; True if the task is settled."""
        task = self.tasks[task_id]
        all_skipped = bool(task.needs)
        for need in task.needs:
            status = self.states[need].status
            if status is TaskStatus.UPSTREAM_FAILED or (
                status is TaskStatus.FAILED and not self.tasks[need].continue_on_failure
            ):
                await self._settle(
                    task_id, TaskStatus.UPSTREAM_FAILED, error=f"upstream {need!r} failed"
                )
                return True
            all_skipped = all_skipped and status is TaskStatus.SKIPPED
        if all_skipped:
            await self._settle(task_id, TaskStatus.SKIPPED)
            return True
        if task.when is not None:
            try:
                run_it = task.when(self.context)
            except TemplateRenderError as error:
                message = str(RenderError(task_id, "when", error.expression, error.reason))
                await self._settle(task_id, TaskStatus.FAILED, error=message)
                return True
            if not _truthy(run_it):
                await self._settle(task_id, TaskStatus.SKIPPED)
                return True
        return False

    # -- one task ---------------------------------------------------------------------

    async def _run_task(self, task_id: str) -> None:
        task = self.tasks[task_id]
        state = self.states[task_id]
        state.status = TaskStatus.RUNNING
        state.started_at = utcnow()
        await self.active.set_task(self.execution_id, task_id, {"status": "RUNNING"})
        try:
            base_attempt = state.attempts  # attempts made before a resume keep their numbers
            if task.for_each is None:
                output = await self._attempts(task, self.context, "", base_attempt)
            else:
                output = await self._run_items(task, base_attempt)
        except TaskFailure as failure:
            await self._settle(task_id, TaskStatus.FAILED, error=str(failure))
        except asyncio.CancelledError:
            await self._settle(task_id, TaskStatus.FAILED, error=CANCELLED_ERROR)
            raise
        else:
            await self._settle(task_id, TaskStatus.COMPLETED, output=output)

    async def _run_items(self, task: _CompiledTask, base_attempt: int) -> list[Any]:
        assert task.for_each is not None
        try:
            items = task.for_each(self.context)
        except TemplateRenderError as error:
            raise TaskFailure(
                str(RenderError(task.id, "for_each", error.expression, error.reason))
            ) from None
        if isinstance(items, Mapping):
            items = [{"key": k, "value": v} for k, v in items.items()]
        if not isinstance(items, list | tuple):
            raise TaskFailure(
                f"task {task.id!r}: for_each must give a list, got {type(items).__name__}"
            )
        outputs: list[Any] = [None] * len(items)
        done = 0

        async def one(index: int, item: Any) -> None:
            nonlocal done
            context = {**self.context, "item": item}
            label = f"item {index}: "
            outputs[index] = await self._attempts(task, context, label, base_attempt)
            done += 1
            if self.observer:
                self._notify(self.observer.items_progress, task.id, done, len(items))

        runs = [asyncio.create_task(one(i, item)) for i, item in enumerate(items)]
        try:
            await asyncio.gather(*runs)
        except BaseException:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            raise
        return outputs

    async def _attempts(
        self, task: _CompiledTask, context: Mapping[str, Any], label: str, base_attempt: int
    ) -> Any:
        state = self.states[task.id]
        executor = self._executor(task)
        for retry in range(task.retries + 1):
            attempt = base_attempt + retry + 1
            state.attempts = max(state.attempts, attempt)  # for_each: the most any item took
            if self.observer:
                self._notify(self.observer.task_started, task.id, attempt)
            try:
                params = task.with_(context)
            except TemplateRenderError as render_error:
                raise TaskFailure(
                    label
                    + str(
                        RenderError(task.id, "with", render_error.expression, render_error.reason)
                    )
                ) from None
            problem = check_rendered_with(task.executor, params)
            if problem is not None:
                raise TaskFailure(f"{label}task {task.id!r}: {problem}")
            started = utcnow()
            try:
                ctx = TaskContext(
                    self.execution_id,
                    task.id,
                    attempt,
                    self.pipeline_dir,
                    context.get("item"),
                    self._secret_values,
                )
                async with self._slots:  # max_parallel bounds executor calls, items included
                    if task.timeout is None:
                        return await executor.run(ctx, params)
                    async with asyncio.timeout(task.timeout):
                        return await executor.run(ctx, params)
            except TimeoutError:
                message = f"{label}timed out after {task.timeout:g}s (attempt {attempt})"
            except TaskFailure:
                raise
            except ExecutorError as exc:
                message = label + str(exc)
                if not exc.retryable:
                    raise TaskFailure(self.secrets.redact(message)) from None
            except Exception as exc:  # an executor's failure is the task's, not ours
                message = label + (str(exc) or type(exc).__name__)
            message = self.secrets.redact(message)
            if retry == task.retries:
                raise TaskFailure(message)
            self.history.checkpoint(
                Checkpoint(
                    self.execution_id,
                    task.id,
                    attempt,
                    TaskStatus.FAILED,
                    input=self.secrets.redact(params),
                    error=message,
                    started_at=started,
                    finished_at=utcnow(),
                )
            )
            delay = min(task.retry_delay * 2**retry, MAX_RETRY_DELAY)
            await asyncio.sleep(random.uniform(delay / 2, delay))
        raise AssertionError("unreachable")  # pragma: no cover

    def _executor(self, task: _CompiledTask) -> Executor:
        executor = self._executors.get(task.executor)
        if executor is None:
            try:
                executor = executor_class(task.executor)(self.settings)
            except UnknownExecutorError as error:
                raise TaskFailure(f"task {task.id!r}: {error}") from None
            except Exception as error:  # a plugin that cannot start fails its task, not the run
                raise TaskFailure(
                    f"task {task.id!r}: executor {task.executor!r} cannot start: "
                    + (str(error) or type(error).__name__)
                ) from None
            self._executors[task.executor] = executor
        return executor

    async def _close_executors(self) -> None:
        for executor in self._executors.values():
            close = getattr(executor, "aclose", None)  # plugins may predate aclose()
            if close is not None:
                await close()

    # -- checkpoints --------------------------------------------------------------------

    async def _settle(
        self, task_id: str, status: TaskStatus, *, output: Any = None, error: str | None = None
    ) -> None:
        """A task's final state for this run: checkpointed before anything depends on it."""
        error = self.secrets.redact(error)  # a render error can quote a secret's value
        state = self.states[task_id]
        state.status, state.output, state.error = status, output, error
        state.finished_at = utcnow()
        if (
            status is TaskStatus.FAILED
            and not self.tasks[task_id].continue_on_failure
            and self._failure is None
            and error != CANCELLED_ERROR
        ):
            self._failure = f"task {task_id!r} failed: {error}"
        self.task_view[task_id] = _view(state)
        self.history.checkpoint(
            Checkpoint(
                self.execution_id,
                task_id,
                state.attempts,
                status,
                output=self.secrets.redact(output),
                error=error,
                started_at=state.started_at,
                finished_at=state.finished_at,
            )
        )
        await self.active.set_task(self.execution_id, task_id, {"status": str(status)})
        if self.observer:
            self._notify(self.observer.task_finished, task_id, state)

    @staticmethod
    def _notify(method: Callable[..., None], *args: Any) -> None:
        """Progress display is best effort: its failure must not stop or corrupt a run."""
        with contextlib.suppress(Exception):  # whatever a display raises, the run goes on
            method(*args)

    async def _finish(self, status: WorkflowStatus, result: Any, error: str | None) -> None:
        error = self.secrets.redact(error)
        self.final_status, self.final_result, self.final_error = status, result, error
        self.history.update_execution(
            self.execution_id,
            status=status,
            result=self.secrets.redact(result),
            error=error,
            finished_at=utcnow(),
        )
        await self.active.set_execution(self.execution_id, status)

    def _restore(self, previous: Sequence[Checkpoint]) -> None:
        """Completed and skipped tasks keep their outcome; everything else runs again."""
        for checkpoint in previous:
            state = self.states.get(checkpoint.task_id)
            if state is None:
                continue
            state.attempts = max(state.attempts, checkpoint.attempt)
            if checkpoint.status in (TaskStatus.COMPLETED, TaskStatus.SKIPPED):
                state.status = checkpoint.status
                state.output = checkpoint.output
                state.started_at = checkpoint.started_at
                state.finished_at = checkpoint.finished_at
            else:
                state.status = TaskStatus.PENDING

    def result(self) -> ExecutionResult:
        """The execution as callers may show it: secret values redacted, like the history."""
        redact = self.secrets.redact
        if self.secrets.redactable():
            states = {
                task_id: replace(state, output=redact(state.output))
                for task_id, state in self.states.items()
            }
        else:
            states = dict(self.states)
        return ExecutionResult(
            self.execution_id,
            self.ir["name"],
            self.final_status,
            redact(self.final_result),
            self.final_error,
            states,
        )


def _truthy(value: Any) -> bool:
    """`when` values: a rendered string such as "false" or "0" is false, as a user means it."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)


def _view(state: TaskState) -> dict[str, Any]:
    """What `tasks.<id>` shows to expressions."""
    return {"output": state.output, "status": str(state.status), "error": state.error}


def _compile_tasks(ir: Mapping[str, Any]) -> dict[str, _CompiledTask]:
    dependents: dict[str, list[str]] = {task["id"]: [] for task in ir["tasks"]}
    for source, target in ir["edges"]:
        dependents[source].append(target)
    compiled = {}
    for task in ir["tasks"]:
        when = task.get("when")
        for_each = task.get("for_each")
        compiled[task["id"]] = _CompiledTask(
            id=task["id"],
            executor=task["executor"],
            needs=list(task["needs"]),
            dependents=dependents[task["id"]],
            with_=compile_value(task["with"]),
            when=None if when is None else compile_value(when),
            for_each=None if for_each is None else compile_value(for_each),
            retries=int(task["retries"]),
            retry_delay=float(task["retry_delay"]),
            timeout=task["timeout"],
            continue_on_failure=task["on_failure"] == "continue",
        )
    return compiled
