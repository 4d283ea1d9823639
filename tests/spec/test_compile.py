"""`compile`: the TaskFlow IR (defaults, edges, order, digest) and the graph drawings."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from flowctl.engine.spec.compile import compile_document, parse_duration
from flowctl.engine.spec.graph import to_dot, to_mermaid
from flowctl.engine.spec.load import load_file, load_text
from flowctl.engine.spec.validate import validate_document
from flowctl.schemas import load_schema

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))


def compile_text(text: str) -> dict[str, Any]:
    document = load_text(textwrap.dedent(text))
    assert [d.format() for d in validate_document(document)] == []
    return compile_document(document)


def tasks_by_id(ir: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["id"]: task for task in ir["tasks"]}


# --- Defaults and durations ----------------------------------------------------------


def test_builtin_defaults_are_applied() -> None:
    ir = compile_text(
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          tasks:
            - {id: a, executor: transform, with: {value: 1}}
        """
    )
    task = ir["tasks"][0]
    assert ir["max_parallel"] == 32
    assert (task["retries"], task["retry_delay"], task["timeout"]) == (0, 1.0, None)
    assert task["on_failure"] == "fail"
    assert (task["when"], task["for_each"], task["needs"]) == (None, None, [])


def test_spec_defaults_apply_to_tasks_that_do_not_set_them() -> None:
    ir = compile_text(
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          max_parallel: 3
          defaults: {retries: 2, retry_delay: 500ms, timeout: 2m}
          tasks:
            - {id: plain, executor: transform, with: {value: 1}}
            - id: custom
              executor: transform
              retries: 5
              retry_delay: 3
              timeout: 1h
              on_failure: continue
              with: {value: 2}
        """
    )
    tasks = tasks_by_id(ir)
    assert ir["max_parallel"] == 3
    plain, custom = tasks["plain"], tasks["custom"]
    assert (plain["retries"], plain["retry_delay"], plain["timeout"]) == (2, 0.5, 120.0)
    assert plain["on_failure"] == "fail"
    assert (custom["retries"], custom["retry_delay"], custom["timeout"]) == (5, 3.0, 3600.0)
    assert custom["on_failure"] == "continue"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        (7, 7.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_durations(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize("value", ["5 minutes", "", "2d", "-1s", "ms"])
def test_invalid_durations(value: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


# --- Edges and order -----------------------------------------------------------------


def test_edges_come_from_needs_and_every_template_reference() -> None:
    ir = compile_text(
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          tasks:
            - {id: src, executor: transform, with: {value: [1, 2]}}
            - {id: gate, executor: transform, with: {value: true}}
            - id: each
              executor: transform
              for_each: "{{ tasks.src.output }}"
              with: {value: "{{ item }}"}
            - id: maybe
              executor: transform
              when: "{{ tasks.gate.output }}"
              with: {value: 1}
            - id: sink
              executor: transform
              needs: [maybe]
              with:
                value: {rows: ["{{ tasks.each.output | length }}"]}
        """
    )
    assert sorted(map(tuple, ir["edges"])) == [
        ("each", "sink"),
        ("gate", "maybe"),
        ("maybe", "sink"),
        ("src", "each"),
    ]
    assert tasks_by_id(ir)["sink"]["needs"] == ["each", "maybe"]


