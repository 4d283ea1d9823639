"""`flowctl validate` on 1,000 generated pipelines (10 tasks, ~70 lines each), beside
check-jsonschema on the same files with flowctl's schema.

check-jsonschema is installed into its own virtual environment (benchmarks/.work/) with
`ruamel.yaml.clib`, its fast YAML path, so the comparison is against its best case.
Run with `make bench`; figures are wall-clock seconds, best of 3 runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

from gen_pipelines import generate

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
FILES = 1000
RUNS = 3


def best_of(command: list[str], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"{command[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return min(times)


def check_jsonschema() -> Path:
    env = WORK / "venv-check-jsonschema"
    binary = env / "bin" / "check-jsonschema"
    if not binary.exists():
        venv.create(env, with_pip=True)
        subprocess.run(
            [str(env / "bin" / "pip"), "install", "-q", "check-jsonschema", "ruamel.yaml.clib"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return binary


def main() -> None:
    folder = WORK / "pipelines-1000"
    shutil.rmtree(folder, ignore_errors=True)
    generate(folder, FILES)
    files = sorted(str(p) for p in folder.glob("*.yaml"))
    flowctl = str(Path(sys.executable).parent / "flowctl")
    schema = str(HERE.parent / "flowctl" / "schemas" / "pipeline.schema.json")

    ours = best_of([flowctl, "validate", str(folder)])
    ours_serial = best_of([flowctl, "validate", "--jobs", "1", str(folder)])
    theirs = best_of([str(check_jsonschema()), "--schemafile", schema, *files])
    cpus = os.cpu_count()
    rows = [
        (f"flowctl validate (all checks, {cpus} jobs)", ours),
        ("flowctl validate (all checks, 1 job)", ours_serial),
        ("check-jsonschema (schema only)", theirs),
    ]
    print(f"validate {FILES} pipelines x 10 tasks ({cpus} CPUs, best of {RUNS})")
    for label, seconds in rows:
        print(f"  {label:<42} {seconds:7.3f} s  {seconds / FILES * 1e3:6.3f} ms/file")
    ratio = ours / theirs
    print(f"  {'ratio flowctl / check-jsonschema':<42} {ratio:7.2f}  (targets: <= 0.5, and < 1 s)")


if __name__ == "__main__":
    main()
