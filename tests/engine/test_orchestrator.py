"""The orchestrator, through local runs on a real history: scheduling, retries, timeouts,
`when`, `for_each`, failures, rendering, the output expression, secrets, cancel and resume.

The executors below are registered in this process only; they record what they saw, so
the tests assert on what ran, when and with which inputs.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from flowctl.engine.executors import base
from flowctl.engine.executors.base import BaseExecutor, TaskContext, register
from flowctl.engine.local import Runner, new_execution
from flowctl.engine.orchestrator import ExecutionResult
from flowctl.engine.params import resolve_params
from flowctl.engine.secrets import Secrets
from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.load import load_text
from flowctl.engine.spec.validate import validate_document
from flowctl.engine.state.history import History, SqlHistory
from flowctl.engine.states import TaskStatus, WorkflowStatus

# --- test executors ------------------------------------------------------------------


@dataclass
class Call:
    task_id: str
    attempt: int
    item: Any
    params: dict[str, Any]
    started: float
    finished: float | None = None
    upstream_checkpoints: list[tuple[str, str]] = field(default_factory=list)
    secrets: frozenset[str] = frozenset()  # ctx.secrets: the values to redact


@dataclass
class Probe:
    """What the test executors saw, reset before every test."""

    calls: list[Call] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    cancelled: list[str] = field(default_factory=list)
    # A second connection to the history: a task sees what its upstreams committed.
    history: History | None = None

    def enter(self, ctx: TaskContext, params: dict[str, Any]) -> Call:
        seen = []
        if self.history is not None:
            seen = [(c.task_id, str(c.status)) for c in self.history.checkpoints(ctx.execution_id)]
        call = Call(
            ctx.task_id, ctx.attempt, ctx.item, params, time.monotonic(), None, seen, ctx.secrets
        )
        self.calls.append(call)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        return call

    def leave(self, call: Call) -> None:
        self.running -= 1
        call.finished = time.monotonic()

    def reset(self) -> None:
        self.__dict__.update(Probe().__dict__)

    def of(self, task_id: str) -> list[Call]:
        return [call for call in self.calls if call.task_id == task_id]


PROBE = Probe()
ANY_WITH: dict[str, Any] = {"type": "object"}


class CounterExecutor(BaseExecutor):
    """Outputs `value` after `sleep` seconds; counts how many attempts run at once."""

    name: ClassVar[str] = "counter"
    with_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["value"],
        "properties": {"value": {}, "sleep": {}},
    }

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any:
        call = PROBE.enter(ctx, params)
        try:
            await asyncio.sleep(float(params.get("sleep", 0)))
        finally:
            PROBE.leave(call)
        return params["value"]


class FlakyExecutor(BaseExecutor):
    """Fails the first `fails` attempts for each `key` (with `message`), then outputs `value`."""

    name: ClassVar[str] = "flaky"
    with_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["key", "fails"],
        "properties": {"key": {}, "fails": {}, "value": {}, "message": {}},
    }

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any:
        call = PROBE.enter(ctx, params)
        PROBE.leave(call)
        PROBE.failures[params["key"]] += 1
        count = PROBE.failures[params["key"]]
        if count <= int(params["fails"]):
            raise RuntimeError(f"{params.get('message', 'flaky failure')} #{count}")
        return params.get("value")


class SleepExecutor(BaseExecutor):
    """Sleeps `seconds`, then outputs `value`; records being cancelled."""

    name: ClassVar[str] = "sleep"
    with_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["seconds"],
        "properties": {"seconds": {}, "value": {}},
    }

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any:
        call = PROBE.enter(ctx, params)
        try:
            await asyncio.sleep(float(params["seconds"]))
        except asyncio.CancelledError:
            PROBE.cancelled.append(ctx.task_id)
            raise
        finally:
            PROBE.leave(call)
        return params.get("value")


class BrokenExecutor(BaseExecutor):
    """An executor that cannot start (say, a plugin missing its configuration)."""

    name: ClassVar[str] = "broken"
    with_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, settings: Any) -> None:
        raise RuntimeError("missing configuration")

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any:
        raise AssertionError("never constructed")


TEST_EXECUTORS: list[type[Any]] = [CounterExecutor, FlakyExecutor, SleepExecutor, BrokenExecutor]


@pytest.fixture(scope="module", autouse=True)
def _test_executors() -> Iterator[None]:
    for cls in TEST_EXECUTORS:
        register(cls)
    yield
    for cls in TEST_EXECUTORS:  # other modules' tests list the known executors
        base._REGISTERED.pop(cls.name, None)
    base.executor_class.cache_clear()
    base.with_schema.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_probe() -> None:
    PROBE.reset()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'history.db'}"


@pytest.fixture
def history(sqlite_url: str) -> Iterator[SqlHistory]:
    opened = SqlHistory(sqlite_url)
    yield opened
    opened.close()


# --- helpers -------------------------------------------------------------------------


def pipeline(spec: str, name: str = "test") -> str:
    return (
        f"apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec), "  ")
    )


def compile_text(text: str) -> dict[str, Any]:
    document = load_text(text)
    assert [d.format() for d in validate_document(document)] == []
    return compile_document(document)


def run(
    spec: str,
    history: History,
    params: dict[str, str] | None = None,
    secrets: Secrets | None = None,
) -> ExecutionResult:
    ir = compile_text(pipeline(spec))
    record = new_execution(history, ir, resolve_params(ir["params"], None, params or {}))
    return asyncio.run(Runner(history, secrets=secrets).run(record))


def rows(history: History, execution_id: str, task_id: str) -> list[tuple[int, str]]:
    return [
        (c.attempt, str(c.status))
        for c in history.checkpoints(execution_id)
        if c.task_id == task_id
    ]


def statuses(result: ExecutionResult) -> dict[str, str]:
    return {task_id: str(state.status) for task_id, state in result.tasks.items()}


# --- scheduling ----------------------------------------------------------------------


def test_diamond_runs_each_task_once_after_its_upstreams_are_checkpointed(
    history: SqlHistory, sqlite_url: str
) -> None:
    PROBE.history = SqlHistory(sqlite_url)
    try:
        result = run(
            """\
            tasks:
              - {id: a, executor: counter, with: {value: 1, sleep: 0.02}}
              - {id: b, executor: counter, with: {value: "{{ tasks.a.output + 1 }}", sleep: 0.1}}
              - {id: c, executor: counter, with: {value: "{{ tasks.a.output + 10 }}", sleep: 0.1}}
              - id: d
                executor: counter
                with: {value: "{{ tasks.b.output + tasks.c.output }}"}
            output: "{{ tasks.d.output }}"
            """,
            history,
        )
    finally:
        PROBE.history.close()
    assert result.status is WorkflowStatus.COMPLETED
    assert result.result == 2 + 11
    assert [call.task_id for call in PROBE.calls].count("d") == 1
    a, b, c, d = (PROBE.of(task_id)[0] for task_id in "abcd")
    assert a.finished is not None and b.finished is not None and c.finished is not None
    assert b.started >= a.finished and c.started >= a.finished
    assert d.started >= max(b.finished, c.finished)
    assert PROBE.max_running == 2  # b and c ran side by side
    # Seen from another connection when d started: its upstreams' checkpoints, committed.
    assert sorted(d.upstream_checkpoints) == [
        ("a", "COMPLETED"),
        ("b", "COMPLETED"),
        ("c", "COMPLETED"),
    ]
    for task_id in "abcd":
        assert rows(history, result.execution_id, task_id) == [(1, "COMPLETED")]
    stored = history.get_execution(result.execution_id)
    assert stored is not None
    assert (stored.status, stored.result) == (WorkflowStatus.COMPLETED, 13)


def test_fan_out_then_fan_in(history: SqlHistory) -> None:
    branches = "".join(
        f'  - {{id: b{i}, executor: counter, with: {{value: "{{{{ tasks.root.output * {i} }}}}"'
        f", sleep: 0.05}}}}\n"
        for i in range(8)
    )
    refs = ", ".join(f"tasks.b{i}.output" for i in range(8))
    result = run(
        "tasks:\n"
        "  - {id: root, executor: counter, with: {value: 3}}\n"
        + branches
        + f'  - {{id: join, executor: counter, with: {{value: "{{{{ [{refs}] }}}}"}}}}\n'
        + 'output: "{{ tasks.join.output | sum }}"\n',
        history,
    )
    assert result.status is WorkflowStatus.COMPLETED
    assert result.tasks["join"].output == [3 * i for i in range(8)]
    assert result.result == 3 * sum(range(8))
    join = PROBE.of("join")[0]
    branch_calls = [PROBE.of(f"b{i}")[0] for i in range(8)]
    assert all(call.finished is not None and call.finished <= join.started for call in branch_calls)
    assert PROBE.max_running == 8  # the branches ran in parallel


def test_max_parallel_bounds_the_running_tasks(history: SqlHistory) -> None:
    tasks = "".join(
        f"  - {{id: t{i}, executor: counter, with: {{value: {i}, sleep: 0.03}}}}\n"
        for i in range(12)
    )
    started = time.monotonic()
    result = run("max_parallel: 3\ntasks:\n" + tasks, history)
    elapsed = time.monotonic() - started
    assert result.status is WorkflowStatus.COMPLETED
    assert len(PROBE.calls) == 12
    assert PROBE.max_running == 3
    assert elapsed >= 4 * 0.03  # 12 tasks, 3 at a time


# --- retries and timeouts ------------------------------------------------------------


def test_retries_succeed_on_the_third_attempt_and_every_attempt_is_checkpointed(
    history_url: str,
) -> None:
    history = SqlHistory(history_url)
    try:
        result = run(
            """\
            tasks:
              - id: a
                executor: flaky
                retries: 3
                retry_delay: 10ms
                with: {key: a, fails: 2, value: done}
            output: "{{ tasks.a.output }}"
            """,
            history,
        )
        assert result.status is WorkflowStatus.COMPLETED
        assert result.result == "done"
        assert result.tasks["a"].attempts == 3
        assert [call.attempt for call in PROBE.of("a")] == [1, 2, 3]
        checkpoints = history.checkpoints(result.execution_id)
        assert [(c.attempt, c.status) for c in checkpoints] == [
            (1, TaskStatus.FAILED),
            (2, TaskStatus.FAILED),
            (3, TaskStatus.COMPLETED),
        ]
        assert [c.error for c in checkpoints] == ["flaky failure #1", "flaky failure #2", None]
        assert checkpoints[0].input == {"key": "a", "fails": 2, "value": "done"}
        assert checkpoints[2].output == "done"
    finally:
        history.close()


def test_a_task_out_of_retries_fails_with_its_last_error(history: SqlHistory) -> None:
    result = run(
        """\
        tasks:
          - {id: a, executor: flaky, retries: 1, retry_delay: 10ms, with: {key: a, fails: 5}}
        """,
        history,
    )
    assert result.status is WorkflowStatus.FAILED
    assert result.tasks["a"].attempts == 2
    assert result.tasks["a"].error == "flaky failure #2"
    assert rows(history, result.execution_id, "a") == [(1, "FAILED"), (2, "FAILED")]


def test_retries_back_off_exponentially(history: SqlHistory) -> None:
    result = run(
        """\
        tasks:
          - id: a
            executor: flaky
            retries: 2
            retry_delay: 100ms
            with: {key: a, fails: 2, value: ok}
        """,
        history,
    )
    assert result.status is WorkflowStatus.COMPLETED
    first, second, third = (call.started for call in PROBE.of("a"))
    # Jitter draws each delay from [d/2, d], with d = 0.1 s then 0.2 s.
    assert 0.05 <= second - first < 1.0
    assert 0.1 <= third - second < 1.0


def test_timeout_cancels_the_attempt_which_fails_and_is_retried(history: SqlHistory) -> None:
    started = time.monotonic()
    result = run(
        """\
        tasks:
          - id: slow
            executor: sleep
            timeout: 50ms
            retries: 1
            retry_delay: 10ms
            with: {seconds: 5}
          - {id: after, executor: counter, with: {value: "{{ tasks.slow.output }}"}}
        """,
        history,
    )
    assert time.monotonic() - started < 2.0
    assert result.status is WorkflowStatus.FAILED
    assert PROBE.cancelled == ["slow", "slow"]
    state = result.tasks["slow"]
    assert (state.status, state.attempts) == (TaskStatus.FAILED, 2)
    assert state.error is not None and "timed out" in state.error
    assert result.error is not None and "timed out" in result.error
    checkpoints = [c for c in history.checkpoints(result.execution_id) if c.task_id == "slow"]
    assert [(c.attempt, c.status) for c in checkpoints] == [
        (1, TaskStatus.FAILED),
        (2, TaskStatus.FAILED),
    ]
    assert all(c.error is not None and "timed out" in c.error for c in checkpoints)
    assert result.tasks["after"].status is TaskStatus.UPSTREAM_FAILED


# --- when ------------------------------------------------------------------------------


def test_when_false_skips_the_task_and_tasks_that_depend_only_on_skipped_ones(
    history: SqlHistory,
) -> None:
    result = run(
        """\
        params:
          enabled: {type: boolean, default: false}
        tasks:
          - {id: gate, executor: counter, with: {value: 1}}
          - id: branch
            executor: counter
            when: "{{ params.enabled }}"
            with: {value: "{{ tasks.gate.output }}"}
          - {id: below, executor: counter, with: {value: "{{ tasks.branch.output }}"}}
          - {id: deeper, executor: counter, with: {value: "{{ tasks.below.output }}"}}
          - id: mixed
            executor: counter
            with: {value: "{{ tasks.gate.output }}/{{ tasks.branch.status }}"}
          - id: other
            executor: counter
            when: "{{ tasks.gate.output == 1 }}"
            with: {value: yes}
        output: {mixed: "{{ tasks.mixed.output }}", below: "{{ tasks.below.output }}"}
        """,
        history,
    )
    assert result.status is WorkflowStatus.COMPLETED
    assert statuses(result) == {
        "gate": "COMPLETED",
        "branch": "SKIPPED",
        "below": "SKIPPED",
        "deeper": "SKIPPED",
        "mixed": "COMPLETED",
        "other": "COMPLETED",
    }
    assert {call.task_id for call in PROBE.calls} == {"gate", "mixed", "other"}
    assert result.result == {"mixed": "1/SKIPPED", "below": None}
    for task_id in ("branch", "below", "deeper"):
        assert rows(history, result.execution_id, task_id) == [(0, "SKIPPED")]


def test_when_true_as_rendered_text_runs_the_task(history: SqlHistory) -> None:
    result = run(
        """\
        params:
          mode: {type: string, default: full}
        tasks:
          - {id: a, executor: counter, when: "{{ params.mode == 'full' }}", with: {value: 1}}
          - {id: b, executor: counter, when: "{{ 'false' }}", with: {value: 2}}
        """,
        history,
    )
    assert statuses(result) == {"a": "COMPLETED", "b": "SKIPPED"}


# --- for_each --------------------------------------------------------------------------


def test_for_each_over_100_items_keeps_the_order_and_bounds_concurrency(
    history: SqlHistory,
) -> None:
    result = run(
        """\
        max_parallel: 5
        tasks:
          - id: each
            executor: counter
            for_each: "{{ range(100) | list }}"
            with:
              value: {index: "{{ item }}", double: "{{ item * 2 }}"}
              sleep: "{{ (100 - item) / 20000 }}"
        output: "{{ tasks.each.output | map(attribute='double') | list }}"
        """,
        history,
    )
    assert result.status is WorkflowStatus.COMPLETED
    output = result.tasks["each"].output
    assert output == [{"index": i, "double": 2 * i} for i in range(100)]
    assert result.result == [2 * i for i in range(100)]
    assert sorted(call.item for call in PROBE.calls) == list(range(100))  # ctx.item too
    assert PROBE.max_running == 5
    assert rows(history, result.execution_id, "each") == [(1, "COMPLETED")]
    stored = [c for c in history.checkpoints(result.execution_id) if c.task_id == "each"]
    assert stored[0].output == output


def test_for_each_retries_only_the_failing_item(history: SqlHistory) -> None:
    result = run(
        """\
        tasks:
          - id: each
            executor: flaky
            for_each: [a, b, c]
            retries: 2
            retry_delay: 10ms
            with: {key: "{{ item }}", fails: "{{ 1 if item == 'b' else 0 }}", value: "{{ item }}"}
        """,
        history,
    )
    assert result.status is WorkflowStatus.COMPLETED
    assert result.tasks["each"].output == ["a", "b", "c"]
    assert PROBE.failures == Counter({"a": 1, "b": 2, "c": 1})


# --- failures ----------------------------------------------------------------------------


def test_on_failure_continue_runs_downstream_which_sees_the_failure(history: SqlHistory) -> None:
    result = run(
        """\
        tasks:
          - id: a
            executor: flaky
            on_failure: continue
            with: {key: a, fails: 99, message: no luck}
          - id: b
            executor: counter
            with: {value: "{{ tasks.a.status }}: {{ tasks.a.error }}"}
        output: "{{ tasks.b.output }}"
        """,
        history,
    )
    assert statuses(result) == {"a": "FAILED", "b": "COMPLETED"}
    assert result.result == "FAILED: no luck #1"
    assert result.status is WorkflowStatus.COMPLETED


def test_failure_marks_downstream_upstream_failed_and_fails_the_workflow(
    history: SqlHistory,
) -> None:
    result = run(
        """\
        tasks:
          - {id: a, executor: flaky, with: {key: a, fails: 99, message: disk full}}
          - {id: b, executor: counter, with: {value: "{{ tasks.a.output }}"}}
          - {id: c, executor: counter, with: {value: "{{ tasks.b.output }}"}}
          - {id: independent, executor: counter, with: {value: 7, sleep: 0.1}}
          - {id: after_it, executor: counter, with: {value: "{{ tasks.independent.output }}"}}
        """,
        history,
    )
    assert result.status is WorkflowStatus.FAILED
    assert result.error is not None
    assert "'a'" in result.error and "disk full #1" in result.error
    assert statuses(result) == {
        "a": "FAILED",
        "b": "UPSTREAM_FAILED",
        "c": "UPSTREAM_FAILED",
        "independent": "COMPLETED",
        "after_it": "COMPLETED",
    }
    assert result.tasks["after_it"].output == 7
    assert {call.task_id for call in PROBE.calls} == {"a", "independent", "after_it"}
    stored = history.get_execution(result.execution_id)
    assert stored is not None
    assert (stored.status, stored.error) == (WorkflowStatus.FAILED, result.error)
    assert [c.status for c in history.checkpoints(result.execution_id) if c.task_id == "c"] == [
        TaskStatus.UPSTREAM_FAILED
    ]


def test_an_unknown_executor_at_run_time_fails_the_task(history: SqlHistory) -> None:
    ir = compile_text(pipeline("tasks:\n  - {id: a, executor: counter, with: {value: 1}}\n"))
    ir["tasks"][0]["executor"] = "vanished"
    record = new_execution(history, ir, {})
    result = asyncio.run(Runner(history).run(record))
    assert result.status is WorkflowStatus.FAILED
    assert result.tasks["a"].error is not None and "vanished" in result.tasks["a"].error


def test_an_executor_that_cannot_start_fails_its_task_not_the_run(history: SqlHistory) -> None:
    result = run(
        """\
        tasks:
          - {id: a, executor: broken, retries: 2, with: {}}
          - {id: b, executor: counter, with: {value: 1}}
        """,
        history,
    )
    assert result.status is WorkflowStatus.FAILED
    assert statuses(result) == {"a": "FAILED", "b": "COMPLETED"}
    error = result.tasks["a"].error
    assert error is not None and "'broken'" in error and "missing configuration" in error
    stored = history.get_execution(result.execution_id)
    assert stored is not None and stored.status is WorkflowStatus.FAILED


# --- rendering -------------------------------------------------------------------------


def test_a_render_error_fails_the_task_naming_task_field_and_expression(
    history: SqlHistory,
) -> None:
    result = run(
        """\
        tasks:
          - {id: a, executor: counter, with: {value: {present: 1}}}
          - id: b
            executor: counter
            retries: 2
            with: {value: "{{ tasks.a.output.missing }}"}
          - {id: c, executor: counter, when: "{{ tasks.a.output.nope > 1 }}", with: {value: 1}}
        """,
        history,
    )
    assert result.status is WorkflowStatus.FAILED
    b_error = result.tasks["b"].error
    assert b_error is not None
    assert "'b'" in b_error and "with" in b_error
    assert "{{ tasks.a.output.missing }}" in b_error and "missing" in b_error
    c_error = result.tasks["c"].error
    assert c_error is not None
    assert "'c'" in c_error and "when" in c_error and "{{ tasks.a.output.nope > 1 }}" in c_error
    assert {call.task_id for call in PROBE.calls} == {"a"}  # nothing ran with a bad input
    assert statuses(result)["b"] == "FAILED"
    stored = {c.task_id: c.error for c in history.checkpoints(result.execution_id)}
    assert stored["b"] == b_error and stored["c"] == c_error


def test_the_output_expression_shapes_the_result(history: SqlHistory) -> None:
    result = run(
        """\
        params:
          name: {type: string}
        tasks:
          - {id: a, executor: counter, with: {value: [1, 2, 3]}}
        output:
          greeting: "hello {{ params.name }}"
          total: "{{ tasks.a.output | sum }}"
          raw: "{{ tasks.a.output }}"
          execution: "{{ execution.pipeline }}"
        """,
        history,
        params={"name": "ada"},
    )
    assert result.status is WorkflowStatus.COMPLETED
    assert result.result == {
        "greeting": "hello ada",
        "total": 6,
        "raw": [1, 2, 3],
        "execution": "test",
    }
    stored = history.get_execution(result.execution_id)
    assert stored is not None and stored.result == result.result


def test_an_output_render_error_fails_the_workflow(history: SqlHistory) -> None:
    result = run(
        """\
        tasks:
          - {id: a, executor: counter, with: {value: 1}}
        output: "{{ tasks.a.output.nothing }}"
        """,
        history,
    )
    assert result.status is WorkflowStatus.FAILED
    assert result.error is not None
    assert "output" in result.error and "{{ tasks.a.output.nothing }}" in result.error
    assert statuses(result) == {"a": "COMPLETED"}


# --- secrets ---------------------------------------------------------------------------

SECRET = "s3cr3t-t0ken-value"


def test_secrets_reach_the_executor_but_are_never_stored(history_url: str) -> None:
    history = SqlHistory(history_url)
    try:
        result = run(
            """\
            tasks:
              - id: login
                executor: flaky
                retries: 1
                retry_delay: 10ms
                with:
                  key: login
                  fails: 1
                  message: "rejected {{ secrets.API_TOKEN }}"
                  value: "Bearer {{ secrets.API_TOKEN }}"
              - id: lookup
                executor: counter
                on_failure: continue
                with: {value: "{{ {'a': 1}[secrets.API_TOKEN] }}"}
            output: "{{ tasks.login.output }}"
            """,
            history,
            secrets=Secrets({"API_TOKEN": SECRET, "SHORT": "ab"}),
        )
        assert PROBE.of("login")[0].params["message"] == f"rejected {SECRET}"
        # Executors get the values to redact (too short to redact: not among them).
        assert [call.secrets for call in PROBE.of("login")] == [frozenset({SECRET})] * 2
        # The executor got the value; what the run returns to its caller is redacted.
        assert result.tasks["login"].output == "Bearer ***"
        assert result.result == "Bearer ***"
        assert result.tasks["lookup"].status is TaskStatus.FAILED
        checkpoints = history.checkpoints(result.execution_id)
        stored = history.get_execution(result.execution_id)
        assert stored is not None
        everything = repr(
            [(c.input, c.output, c.error) for c in checkpoints] + [stored.result, stored.error]
        )
        assert SECRET not in everything
        assert "***" in everything  # redacted, not dropped
        assert checkpoints[0].input["value"] == "Bearer ***"
        assert stored.result == "Bearer ***"
    finally:
        history.close()


# --- cancel and resume -----------------------------------------------------------------

RESUMABLE = """\
tasks:
  - {id: first, executor: counter, with: {value: 1}}
  - {id: slow, executor: sleep, with: {seconds: "{{ params.seconds }}", value: 2}}
  - {id: last, executor: counter, with: {value: "{{ tasks.first.output + tasks.slow.output }}"}}
