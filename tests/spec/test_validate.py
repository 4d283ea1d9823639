"""`validate`: every rule reports its name and the line:column of the offending node.

Positions in the expected values were counted by hand on the dedented YAML above them.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from flowctl.engine.spec import validate
from flowctl.engine.spec.validate import check_paths, load_and_validate
from flowctl.errors import Diagnostic
from flowctl.schemas import load_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "pipelines"


def diagnose(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> list[Diagnostic]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    _, diagnostics = load_and_validate(str(path))
    return diagnostics


def single(diagnostics: list[Diagnostic]) -> Diagnostic:
    assert len(diagnostics) == 1, [d.format() for d in diagnostics]
    return diagnostics[0]


def where(diagnostic: Diagnostic) -> tuple[str, int, int]:
    return diagnostic.rule, diagnostic.line, diagnostic.column


# --- Loading ------------------------------------------------------------------------


def test_yaml_syntax_error(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  with: {value: [1, 2}
            """,
        )
    )
    assert where(found) == ("yaml-syntax", 8, 26)


def test_duplicate_key(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  with: {value: 1}
                  executor: llm
            """,
        )
    )
    assert where(found) == ("duplicate-key", 9, 7)
    assert "'executor'" in found.message


# --- Schema -------------------------------------------------------------------------


def test_unknown_field_points_at_the_key_and_suggests(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  retrys: 3
                  with: {value: 1}
            """,
        )
    )
    assert where(found) == ("unknown-field", 8, 7)
    assert found.hint == "did you mean 'retries'?"


def test_wrong_type(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              max_parallel: "4"
              tasks:
                - id: a
                  executor: transform
                  with: {value: 1}
            """,
        )
    )
    assert where(found) == ("type", 5, 17)
    assert "expected integer, got string" in found.message


def test_bad_task_id(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: Bad-Id
                  executor: transform
                  with: {value: 1}
            """,
        )
    )
    assert where(found) == ("schema", 6, 11)
    assert found.hint is not None and "lowercase" in found.hint


def test_bad_pipeline_name(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: Demo_1}
            spec:
              tasks:
                - {id: a, executor: transform, with: {value: 1}}
            """,
        )
    )
    assert where(found) == ("schema", 3, 18)


# --- Executors ----------------------------------------------------------------------


def test_unknown_executor(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transfrom
                  with: {value: 1}
            """,
        )
    )
    assert where(found) == ("unknown-executor", 7, 17)
    assert found.hint == "did you mean 'transform'?"


def test_bad_with_block_for_its_executor(tmp_path: Path) -> None:
    diagnostics = diagnose(
        tmp_path,
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          tasks:
            - id: a
              executor: llm
              with:
                model: 4
                prompt: hi
                temprature: 0.5
        """,
    )
    assert [where(d) for d in diagnostics] == [("type", 9, 16), ("unknown-field", 11, 9)]
    assert diagnostics[1].hint == "did you mean 'temperature'?"


def test_with_block_missing_a_required_input(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: http
                  with:
                    method: GET
            """,
        )
    )
    assert where(found) == ("required", 9, 9)
    assert "'url'" in found.message


def test_templated_value_stands_for_any_type(tmp_path: Path) -> None:
    text = """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          params:
            t: {type: number, default: 0.2}
            n: {type: integer, default: 10}
          tasks:
            - id: a
              executor: llm
              with:
                model: gpt-4o-mini
                prompt: hi
                temperature: "{{ params.t }}"
                max_tokens: "{{ params.n * 2 }}"
        """
    assert diagnose(tmp_path, text) == []
    # The same field with a literal of the wrong type is still an error.
    literal = diagnose(tmp_path, text.replace('"{{ params.t }}"', "hot"))
    assert [where(d) for d in literal] == [("type", 14, 22)]


# --- References and the DAG -----------------------------------------------------------


def test_needs_an_unknown_task(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  needs: [load]
                  with: {value: 1}
                - id: load_data
                  executor: transform
                  with: {value: 2}
            """,
        )
    )
    assert where(found) == ("unknown-task", 8, 15)
    assert found.hint == "did you mean 'load_data'?"


def test_expression_reads_an_unknown_task(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  with:
                    value: "{{ tasks.b.output }}"
            """,
        )
    )
    assert where(found) == ("unknown-task", 9, 16)
    assert "'b'" in found.message


