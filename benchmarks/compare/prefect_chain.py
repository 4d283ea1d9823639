"""Per-task overhead of Prefect 3 beside flowctl, on the same chain of 1,000 no-op tasks.

Each task takes the previous task's result as its input and returns it unchanged.
- flowctl: the `transform` chain of bench_orchestrator.pipeline(), run phase only, in
  process, with memory stores and with the SQLite history (one checkpoint per task);
  one 10-task warm-up, then the median of 3 runs.
- Prefect: a @flow that calls a @task no-op 1,000 times, in Prefect's own virtual
  environment (benchmarks/.work/venv-prefect, installed here on first use) against its
  ephemeral local API server (SQLite, loopback only, analytics off, a fresh PREFECT_HOME
  under benchmarks/.work); one 5-task warm-up flow run, then one timed flow run. Measured
  with results not persisted (Prefect's default) and with results persisted
  (PREFECT_RESULTS_PERSIST_BY_DEFAULT=true, plus PREFECT_TASKS_REFRESH_CACHE=true: every
  task has the same input, so each would otherwise be a cache hit of the first instead of
  running and writing its result).
Prints microseconds per task and the ratios Prefect / flowctl. Run with `make bench`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCHMARKS))

from bench_orchestrator import pipeline, run_phase  # noqa: E402

from flowctl.engine.spec.compile import compile_document  # noqa: E402
from flowctl.engine.spec.validate import load_and_validate  # noqa: E402
from flowctl.engine.state.history import MemoryHistory, SqlHistory  # noqa: E402

WORK = BENCHMARKS / ".work"
PREFECT_VENV = WORK / "venv-prefect"
TASKS = 1000
FLOWCTL_RUNS = 3

INNER = '''\
"""Prefect side of benchmarks/compare/prefect_chain.py: prints one JSON line."""

import json
import sys
import time

import prefect
from prefect import flow, task

executed = 0


@task
def noop(value):
    global executed
    executed += 1
    return value


@flow
def chain(tasks: int):
    value = 0
    for _ in range(tasks):
        value = noop(value)
    return value


chain(5)  # warm-up: starts the ephemeral API server, creates its database
tasks = int(sys.argv[1])
executed = 0
start = time.perf_counter()
chain(tasks)
seconds = time.perf_counter() - start
print(json.dumps({"tasks": tasks, "seconds": seconds, "executed": executed,
                  "version": prefect.__version__}))
'''


def prefect_python() -> Path:
    """Python of Prefect's own virtual environment, created and filled on first use."""
    python = PREFECT_VENV / "bin" / "python"
    stamp = PREFECT_VENV / ".installed"
    if not stamp.exists():
        print("installing Prefect 3 into benchmarks/.work/venv-prefect ...", flush=True)
        if not python.exists():
            venv.create(PREFECT_VENV, with_pip=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "prefect>=3,<4"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stamp.touch()
    return python


def prefect_run(python: Path, tasks: int, persist: bool) -> dict[str, Any]:
    """One timed flow run of `tasks` chained no-ops; raises RuntimeError with stderr if it fails."""
    script = WORK / "prefect_chain_inner.py"
    script.write_text(INNER)
    home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=WORK))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true",  # local subprocess server on 127.0.0.1
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",  # no telemetry heartbeat
        PREFECT_UI_ENABLED="false",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if persist:
        env.update(PREFECT_RESULTS_PERSIST_BY_DEFAULT="true", PREFECT_TASKS_REFRESH_CACHE="true")
    try:
        done = subprocess.run(
            [str(python), str(script), str(tasks)],
            capture_output=True,
            text=True,
            env=env,
            cwd=home,
            timeout=600,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["executed"] != tasks:
        raise RuntimeError(f"{result['executed']} of {tasks} task bodies ran (cache hits?)")
    return result


def flowctl_phase(ir: dict[str, Any], small_ir: dict[str, Any], history: Any) -> float:
    """Median run-phase seconds per task over FLOWCTL_RUNS runs, after one warm-up."""
    run_phase(small_ir, history)
    return statistics.median(run_phase(ir, history) for _ in range(FLOWCTL_RUNS)) / TASKS


def compiled_chain(folder: Path, tasks: int) -> dict[str, Any]:
    path = folder / f"chain-{tasks}.yaml"
    path.write_text(pipeline(tasks, "chain"))
    document, diagnostics = load_and_validate(str(path))
    assert document is not None and not diagnostics, diagnostics
    return compile_document(document)


def main() -> None:
    WORK.mkdir(exist_ok=True)
    python = prefect_python()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        ir, small_ir = compiled_chain(work, TASKS), compiled_chain(work, 10)
        sql = SqlHistory(f"sqlite:///{work / 'history.db'}")
        flowctl_sqlite = flowctl_phase(ir, small_ir, sql)
        sql.close()
        flowctl_memory = flowctl_phase(ir, small_ir, MemoryHistory())

    default = prefect_run(python, TASKS, persist=False)
    try:
        persisted: dict[str, Any] | None = prefect_run(python, TASKS, persist=True)
        persist_error = ""
    except RuntimeError as error:
        persisted, persist_error = None, str(error).strip().splitlines()[-1]

    print(f"chain of {TASKS:,} no-op tasks: flowctl vs Prefect {default['version']}")
    us = 1e6
    rows = [
        ("flowctl run phase, memory stores", flowctl_memory),
        ("flowctl run phase, SQLite history", flowctl_sqlite),
        ("Prefect flow, results not persisted", default["seconds"] / TASKS),
    ]
    if persisted is not None:
        rows.append(("Prefect flow, results persisted", persisted["seconds"] / TASKS))
    for label, seconds in rows:
        print(f"  {label:<40} {seconds * us:9.1f} us/task")
    if persisted is None:
        print(f"  {'Prefect flow, results persisted':<40} not measured: {persist_error}")

    print(f"  {'ratio Prefect / flowctl':<40} {'memory':>9}   {'SQLite':>7}")
    for label, seconds in rows[2:]:
        print(
            f"    {label.removeprefix('Prefect flow, '):<38} "
            f"{seconds / flowctl_memory:8.0f}x   {seconds / flowctl_sqlite:6.0f}x"
        )


if __name__ == "__main__":
    main()