params:
  seconds: {type: number, default: 5}
output: "{{ tasks.last.output }}"
"""


def test_a_cancelled_run_is_recorded_cancelled_and_resumes_without_rerunning(
    history_url: str,
) -> None:
    history = SqlHistory(history_url)
    try:
        ir = compile_text(pipeline(RESUMABLE))
        record = new_execution(history, ir, {"seconds": 5})

        async def cancel_when_slow_runs() -> None:
            runner = asyncio.create_task(Runner(history).run(record))
            while not PROBE.of("slow"):
                await asyncio.sleep(0.005)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner

        asyncio.run(cancel_when_slow_runs())
        stored = history.get_execution(record.id)
        assert stored is not None and stored.status is WorkflowStatus.CANCELLED
        assert PROBE.cancelled == ["slow"]
        assert rows(history, record.id, "first") == [(1, "COMPLETED")]
        assert rows(history, record.id, "slow") == [(1, "FAILED")]

        # The resume reads the params from the record: make `slow` quick this time.
        PROBE.calls.clear()
        history.update_execution(record.id, params={"seconds": 0.01})
        result = asyncio.run(Runner(history).resume(record.id))
        assert result.status is WorkflowStatus.COMPLETED
        assert result.result == 3
        assert [call.task_id for call in PROBE.calls] == ["slow", "last"]
        assert rows(history, record.id, "first") == [(1, "COMPLETED")]
        assert rows(history, record.id, "slow") == [(1, "FAILED"), (2, "COMPLETED")]
    finally:
        history.close()


def test_resume_refuses_a_completed_execution(history: SqlHistory) -> None:
    from flowctl.errors import FlowctlError, NotFoundError

    result = run("tasks:\n  - {id: a, executor: counter, with: {value: 1}}\n", history)
    with pytest.raises(FlowctlError, match="COMPLETED"):
        asyncio.run(Runner(history).resume(result.execution_id))
    with pytest.raises(NotFoundError):
        asyncio.run(Runner(history).resume("no-such-id"))
    assert len(PROBE.calls) == 1


def test_resume_of_a_failed_execution_runs_only_what_did_not_complete(
    history: SqlHistory,
) -> None:
    result = run(
        """\
        tasks:
          - {id: a, executor: counter, with: {value: 1}}
          - {id: b, executor: flaky, with: {key: b, fails: 1, value: 2}}
          - {id: c, executor: counter, with: {value: "{{ tasks.a.output + tasks.b.output }}"}}
        output: "{{ tasks.c.output }}"
        """,
        history,
    )
    assert result.status is WorkflowStatus.FAILED
    PROBE.calls.clear()
    resumed = asyncio.run(Runner(history).resume(result.execution_id))
    assert resumed.status is WorkflowStatus.COMPLETED
    assert resumed.result == 3
    assert [call.task_id for call in PROBE.calls] == ["b", "c"]
    assert [call.attempt for call in PROBE.of("b")] == [2]  # attempts keep counting
    stored = history.get_execution(result.execution_id)
    assert stored is not None
    assert (stored.status, stored.error, stored.result) == (WorkflowStatus.COMPLETED, None, 3)
    assert rows(history, result.execution_id, "b") == [(1, "FAILED"), (2, "COMPLETED")]
