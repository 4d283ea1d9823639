"""`flowctl run`, `resume`, `status` and `runs`, as a user runs them: exit codes, output,
bad params, secrets, Ctrl-C/SIGTERM, and a run killed with SIGKILL then resumed.

The slow executor of the signal and crash tests comes from a plugin written into the
test's directory and found through the `flowctl.executors` entry-point group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowctl.engine.state.history import Checkpoint, ExecutionRecord, SqlHistory
from flowctl.engine.states import TaskStatus, WorkflowStatus

FLOWCTL = Path(sys.executable).parent / "flowctl"

PIPELINE = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: greet}
spec:
  params:
    name: {type: string}
    times: {type: integer, default: 2}
    mode: {type: string, enum: [short, long], default: short}
  tasks:
    - {id: hello, executor: transform, with: {value: "hello {{ params.name }}"}}
    - id: repeat
      executor: transform
      with: {value: "{{ ([tasks.hello.output] * params.times) | join(', ') }}"}
  output: {text: "{{ tasks.repeat.output }}", mode: "{{ params.mode }}"}
"""

FAILING = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: broken-at-run}
spec:
  params:
    data: {type: object, default: {}}
  tasks:
    - {id: ok, executor: transform, with: {value: 1}}
    - {id: bad, executor: transform, with: {value: "{{ params.data.missing }}"}}
"""

SECRETIVE = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: secretive}
spec:
  tasks:
    - {id: auth, executor: transform, with: {value: "Bearer {{ secrets.API_TOKEN }}"}}
    - {id: lookup, executor: transform, with: {value: "{{ {'a': 1}[secrets.API_TOKEN] }}"}}
  output: "{{ tasks.auth.output }}"
"""
SECRET = "tok-9f8e7d6c5b4a"

PLUGIN = '''\
"""A flowctl executor plugin for the tests: sleeps, logs each attempt, outputs `value`."""

import asyncio

from flowctl.engine.executors.base import BaseExecutor


class SleepExecutor(BaseExecutor):
    name = "sleep"
    with_schema = {
        "type": "object",
        "required": ["seconds"],
        "properties": {"seconds": {}, "value": {}, "log": {"type": "string"}},
    }

    async def run(self, ctx, params):
        if params.get("log"):
            with open(params["log"], "a", encoding="utf-8") as log:
                log.write(f"{ctx.task_id} {ctx.attempt}\\n")
        await asyncio.sleep(float(params["seconds"]))
        return params.get("value")
'''

CHAIN_LENGTH = 6


def chain_pipeline(log: Path, seconds: float) -> str:
    """s1 → s2 → … → s6, each sleeping `seconds`; s<i> outputs i (summed along the way)."""
    tasks = ["    - {id: s1, executor: sleep, with: {seconds: %s, value: 1, log: '%s'}}\n"]
    for i in range(2, CHAIN_LENGTH + 1):
        tasks.append(
            f"    - {{id: s{i}, executor: sleep, with: {{seconds: %s, "
            f"value: \"{{{{ tasks.s{i - 1}.output + {i} }}}}\", log: '%s'}}}}\n"
        )
    body = "".join(task % (seconds, log) for task in tasks)
    return (
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: chain}\nspec:\n  tasks:\n"
        + body
        + f'  output: "{{{{ tasks.s{CHAIN_LENGTH}.output }}}}"\n'
    )


CHAIN_RESULT = sum(range(1, CHAIN_LENGTH + 1))


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'history.db'}"


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    """A plugin distribution on disk: a module and its dist-info with the entry point."""
    root = tmp_path / "plugins"
    root.mkdir()
    (root / "flowctl_test_plugin.py").write_text(PLUGIN, encoding="utf-8")
    info = root / "flowctl_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flowctl_test_plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[flowctl.executors]\nsleep = flowctl_test_plugin:SleepExecutor\n", encoding="utf-8"
    )
    return root


