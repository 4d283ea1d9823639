"""`flowctl diff`: the semantic change per pipeline (IR vs IR), against the registry or
a git ref, as text, Markdown and JSON; exit 0 unchanged, 3 changed, 1 invalid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.diff import Change, diff_pipeline
from flowctl.engine.spec.load import load_text

from .helpers import INVALID, GitRepo, flowctl, pipeline

BEFORE = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: invoices}
spec:
  params:
    document: {type: string}
  schedule: "0 6 * * *"
  tasks:
    - id: read
      executor: transform
      with: {value: "{{ params.document }}"}
    - id: extract
      executor: transform
      retries: 1
      with: {value: "{{ tasks.read.output }}"}
    - id: old
      executor: transform
      with: {value: 1}
"""

AFTER = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: invoices}
spec:
  params:
    document: {type: string}
    lang: {type: string, default: eng}
  schedule: "0 7 * * *"
  tasks:
    - id: extract            # moved up, and changed
      executor: transform
      retries: 3
      needs: [check]
      with: {value: "{{ tasks.read.output }} in {{ params.lang }}"}
    - id: read
      executor: transform
      with: {value: "{{ params.document }}"}
    - id: check
      executor: validate
      with: {data: "{{ tasks.read.output }}", schema: {type: string}}
"""


def ir(text: str) -> dict[str, Any]:
    return compile_document(load_text(text))


def test_the_semantic_change_of_one_pipeline() -> None:
    diff = diff_pipeline(ir(BEFORE), ir(AFTER), "invoices.yaml")
    assert diff.change is Change.CHANGED
    assert [(f.field, f.old, f.new) for f in diff.fields] == [
        ("schedule", "0 6 * * *", "0 7 * * *"),
        ("params.lang", None, {"type": "string", "default": "eng"}),
    ]
    assert diff.fields[1].missing_old and not diff.fields[1].missing_new
    assert [(t.id, t.change, t.executor) for t in diff.tasks] == [
        ("check", Change.ADDED, "validate"),
        ("extract", Change.CHANGED, "transform"),
        ("old", Change.REMOVED, "transform"),
    ]
    extract = {f.field: (f.old, f.new) for f in diff.tasks[1].fields}
    assert extract == {
        "needs": (["read"], ["check", "read"]),
        "retries": (1, 3),
        "with.value": ("{{ tasks.read.output }}", "{{ tasks.read.output }} in {{ params.lang }}"),
    }


def test_order_comments_and_layout_are_not_changes() -> None:
    shuffled = BEFORE.replace("metadata: {name: invoices}", "metadata:\n  name: invoices  # hi")
    tasks_at = shuffled.index("    - id: read")
    old_at = shuffled.index("    - id: old")
    shuffled = shuffled[:tasks_at] + shuffled[old_at:] + shuffled[tasks_at:old_at]
    diff = diff_pipeline(ir(BEFORE), ir(shuffled))
    assert diff.change is Change.UNCHANGED and diff.tasks == () and diff.fields == ()


def test_json_types_are_told_apart() -> None:
    one = ir(BEFORE.replace("with: {value: 1}", "with: {value: true}"))
    diff = diff_pipeline(ir(BEFORE), one)
    assert [(t.id, [(f.field, f.old, f.new) for f in t.fields]) for t in diff.tasks] == [
        ("old", [("with.value", 1, True)])
    ]


def test_added_and_removed_pipelines() -> None:
    added = diff_pipeline(None, ir(BEFORE))
    removed = diff_pipeline(ir(BEFORE), None)
    assert added.change is Change.ADDED and removed.change is Change.REMOVED
    assert [t.id for t in added.tasks] == ["old", "read", "extract"]  # the IR's order
    assert added.old_digest is None and removed.new_digest is None


def test_diff_against_a_git_ref_as_a_pull_request_comment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write("pipelines/invoices.yaml", BEFORE)
    repo.write("pipelines/gone.yaml", pipeline("gone"))
    repo.write("pipelines/same.yaml", pipeline("same"))
    repo.write("README.md", "not a pipeline\n")
    repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("pipelines/invoices.yaml", AFTER)
    (repo.root / "pipelines/gone.yaml").unlink()
    repo.write("pipelines/sub/new.yaml", pipeline("fresh"))
    repo.commit("change")
    monkeypatch.chdir(repo.root)

    done = flowctl("diff", "pipelines", "--against", "main", "--format", "markdown")
    assert done.code == 3, done.err
    comment = done.out
    assert comment.startswith("<!-- flowctl-diff -->\n### flowctl diff against `main`")
    assert "**1 added, 1 changed, 1 removed, 1 unchanged**" in comment
    assert "| `invoices` | changed | 1 added, 1 removed, 1 changed |" in comment
    assert "| `fresh` | added | 2 added |" in comment
    assert "| `gone` | removed | 2 removed |" in comment
    assert '| `schedule` | `"0 6 * * *"` | `"0 7 * * *"` |' in comment
    assert "| `params.lang` | — | " in comment
    assert "| `retries` | `1` | `3` |" in comment
    assert "- task `check` **added** (`validate`)" in comment
    assert "- task `old` **removed** (`transform`)" in comment
    assert "File: `pipelines/sub/new.yaml`" in comment
    assert "same" not in comment.split("| pipeline |")[1]

    as_json = flowctl("diff", "pipelines", "--against", "main", "--format", "json")
    assert as_json.code == 3
    by_name = {p["name"]: p for p in json.loads(as_json.out)["pipelines"]}
    assert {n: p["change"] for n, p in by_name.items()} == {
        "fresh": "added",
        "gone": "removed",
        "invoices": "changed",
        "same": "unchanged",
    }
    assert by_name["gone"]["path"] == "pipelines/gone.yaml"

    one_file = flowctl("diff", "pipelines/same.yaml", "--against", "HEAD~1")
    assert one_file.code == 0 and "no changes (1 pipeline(s) unchanged)" in one_file.out
    text = flowctl("diff", "pipelines/invoices.yaml", "--against", "main")
    assert text.code == 3
    assert "~ pipeline invoices: changed" in text.out
    assert "      retries: 1 → 3" in text.out


def test_diff_against_the_registry(history_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "a.yaml").write_text(pipeline("a"))
    (folder / "b.yaml").write_text(pipeline("b"))
    url = ("--database-url", history_url)

    first = flowctl("diff", str(folder), *url)
    assert first.code == 3 and "against registry: 2 added, 0 unchanged" in first.out
    assert flowctl("apply", str(folder), *url).code == 0
    assert flowctl("diff", str(folder), *url).code == 0

    (folder / "a.yaml").write_text(pipeline("a", greeting="hey"))
    changed = flowctl("diff", str(folder), "--format", "json", *url)
    assert changed.code == 3
    (a,) = [p for p in json.loads(changed.out)["pipelines"] if p["change"] != "unchanged"]
    assert a["tasks"] == [
        {
            "id": "greet",
            "change": "changed",
            "executor": "transform",
            "fields": [
                {
                    "field": "with.value",
                    "old": "hello {{ params.who }}",
                    "new": "hey {{ params.who }}",
                }
            ],
        }
    ]

    (folder / "a.yaml").write_text(pipeline("a"))
    only_a = flowctl("diff", str(folder / "a.yaml"), *url)  # b is not in PATHS: not listed
    assert only_a.code == 0, only_a.out
    pruning = flowctl("diff", str(folder / "a.yaml"), "--prune", *url)
    assert pruning.code == 3 and "- pipeline b: removed" in pruning.out


def test_invalid_input_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.yaml").write_text(INVALID)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    invalid = flowctl("diff", str(tmp_path), "--database-url", url)
    assert invalid.code == 1 and "[unknown-executor]" in invalid.err

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.yaml").write_text(pipeline("a"))
    not_git = flowctl("diff", str(plain), "--against", "main")
    assert not_git.code == 1 and "not inside a git work tree" in not_git.err

    repo = GitRepo(tmp_path / "repo")
    repo.write("p/a.yaml", INVALID)
    repo.commit("broken at base")
    repo.write("p/a.yaml", pipeline("a"))
    monkeypatch.chdir(repo.root)
    unknown = flowctl("diff", "p", "--against", "no-such-branch")
    assert unknown.code == 1 and "unknown git ref 'no-such-branch'" in unknown.err
    broken_base = flowctl("diff", "p", "--against", "HEAD")
    assert broken_base.code == 1 and "nothing compared (files at HEAD)" in broken_base.err