def test_dependency_cycle_is_named(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  needs: [c]
                  with: {value: 1}
                - id: b
                  executor: transform
                  with: {value: "{{ tasks.a.output }}"}
                - id: c
                  executor: transform
                  needs: [b]
                  with: {value: 1}
                - id: d
                  executor: transform
                  needs: [a]
                  with: {value: 1}
            """,
        )
    )
    assert where(found) == ("cycle", 6, 11)
    shown = found.message.removeprefix("dependency cycle: ").split(" → ")
    assert shown[0] == shown[-1]
    assert set(shown) == {"a", "b", "c"}
    needs = {"a": {"c"}, "b": {"a"}, "c": {"b"}}
    for upstream, downstream in itertools.pairwise(shown):
        assert upstream in needs[downstream], shown


def test_task_that_needs_itself(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  needs: [a]
                  with: {value: 1}
            """,
        )
    )
    assert where(found) == ("cycle", 8, 15)


def test_duplicate_task_id(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  with: {value: 1}
                - id: a
                  executor: transform
                  with: {value: 2}
            """,
        )
    )
    assert where(found) == ("duplicate-task", 9, 11)
    assert found.hint == "first defined on line 6"


def test_names_that_a_mapping_method_would_shadow_are_reserved(tmp_path: Path) -> None:
    """`{{ params.values }}` would read dict.values, not the param: refuse such names."""
    found = diagnose(
        tmp_path,
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          params:
            values: {type: array, default: []}
          tasks:
            - id: items
              executor: transform
              with: {value: "{{ params.values }}"}
        """,
    )
    assert [where(d) for d in found] == [("reserved-name", 6, 5), ("reserved-name", 8, 11)]


# --- Expressions ----------------------------------------------------------------------


def test_jinja_syntax_error_at_the_value(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  with:
                    value: "{{ params.x + }}"
            """,
        )
    )
    assert where(found) == ("template-syntax", 9, 16)


def test_jinja_syntax_error_in_a_block_scalar_points_inside_the_block(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              params:
                x: {type: string}
              tasks:
                - id: a
                  executor: transform
                  with:
                    value: |
                      line one {{ params.x }}
                      line two
                      line three {{ params.x | }}
                      line four
            """,
        )
    )
    assert found.rule == "template-syntax"
    assert found.line == 14  # the line of the broken expression, not the `|` on line 11


def test_unknown_name(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  with:
                    value: "{{ foo.bar }}"
            """,
        )
    )
    assert where(found) == ("unknown-name", 9, 16)
    assert "'foo'" in found.message


def test_item_outside_for_each(tmp_path: Path) -> None:
    text = """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo}
        spec:
          tasks:
            - id: a
              executor: transform
              with: {value: "{{ item }}"}
        """
    found = single(diagnose(tmp_path, text))
    assert where(found) == ("unknown-name", 8, 21)
    assert found.hint is not None and "for_each" in found.hint
    with_items = text.replace("with:", "for_each: [1, 2]\n              with:")
    assert diagnose(tmp_path, with_items) == []


def test_unknown_param(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              params:
                x: {type: string}
              tasks:
                - id: a
                  executor: transform
                  with:
                    value: "{{ params.nope }}"
            """,
        )
    )
    assert where(found) == ("unknown-param", 11, 16)
    assert found.hint == "declared params: x"


def test_unknown_filter(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  with:
                    value: "{{ 'x' | shout }}"
            """,
        )
    )
    assert where(found) == ("unknown-filter", 9, 16)
    assert "shout" in found.message


def test_when_that_is_not_an_expression(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - id: a
                  executor: transform
                  when: params.go
                  with: {value: 1}
            """,
        )
    )
    assert where(found) == ("not-an-expression", 8, 13)
    assert found.hint == 'write it as "{{ params.go }}"'


# --- Params and schedule -----------------------------------------------------------------


def test_param_default_of_the_wrong_type(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              params:
                n: {type: integer, default: "3"}
              tasks:
                - {id: a, executor: transform, with: {value: 1}}
            """,
        )
    )
    assert where(found) == ("param-default", 6, 33)


@pytest.mark.parametrize("schedule", ["@daily", "*/5 * * * *", "0 6 * * 1-5"])
def test_valid_schedules(tmp_path: Path, schedule: str) -> None:
    text = f"""\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {{name: demo}}
        spec:
          schedule: "{schedule}"
          tasks:
            - {{id: a, executor: transform, with: {{value: 1}}}}
        """
    assert diagnose(tmp_path, text) == []


def test_invalid_schedule(tmp_path: Path) -> None:
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              schedule: "61 * * * *"
              tasks:
                - {id: a, executor: transform, with: {value: 1}}
            """,
        )
    )
    assert where(found) == ("schedule", 5, 13)


# --- Several errors, several files ------------------------------------------------------