def environment(database_url: str, plugin_path: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCTL_")}
    env["FLOWCTL_DATABASE_URL"] = database_url
    if plugin_path is not None:
        env["PYTHONPATH"] = str(plugin_path)
    env.update(extra)
    return env


def flowctl(
    *args: str | Path, database_url: str, cwd: Path, plugin_path: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(FLOWCTL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environment(database_url, plugin_path, **env),
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def history(database_url: str) -> Iterator[SqlHistory]:
    opened = SqlHistory(database_url)
    yield opened
    opened.close()


def wait_for(
    condition: Callable[[], Any], process: subprocess.Popen[str], timeout: float = 20.0
) -> Any:
    """Polls the history while `process` runs; its stderr explains an early exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"flowctl exited {process.returncode}: {process.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError("timed out waiting")


def only_execution(history: SqlHistory) -> ExecutionRecord | None:
    records = history.list_executions()
    return records[0] if records else None


def completed(history: SqlHistory, execution_id: str) -> list[Checkpoint]:
    return [c for c in history.checkpoints(execution_id) if c.status is TaskStatus.COMPLETED]


# --- run: output and exit codes --------------------------------------------------------------


def test_run_json_output_and_exit_0(workdir: Path, database_url: str, history: SqlHistory) -> None:
    path = write(workdir, "greet.yaml", PIPELINE)
    done = flowctl(
        "run", path, "-p", "name=ada", "-p", "times=3", "--output", "json",
        database_url=database_url, cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert {"execution_id", "pipeline", "status", "result", "tasks"} <= set(document)
    assert document["pipeline"] == "greet"
    assert document["status"] == "COMPLETED"
    assert document["result"] == {"text": "hello ada, hello ada, hello ada", "mode": "short"}
    assert document["tasks"] == {
        "hello": {"status": "COMPLETED", "attempts": 1, "output": "hello ada", "error": None},
        "repeat": {
            "status": "COMPLETED",
            "attempts": 1,
            "output": "hello ada, hello ada, hello ada",
            "error": None,
        },
    }
    stored = history.get_execution(document["execution_id"])
    assert stored is not None
    assert (stored.status, stored.params) == (
        WorkflowStatus.COMPLETED,
        {"name": "ada", "times": 3, "mode": "short"},
    )


def test_run_text_output_prints_the_status_and_result(workdir: Path, database_url: str) -> None:
    path = write(workdir, "greet.yaml", PIPELINE)
    done = flowctl("run", path, "-p", "name=bo", database_url=database_url, cwd=workdir)
    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    assert first.startswith("execution ") and first.endswith("greet  COMPLETED")
    assert json.loads("\n".join(rest)) == {"text": "hello bo, hello bo", "mode": "short"}


def test_a_failed_run_exits_1_and_names_the_failure(workdir: Path, database_url: str) -> None:
    path = write(workdir, "failing.yaml", FAILING)
    done = flowctl("run", path, "--output", "json", database_url=database_url, cwd=workdir)
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["status"] == "FAILED"
    assert document["tasks"]["ok"]["status"] == "COMPLETED"
    bad = document["tasks"]["bad"]
    assert bad["status"] == "FAILED"
    assert "'bad'" in bad["error"] and "{{ params.data.missing }}" in bad["error"]

    text = flowctl("run", path, database_url=database_url, cwd=workdir)
    assert text.returncode == 1
    assert "FAILED" in text.stdout and "error: task 'bad' failed" in text.stdout


def test_an_invalid_pipeline_file_exits_1_and_records_nothing(
    workdir: Path, database_url: str, history: SqlHistory
) -> None:
    path = write(workdir, "bad.yaml", PIPELINE.replace("executor: transform", "executor: nope", 1))
    done = flowctl("run", path, "-p", "name=x", database_url=database_url, cwd=workdir)
    assert done.returncode == 1
    assert "unknown executor 'nope'" in done.stderr
    assert history.list_executions() == []


@pytest.mark.parametrize(
    ("secrets_file", "message"),
    [
        (None, "cannot read secrets file"),
        ("secrets.json", "invalid JSON"),
        ("secrets.env", "expected NAME=value"),
    ],
)
def test_a_bad_secrets_file_exits_1_and_records_nothing(
    secrets_file: str | None,
    message: str,
    workdir: Path,
    database_url: str,
    history: SqlHistory,
) -> None:
    path = write(workdir, "greet.yaml", PIPELINE)
    contents = {"secrets.json": "{not json", "secrets.env": "TOKEN=abc\njust words\n"}
    if secrets_file:
        write(workdir, secrets_file, contents[secrets_file])
    done = flowctl(
        "run", path, "-p", "name=x", database_url=database_url, cwd=workdir,
        FLOWCTL_SECRETS_FILE=str(workdir / (secrets_file or "missing.json")),
    )  # fmt: skip
    assert done.returncode == 1
    assert message in done.stderr
    assert history.list_executions() == []


def test_a_secrets_file_gives_expressions_their_values(workdir: Path, database_url: str) -> None:
    path = write(
        workdir,
        "secret.yaml",
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: secret}
        spec:
          tasks:
            - id: length
              executor: transform
              with: {value: "{{ secrets.TOKEN | length }}+{{ secrets.OTHER | length }}"}
          output: "{{ tasks.length.output }}"
        """,
    )
    write(workdir, "secrets.env", "# comment\nexport TOKEN='abcd'\nOTHER = \"xy z\"\n")
    done = flowctl(
        "run", path, "--output", "json", database_url=database_url, cwd=workdir,
        FLOWCTL_SECRETS_FILE=str(workdir / "secrets.env"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == "4+4"


# --- params ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (["-p", "name=x", "-p", "colour=red"], {}, "unknown param 'colour'"),
        (["-p", "name=x", "-p", "times=many"], {}, "param 'times': expected an integer"),
        ([], {}, "missing required param 'name'"),
        (["-p", "name=x", "-p", "mode=medium"], {}, "is not one of"),
        (["-p", "name"], {}, "expected NAME=VALUE"),
        (["--params-file", "p.yaml"], {"p.yaml": "name: 5\n"}, "param 'name': expected string"),
        (["--params-file", "p.yaml"], {"p.yaml": "- name\n"}, "must be a mapping"),
        (["--params-file", "p.yaml"], {"p.yaml": "name: [unclosed\n"}, "p.yaml:"),
        (["--params-file", "p.json"], {"p.json": '{"name": "x", "times": "3"}'}, "'times'"),
    ],
)
def test_bad_params_exit_2_and_record_nothing(
    args: list[str],
    files: dict[str, str],
    message: str,
    workdir: Path,
    database_url: str,
    history: SqlHistory,
) -> None:
    path = write(workdir, "greet.yaml", PIPELINE)
    for name, text in files.items():
        write(workdir, name, text)
    done = flowctl("run", path, *args, database_url=database_url, cwd=workdir)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert done.stdout == ""
    assert history.list_executions() == []


def test_params_file_values_with_command_line_overrides(workdir: Path, database_url: str) -> None:
    path = write(workdir, "greet.yaml", PIPELINE)
    write(workdir, "params.yaml", "name: cy\ntimes: 1\nmode: long\n")
    done = flowctl(
        "run", path, "--params-file", "params.yaml", "-p", "times=2", "--output", "json",
        database_url=database_url, cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"text": "hello cy, hello cy", "mode": "long"}


# --- status, runs, resume ----------------------------------------------------------------------


def run_json(path: Path, database_url: str, cwd: Path, *args: str) -> dict[str, Any]:
    done = flowctl("run", path, *args, "--output", "json", database_url=database_url, cwd=cwd)
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_status_shows_the_execution_and_each_task(workdir: Path, database_url: str) -> None:
    failing = run_json(write(workdir, "failing.yaml", FAILING), database_url, workdir)
    execution_id = failing["execution_id"]
    done = flowctl(
        "status", execution_id, "--output", "json", database_url=database_url, cwd=workdir
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["execution_id"] == failing["execution_id"]
    assert (status["pipeline"], status["status"]) == ("broken-at-run", "FAILED")
    assert status["error"] == failing["error"]
    assert status["params"] == {"data": {}}
    assert status["tasks"]["ok"] == {
        "status": "COMPLETED",
        "attempts": 1,
        "output": 1,
        "error": None,
    }
    assert status["tasks"]["bad"]["status"] == "FAILED"
    assert status["tasks"]["bad"]["error"] == failing["tasks"]["bad"]["error"]
    assert status["created_at"] and status["finished_at"]

    text = flowctl("status", failing["execution_id"], database_url=database_url, cwd=workdir)
    assert text.returncode == 0
    head, error, *task_lines = text.stdout.splitlines()
    assert head == f"{failing['execution_id']}  broken-at-run  FAILED"
    assert error.startswith("error: task 'bad' failed")
    assert sorted(line.split()[:3] for line in task_lines) == [
        ["bad", "FAILED", "attempts=1"],
        ["ok", "COMPLETED", "attempts=1"],
    ]


def test_status_of_an_unknown_execution_is_a_clean_error(workdir: Path, database_url: str) -> None:
    done = flowctl("status", "nope", database_url=database_url, cwd=workdir)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: no execution 'nope' in the history"


def test_runs_lists_newest_first_with_filters(workdir: Path, database_url: str) -> None:
    greet = write(workdir, "greet.yaml", PIPELINE)
    failing = write(workdir, "failing.yaml", FAILING)
    ids = [
        run_json(greet, database_url, workdir, "-p", "name=a")["execution_id"],
        run_json(failing, database_url, workdir)["execution_id"],
        run_json(greet, database_url, workdir, "-p", "name=b")["execution_id"],
    ]

    def runs(*args: str) -> list[dict[str, Any]]:
        done = flowctl("runs", *args, "--output", "json", database_url=database_url, cwd=workdir)
        assert done.returncode == 0, done.stderr
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    assert [row["execution_id"] for row in runs()] == ids[::-1]
    assert [row["execution_id"] for row in runs("--pipeline", "greet")] == [ids[2], ids[0]]
    failed = runs("--status", "FAILED")
    assert [(row["execution_id"], row["status"]) for row in failed] == [(ids[1], "FAILED")]
    assert failed[0]["error"].startswith("task 'bad' failed")
    assert [row["execution_id"] for row in runs("--limit", "1")] == [ids[2]]

    text = flowctl("runs", "--pipeline", "greet", database_url=database_url, cwd=workdir)
    assert [line.split()[:3] for line in text.stdout.splitlines()] == [
        [ids[2], "greet", "COMPLETED"],
        [ids[0], "greet", "COMPLETED"],
    ]
    none = flowctl("runs", "--pipeline", "other", database_url=database_url, cwd=workdir)
    assert none.stdout.strip() == "no executions"


def test_resume_of_a_completed_execution_is_refused(workdir: Path, database_url: str) -> None:
    done = run_json(write(workdir, "greet.yaml", PIPELINE), database_url, workdir, "-p", "name=z")
    resumed = flowctl("resume", done["execution_id"], database_url=database_url, cwd=workdir)
    assert resumed.returncode == 1
    assert resumed.stdout == ""
    assert resumed.stderr.strip() == (
        f"error: execution {done['execution_id']} is COMPLETED; only failed, cancelled or "
        "interrupted executions can be resumed"
    )


def test_resume_of_an_unknown_execution_is_a_clean_error(workdir: Path, database_url: str) -> None:
    done = flowctl("resume", "no-such-id", database_url=database_url, cwd=workdir)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: no execution 'no-such-id' in the history"


def test_resume_of_a_failed_execution_fails_again_without_rerunning_what_completed(
    workdir: Path, database_url: str, history: SqlHistory
) -> None:
    failed = run_json(write(workdir, "failing.yaml", FAILING), database_url, workdir)
    done = flowctl(
        "resume", failed["execution_id"], "--output", "json", database_url=database_url, cwd=workdir
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["execution_id"] == failed["execution_id"]
    assert [(c.task_id, c.status) for c in completed(history, failed["execution_id"])] == [
        ("ok", TaskStatus.COMPLETED)
    ]


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_never_appear_in_status_output(
    workdir: Path, database_url: str, history: SqlHistory
) -> None:
    path = write(workdir, "secretive.yaml", SECRETIVE)
    done = flowctl(
        "run", path, "--output", "json",
        database_url=database_url, cwd=workdir, FLOWCTL_SECRET_API_TOKEN=SECRET,
    )  # fmt: skip
    assert done.returncode == 1  # `lookup` fails, quoting the secret in its error
    execution_id = json.loads(done.stdout)["execution_id"]
    for args in (["--output", "json"], []):
        status = flowctl(
            "status", execution_id, *args,
            database_url=database_url, cwd=workdir, FLOWCTL_SECRET_API_TOKEN=SECRET,
        )  # fmt: skip
        assert status.returncode == 0
        assert SECRET not in status.stdout + status.stderr
        assert "***" in status.stdout
    assert json.loads(status_json(execution_id, database_url, workdir))["tasks"]["auth"] == {
        "status": "COMPLETED",
        "attempts": 1,
        "output": "Bearer ***",
        "error": None,
    }
    rows = history.checkpoints(execution_id)
    assert SECRET not in repr([(c.input, c.output, c.error) for c in rows])


def status_json(execution_id: str, database_url: str, cwd: Path) -> str:
    done = flowctl("status", execution_id, "--output", "json", database_url=database_url, cwd=cwd)
    return done.stdout


# --- interruptions: signals and SIGKILL ----------------------------------------------------------


def start_chain(
    workdir: Path, database_url: str, plugin_path: Path, seconds: float
) -> tuple[subprocess.Popen[str], Path]:
    log = workdir / "attempts.log"
    path = write(workdir, "chain.yaml", chain_pipeline(log, seconds))
    process = subprocess.Popen(
        [str(FLOWCTL), "run", str(path), "--output", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,
        env=environment(database_url, plugin_path),
    )
    return process, log


def attempts_in(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_the_run_which_resume_completes(
    signum: signal.Signals,
    workdir: Path,
    database_url: str,
    plugin_path: Path,
    history: SqlHistory,
) -> None:
    process, log = start_chain(workdir, database_url, plugin_path, seconds=0.15)
    try:
        record = wait_for(lambda: only_execution(history), process)
        wait_for(lambda: completed(history, record.id), process)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in stderr, stderr
    assert process.returncode == 130
    assert json.loads(stdout)["status"] == "CANCELLED"
    stored = history.get_execution(record.id)
    assert stored is not None and stored.status is WorkflowStatus.CANCELLED
    before = {c.task_id: c.started_at for c in completed(history, record.id)}
    assert 0 < len(before) < CHAIN_LENGTH
    cancelled = [c for c in history.checkpoints(record.id) if c.status is TaskStatus.FAILED]
    assert [c.error for c in cancelled] == ["cancelled"]  # the attempt that was running

    resumed = flowctl(
        "resume", record.id, "--output", "json",
        database_url=database_url, cwd=workdir, plugin_path=plugin_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["result"] == CHAIN_RESULT
    after = completed(history, record.id)
    assert sorted(c.task_id for c in after) == sorted(f"s{i}" for i in range(1, CHAIN_LENGTH + 1))
    assert {c.task_id: c.started_at for c in after if c.task_id in before} == before
    ran = attempts_in(log)
    assert all(ran.count(task_id) == 1 for task_id in before)


def test_a_killed_run_resumes_without_running_completed_tasks_again(
    history_url: str, workdir: Path, plugin_path: Path
) -> None:
    history = SqlHistory(history_url)  # creates the schema before the run starts
    try:
        process, log = start_chain(workdir, history_url, plugin_path, seconds=0.15)
        try:
            record = wait_for(lambda: only_execution(history), process)
            wait_for(lambda: len(completed(history, record.id)) >= 2, process)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=20)
        finally:
            process.kill()
            process.wait()
        assert process.returncode == -signal.SIGKILL
        stored = history.get_execution(record.id)
        assert stored is not None and stored.status is WorkflowStatus.RUNNING  # interrupted
        before = {c.task_id: c.started_at for c in completed(history, record.id)}
        assert 2 <= len(before) < CHAIN_LENGTH

        resumed = flowctl(
            "resume", record.id, "--output", "json",
            database_url=history_url, cwd=workdir, plugin_path=plugin_path,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        document = json.loads(resumed.stdout)
        assert (document["status"], document["result"]) == ("COMPLETED", CHAIN_RESULT)

        stored = history.get_execution(record.id)
        assert stored is not None
        assert (stored.status, stored.result) == (WorkflowStatus.COMPLETED, CHAIN_RESULT)
        after = completed(history, record.id)
        task_ids = [c.task_id for c in after]
        assert sorted(task_ids) == sorted(f"s{i}" for i in range(1, CHAIN_LENGTH + 1))
        assert len(task_ids) == len(set(task_ids))  # exactly one COMPLETED row each
        assert {c.task_id: c.started_at for c in after if c.task_id in before} == before
        ran = attempts_in(log)
        assert all(ran.count(task_id) == 1 for task_id in before)
        assert set(ran) == set(task_ids)
    finally:
        history.close()


def test_resume_refuses_an_execution_whose_process_is_alive(
    database_url: str, workdir: Path, plugin_path: Path, history: SqlHistory
) -> None:
    """A second runner would run its tasks twice: only a dead process's run is resumed."""
    process, _ = start_chain(workdir, database_url, plugin_path, seconds=30)
    try:
        record = wait_for(lambda: only_execution(history), process)

        def owned() -> str | None:
            stored = history.get_execution(record.id)
            return stored.lease_owner if stored else None

        wait_for(owned, process)
        alive = flowctl(
            "resume", record.id, database_url=database_url, cwd=workdir, plugin_path=plugin_path
        )
        assert alive.returncode == 1
        assert f"still running (process {process.pid} " in alive.stderr
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_resume_resolves_relative_paths_in_the_pipelines_folder(tmp_path: Path) -> None:
    """The first run fails on a missing schema file; after it is added, a resume started
    from another folder still finds it next to the pipeline."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "checked.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: checked}
            spec:
              tasks:
                - {id: data, executor: transform, with: {value: {n: 3}}}
                - id: check
                  executor: validate
                  with: {data: "{{ tasks.data.output }}", schema: schemas/n.json}
              output: "{{ tasks.check.output.valid }}"
            """
        )
    )
    env = {**os.environ, "FLOWCTL_DATABASE_URL": f"sqlite:///{tmp_path / 'history.db'}"}
    first = subprocess.run(
        [str(FLOWCTL), "run", str(folder / "checked.yaml"), "--output", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 1, first.stderr
    failed = json.loads(first.stdout)
    assert "schemas/n.json" in failed["tasks"]["check"]["error"]

    (folder / "schemas").mkdir()
    (folder / "schemas" / "n.json").write_text('{"type": "object", "required": ["n"]}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = subprocess.run(
        [str(FLOWCTL), "resume", failed["execution_id"], "--output", "json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout)["result"] is True
