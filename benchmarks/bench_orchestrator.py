"""Orchestrator overhead: 10,000 `transform` tasks as a chain and as a fan-out.

Prints, per task:
- end to end: the whole `flowctl run` of the 10,000-task file (load, validation,
  compilation, SQLite history, one checkpoint committed per task) minus a 10-task run;
- the run phase alone, with the SQLite history and with memory stores (`--no-history`);
- the peak memory (max RSS) of the `flowctl run` process.
Run with `make bench`.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flowctl.engine.local import Runner, new_execution
from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.validate import load_and_validate
from flowctl.engine.state.history import MemoryHistory, SqlHistory

TASKS = 10_000
RUNS = 3  # each figure is the best of RUNS: this VM's timings vary by ~10% run to run


def pipeline(tasks: int, shape: str) -> str:
    lines = [
        "apiVersion: flowctl/v1",
        "kind: Pipeline",
        "metadata:",
        f"  name: bench-{shape}",
        "spec:",
        "  max_parallel: 64",
        "  tasks:",
        "    - id: t0",
        "      executor: transform",
        "      with: {value: 0}",
    ]
    for i in range(1, tasks):
        upstream = f"t{i - 1}" if shape == "chain" else "t0"
        lines += [
            f"    - id: t{i}",
            "      executor: transform",
            f'      with: {{value: "{{{{ tasks.{upstream}.output }}}}"}}',
        ]
    return "\n".join(lines) + "\n"


def timed_cli_run(path: Path, database: Path, *extra: str) -> tuple[float, int]:
    """Wall time and max RSS (KiB) of one `flowctl run` process."""
    flowctl = Path(sys.executable).parent / "flowctl"
    command = [str(flowctl), "run", str(path), *extra]  # as a user types it: text output
    env = {"FLOWCTL_DATABASE_URL": f"sqlite:///{database}", "PATH": "/usr/bin:/bin"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"flowctl run failed: {done.stderr.decode()[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before)


def sqlite_run_phase(ir: dict[str, Any], database: Path) -> float:
    history = SqlHistory(f"sqlite:///{database}")
    try:
        return run_phase(ir, history) / TASKS
    finally:
        history.close()


def run_phase(ir: dict[str, Any], history: Any) -> float:
    gc.freeze()  # as `flowctl run` does once the IR is compiled
    runner = Runner(history)
    record = new_execution(history, ir, {})
    start = time.perf_counter()
    result = asyncio.run(runner.run(record))
    elapsed = time.perf_counter() - start
    assert str(result.status) == "COMPLETED", result.error
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        print(f"orchestrator overhead, {TASKS:,} transform tasks (best of {RUNS})")
        for shape in ("chain", "fanout"):
            big, small = work / f"{shape}.yaml", work / f"{shape}-10.yaml"
            big.write_text(pipeline(TASKS, shape))
            small.write_text(pipeline(10, shape))
            document, diagnostics = load_and_validate(str(big))
            assert document is not None and not diagnostics, diagnostics
            ir = compile_document(document)

            timed_cli_run(small, work / "warm.db")  # warm the file cache and the venv
            small_time = min(
                timed_cli_run(small, work / f"{shape}-small-{i}.db")[0] for i in range(RUNS)
            )
            big_runs = [timed_cli_run(big, work / f"{shape}-big-{i}.db") for i in range(RUNS)]
            big_time, peak_kib = min(t for t, _ in big_runs), max(p for _, p in big_runs)
            end_to_end = (big_time - small_time) / TASKS

            sqlite_phase = min(
                sqlite_run_phase(ir, work / f"{shape}-phase-{i}.db") for i in range(RUNS)
            )
            memory_phase = min(run_phase(ir, MemoryHistory()) for _ in range(RUNS)) / TASKS

            print(f"  {shape}:")
            print(
                f"    end to end, flowctl run, SQLite   {end_to_end * 1e6:8.1f} us/task"
                "   (target < 150)"
            )
            print(
                f"    run phase, SQLite checkpoints     {sqlite_phase * 1e6:8.1f} us/task"
                "   (target < 100)"
            )
            print(
                f"    run phase, memory stores          {memory_phase * 1e6:8.1f} us/task"
                "   (target < 25)"
            )
            print(
                f"    peak memory of flowctl run        {peak_kib / 1024:8.1f} MiB"
                "      (target < 200)"
            )


if __name__ == "__main__":
    main()