def test_order_is_topological_with_ties_broken_by_id() -> None:
    ir = compile_text(
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          tasks:
            - {id: zeta, executor: transform, with: {value: 1}}
            - {id: beta, executor: transform, needs: [zeta], with: {value: 2}}
            - {id: alpha, executor: transform, with: {value: "{{ tasks.zeta.output }}"}}
            - {id: mid, executor: transform, with: {value: 3}}
        """
    )
    assert ir["order"] == ["mid", "zeta", "alpha", "beta"]
    assert [task["id"] for task in ir["tasks"]] == ir["order"]


# --- Digest ------------------------------------------------------------------------


BASE = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: digest-demo
  labels: {team: data, domain: docs}
spec:
  params:
    n: {type: integer, default: 3}
  defaults: {retries: 1, timeout: 30s}
  tasks:
    - id: fetch
      executor: http
      with:
        url: https://example.com/items
        headers: {Accept: application/json}
    - id: shape
      executor: transform
      with:
        value: "{{ tasks.fetch.output.json[:params.n] }}"
"""

SAME_MEANING = {
    "comments": """\
# A comment at the top.
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: digest-demo  # trailing comment
  labels: {team: data, domain: docs}
spec:
  params:
    n: {type: integer, default: 3}
  # defaults for every task
  defaults: {retries: 1, timeout: 30s}
  tasks:
    - id: fetch
      executor: http
      with:
        url: https://example.com/items
        headers: {Accept: application/json}
    - id: shape
      executor: transform
      with:
        value: "{{ tasks.fetch.output.json[:params.n] }}"
""",
    "key order": """\
kind: Pipeline
spec:
  tasks:
    - executor: http
      with:
        headers: {Accept: application/json}
        url: https://example.com/items
      id: fetch
    - with:
        value: "{{ tasks.fetch.output.json[:params.n] }}"
      id: shape
      executor: transform
  defaults: {timeout: 30s, retries: 1}
  params:
    n: {default: 3, type: integer}
metadata:
  labels: {domain: docs, team: data}
  name: digest-demo
apiVersion: flowctl/v1
""",
    "whitespace": """\
apiVersion:   flowctl/v1
kind: Pipeline

metadata:
    name: digest-demo
    labels: { team: data,   domain: docs }

spec:
    params:
        n: {type: integer, default: 3}
    defaults: {retries: 1, timeout: 30s}
    tasks:
    -   id: fetch
        executor: http
        with:
            url: https://example.com/items
            headers: {Accept: application/json}

    -   id: shape
        executor: transform
        with:
            value: "{{ tasks.fetch.output.json[:params.n] }}"
""",
    "flow and block style": """\
apiVersion: "flowctl/v1"
kind: 'Pipeline'
metadata: {name: digest-demo, labels: {team: data, domain: docs}}
spec:
  params:
    n:
      type: integer
      default: 3
  defaults:
    retries: 1
    timeout: "30s"
  tasks:
    - {id: fetch, executor: http, with: {url: "https://example.com/items",
       headers: {Accept: application/json}}}
    - id: shape
      executor: transform
      with: {value: "{{ tasks.fetch.output.json[:params.n] }}"}
""",
    "task order": """\
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: digest-demo
  labels: {team: data, domain: docs}
spec:
  params:
    n: {type: integer, default: 3}
  defaults: {retries: 1, timeout: 30s}
  tasks:
    - id: shape
      executor: transform
      with:
        value: "{{ tasks.fetch.output.json[:params.n] }}"
    - id: fetch
      executor: http
      with:
        url: https://example.com/items
        headers: {Accept: application/json}
""",
}

REAL_CHANGES = {
    "a with value": ("https://example.com/items", "https://example.com/other"),
    "retries": ("retries: 1", "retries: 2"),
    "a default that a task uses": ("timeout: 30s", "timeout: 31s"),
}


def test_digest_is_the_sha256_of_the_canonical_ir() -> None:
    ir = compile_text(BASE)
    body = {key: value for key, value in ir.items() if key != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert ir["digest"] == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("variant", list(SAME_MEANING))
def test_digest_ignores_what_does_not_change_the_meaning(variant: str) -> None:
    assert compile_text(SAME_MEANING[variant]) == compile_text(BASE)


@pytest.mark.parametrize("change", list(REAL_CHANGES))
def test_digest_changes_with_the_meaning(change: str) -> None:
    old, new = REAL_CHANGES[change]
    assert old in BASE
    assert compile_text(BASE.replace(old, new))["digest"] != compile_text(BASE)["digest"]


# --- Examples and drawings --------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_ir_matches_the_taskflow_schema(path: Path) -> None:
    ir = compile_document(load_file(path))
    errors = list(Draft202012Validator(load_schema("taskflow")).iter_errors(ir))
    assert [error.message for error in errors] == []
    position = {task_id: index for index, task_id in enumerate(ir["order"])}
    assert all(position[source] < position[target] for source, target in ir["edges"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_drawings_show_every_node_and_edge(path: Path) -> None:
    ir = compile_document(load_file(path))
    assert ir["edges"]
    mermaid = to_mermaid(ir).splitlines()
    dot = to_dot(ir).splitlines()
    assert mermaid[0] == "flowchart TD"
    assert dot[0].startswith("digraph ") and dot[-1] == "}"
    for task in ir["tasks"]:
        assert any(line.strip().startswith(f'{task["id"]}["') for line in mermaid), task["id"]
        assert any(line.strip().startswith(f'"{task["id"]}" [label=') for line in dot)
    for source, target in ir["edges"]:
        assert f"    {source} --> {target}" in mermaid
        assert f'    "{source}" -> "{target}";' in dot
    assert sum("-->" in line for line in mermaid) == len(ir["edges"])
    assert sum("->" in line for line in dot) == len(ir["edges"])


def test_mermaid_renames_task_ids_that_are_mermaid_keywords() -> None:
    ir = compile_text(
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          tasks:
            - {id: start, executor: transform, with: {value: 1}}
            - {id: end, executor: transform, with: {value: "{{ tasks.start.output }}"}}
        """
    )
    mermaid = to_mermaid(ir).splitlines()
    # A lowercase `end` node id ends the flowchart in Mermaid; the label keeps the real id.
    assert '    End["end: transform"]' in mermaid
    assert "    start --> End" in mermaid
    assert not any(line.split()[0] == "end" for line in mermaid[1:])
