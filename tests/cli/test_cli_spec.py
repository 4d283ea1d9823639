"""The `flowctl` console script: validate, compile, graph and schema, as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

FLOWCTL = Path(sys.executable).parent / "flowctl"
EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines"
EXAMPLE = EXAMPLES / "offline-report.yaml"

INVALID = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: broken}
spec:
  tasks:
    - id: a
      executor: transfrom
      with: {value: 1}
    - id: b
      executor: transform
      needs: [zz]
      with: {value: "{{ params.nope }}"}
"""
INVALID_ERRORS = [(7, 17, "unknown-executor"), (11, 15, "unknown-task"), (12, 21, "unknown-param")]


def flowctl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(FLOWCTL), *map(str, args)], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


@pytest.fixture
def invalid(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(INVALID, encoding="utf-8")
    return path


# --- validate ---------------------------------------------------------------------


def test_validate_valid_examples_exits_0() -> None:
    done = flowctl("validate", EXAMPLES)
    assert done.returncode == 0, done.stdout
    assert done.stdout == ""


def test_validate_invalid_file_exits_1_with_one_line_per_error(invalid: Path) -> None:
    done = flowctl("validate", invalid)
    assert done.returncode == 1
    shape = re.compile(r"^(?P<path>.+):(\d+):(\d+): error: (.+) \[(?P<rule>[a-z-]+)\]$")
    lines = [line for line in done.stdout.splitlines() if not line.startswith("  hint: ")]
    found = []
    for line in lines:
        match = shape.match(line)
        assert match, line
        assert match["path"] == str(invalid)
        found.append((int(match[2]), int(match[3]), match["rule"]))
    assert found == INVALID_ERRORS
    assert "  hint: did you mean 'transform'?" in done.stdout


def test_validate_one_invalid_file_among_valid_ones_exits_1(invalid: Path) -> None:
    assert flowctl("validate", EXAMPLES, invalid).returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "does-not-exist.yaml"],
        ["validate"],
        ["validate", "--bogus", str(EXAMPLE)],
        ["validate", "--format", "xml", str(EXAMPLE)],
        ["validate", "--jobs", "0", str(EXAMPLE)],
        ["compile", "does-not-exist.yaml"],
        ["compile", str(EXAMPLES)],
        ["graph", "--format", "svg", str(EXAMPLE)],
        ["schema", "--kind", "nope"],
        ["no-such-command"],
    ],
    ids=lambda args: " ".join(Path(a).name if "/" in a else a for a in args),
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    done = flowctl(*args)
    assert done.returncode == 2
    assert "Error" in done.stderr
    assert done.stdout == ""


def test_validate_json_lists_every_error(invalid: Path) -> None:
    done = flowctl("validate", "--format", "json", EXAMPLES, invalid)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["valid"] is False
    by_path = {entry["path"]: entry for entry in report["files"]}
    assert by_path[str(invalid)]["valid"] is False
    errors = by_path[str(invalid)]["errors"]
    assert [(e["line"], e["column"], e["rule"]) for e in errors] == INVALID_ERRORS
    assert all(e["path"] == str(invalid) and e["message"] for e in errors)
    assert all(by_path[str(path)]["valid"] for path in EXAMPLES.glob("*.yaml"))


def test_validate_json_of_valid_files() -> None:
    done = flowctl("validate", "--format", "json", EXAMPLES)
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["valid"] is True
    assert all(entry["errors"] == [] for entry in report["files"])


def test_validate_github_annotations(invalid: Path) -> None:
    done = flowctl("validate", "--format", "github", invalid)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == len(INVALID_ERRORS)
    for line, (row, column, rule) in zip(lines, INVALID_ERRORS, strict=True):
        assert line.startswith(f"::error file={invalid},line={row},col={column},"), line
        assert f"title={rule}::" in line


# --- compile, graph, schema -----------------------------------------------------------


def test_compile_prints_the_ir_with_a_digest() -> None:
    done = flowctl("compile", EXAMPLE)
    assert done.returncode == 0, done.stderr
    ir = json.loads(done.stdout)
    assert ir["name"] == "offline-report"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", ir["digest"])
    assert ir["order"] == [task["id"] for task in ir["tasks"]]


def test_compile_of_an_invalid_file_exits_1_with_its_errors(invalid: Path) -> None:
    done = flowctl("compile", invalid)
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"{invalid}:7:17: error: unknown executor 'transfrom'" in done.stderr


def test_graph_mermaid_and_dot() -> None:
    ir = json.loads(flowctl("compile", EXAMPLE).stdout)
    mermaid = flowctl("graph", EXAMPLE)
    dot = flowctl("graph", "--format", "dot", EXAMPLE)
    assert mermaid.returncode == dot.returncode == 0
    assert mermaid.stdout.startswith("flowchart TD\n")
    assert dot.stdout.startswith('digraph "offline-report" {\n')
    for source, target in ir["edges"]:
        assert f"{source} --> {target}" in mermaid.stdout
        assert f'"{source}" -> "{target}";' in dot.stdout


SCHEMAS = Path(__file__).resolve().parents[2] / "flowctl" / "schemas"


@pytest.mark.parametrize(
    ("args", "shipped"),
    [
        ([], "pipeline.schema.json"),
        (["--kind", "pipeline"], "pipeline.schema.json"),
        (["--kind", "taskflow"], "taskflow.schema.json"),
    ],
)
def test_schema_prints_the_shipped_schema(args: list[str], shipped: str) -> None:
    done = flowctl("schema", *args)
    assert done.returncode == 0
    assert json.loads(done.stdout) == json.loads((SCHEMAS / shipped).read_text("utf-8"))


@pytest.mark.parametrize("command", [[], ["validate"], ["compile"], ["graph"], ["schema"]])
def test_help(command: list[str]) -> None:
    done = flowctl(*command, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: flowctl")