def test_every_error_of_a_file_is_reported_in_order(tmp_path: Path) -> None:
    diagnostics = diagnose(
        tmp_path,
        """\
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {name: demo, owner: me}
        spec:
          schedule: "every day"
          params:
            n: {type: integer, default: many}
          tasks:
            - id: fetch
              executor: htp
              with: {url: "https://x"}
            - id: shape
              executor: transform
              needs: [fetch, missing]
              with:
                value: "{{ tasks.fetch.output | nope }}"
            - id: fetch
              executor: transform
              with: {value: 1}
            - id: report
              executor: transform
              with: {value: "{{ params.m }}"}
        """,
    )
    assert [where(d) for d in diagnostics] == [
        ("unknown-field", 3, 24),
        ("schedule", 5, 13),
        ("param-default", 7, 33),
        ("unknown-executor", 10, 17),
        ("unknown-task", 14, 22),
        ("unknown-filter", 16, 16),
        ("duplicate-task", 17, 11),
        ("unknown-param", 22, 21),
    ]


PIPELINE = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  tasks:
    - {{id: a, executor: transform, with: {{value: 1}}}}
"""


def test_two_files_defining_the_same_pipeline(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(PIPELINE.format(name="demo"), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(PIPELINE.format(name="demo"), encoding="utf-8")
    first, second = check_paths([str(tmp_path)], jobs=1)
    assert first.ok
    found = single(list(second.diagnostics))
    assert where(found) == ("duplicate-pipeline", 3, 18)
    assert found.path == str(tmp_path / "b.yaml")
    assert str(tmp_path / "a.yaml") in found.message


def test_example_pipelines_are_valid() -> None:
    results = check_paths([str(EXAMPLES)], jobs=1)
    assert len(results) == len(list(EXAMPLES.glob("*.yaml"))) >= 3
    assert [d.format() for r in results for d in r.diagnostics] == []


def test_folder_is_searched_recursively_for_yaml_files_only(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "top.yaml").write_text(PIPELINE.format(name="top"), encoding="utf-8")
    (tmp_path / "sub" / "inner.yml").write_text(PIPELINE.format(name="inner"), encoding="utf-8")
    (tmp_path / "sub" / "deeper" / "broken.yaml").write_text("a: [1\n", encoding="utf-8")
    (tmp_path / "sub" / "notes.txt").write_text("not: [yaml\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# not a pipeline: {\n", encoding="utf-8")
    results = check_paths([str(tmp_path)], jobs=1)
    assert [r.path for r in results] == sorted(
        str(tmp_path / p) for p in ("top.yaml", "sub/inner.yml", "sub/deeper/broken.yaml")
    )
    outcome = {Path(r.path).name: [d.rule for d in r.diagnostics] for r in results}
    assert outcome == {"top.yaml": [], "inner.yml": [], "broken.yaml": ["yaml-syntax"]}


def test_parallel_check_gives_the_same_result_as_serial(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gen_pipelines import generate
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    folder = tmp_path / "many"
    generate(folder, 250)
    extra = folder / "extra"
    extra.mkdir()
    shutil.copy(folder / "bench-0007.yaml", extra / "copy-of-7.yaml")
    text = (folder / "bench-0100.yaml").read_text(encoding="utf-8")
    (extra / "broken-100.yaml").write_text(
        text.replace("executor: llm", "executor: lml"), encoding="utf-8"
    )
    (extra / "not-yaml.yaml").write_text("spec: [\n", encoding="utf-8")
    assert validate.PARALLEL_THRESHOLD <= 253  # so jobs=2 really uses worker processes

    serial = check_paths([str(folder)], jobs=1)
    parallel = check_paths([str(folder)], jobs=2)

    assert parallel == serial
    assert len(serial) == 253
    invalid = {Path(r.path).name: [d.rule for d in r.diagnostics] for r in serial if not r.ok}
    assert invalid == {
        "broken-100.yaml": ["unknown-executor", "duplicate-pipeline"],
        "copy-of-7.yaml": ["duplicate-pipeline"],
        "not-yaml.yaml": ["yaml-syntax"],
    }


def test_validating_leaves_the_shipped_schemas_unchanged(tmp_path: Path) -> None:
    diagnose(tmp_path, PIPELINE.format(name="Not_Valid"))  # takes both the fast and full check
    for name in ("pipeline", "executors/transform"):
        shipped = ROOT / "flowctl" / "schemas" / f"{name}.schema.json"
        assert load_schema(name) == json.loads(shipped.read_text(encoding="utf-8"))


def test_a_model_to_import_must_be_written_literally(tmp_path: Path) -> None:
    """validate's `model:` names code to import: data from upstream must not choose it."""
    found = single(
        diagnose(
            tmp_path,
            """\
            apiVersion: flowctl/v1
            kind: Pipeline
            metadata: {name: demo}
            spec:
              tasks:
                - {id: a, executor: transform, with: {value: "os:system"}}
                - id: b
                  executor: validate
                  with: {data: 1, model: "{{ tasks.a.output }}"}
            """,
        )
    )
    assert where(found) == ("not-literal", 9, 30)
