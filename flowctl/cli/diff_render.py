"""`flowctl diff` output: text for a terminal, Markdown for a pull-request comment, JSON."""

from __future__ import annotations

import json
from typing import Any

from flowctl.engine.spec.diff import Change, FieldChange, PipelineDiff

# Hidden in the comment: CI tools (e.g. a sticky-comment action) find and replace it.
MARKDOWN_MARKER = "<!-- flowctl-diff -->"
MAX_VALUE = 120


def summary(diffs: list[PipelineDiff]) -> str:
    counts = {change: sum(1 for d in diffs if d.change is change) for change in Change}
    parts = [
        f"{counts[c]} {c}" for c in (Change.ADDED, Change.CHANGED, Change.REMOVED) if counts[c]
    ]
    if not parts:
        return f"no changes ({len(diffs)} pipeline(s) unchanged)"
    return ", ".join(parts) + f", {counts[Change.UNCHANGED]} unchanged"


def render_json(diffs: list[PipelineDiff], against: str) -> str:
    document = {
        "against": against,
        "changed": any(d.change is not Change.UNCHANGED for d in diffs),
        "pipelines": [d.as_dict() for d in diffs],
    }
    return json.dumps(document, indent=2, ensure_ascii=False, default=str)


def render_text(diffs: list[PipelineDiff], against: str) -> str:
    lines: list[str] = []
    for diff in diffs:
        if diff.change is Change.UNCHANGED:
            continue
        where = f"  ({diff.path})" if diff.path else ""
        lines.append(f"{_SIGN[diff.change]} pipeline {diff.name}: {diff.change}{where}")
        for field in diff.fields:
            lines.append(f"    {_field_text(field)}")
        for task in diff.tasks:
            if diff.change is Change.CHANGED or task.change is Change.CHANGED:
                lines.append(f"  {_SIGN[task.change]} task {task.id} ({task.executor})")
            for field in task.fields:
                lines.append(f"      {_field_text(field)}")
    lines.append(f"against {against}: {summary(diffs)}")
    return "\n".join(lines)


def render_markdown(diffs: list[PipelineDiff], against: str) -> str:
    changed = [d for d in diffs if d.change is not Change.UNCHANGED]
    lines = [MARKDOWN_MARKER, f"### flowctl diff against `{_code(against)}`", ""]
    if not changed:
        lines.append(f"No pipeline changes: {summary(diffs)}.")
        return "\n".join(lines) + "\n"
    lines += [f"**{summary(diffs)}**", "", "| pipeline | change | tasks |", "|---|---|---|"]
    for diff in changed:
        lines.append(f"| `{diff.name}` | {diff.change} | {_task_counts(diff)} |")
    for diff in changed:
        lines += ["", f"#### `{diff.name}` — {diff.change}"]
        if diff.path:
            lines.append(f"File: `{_code(diff.path)}`")
        if diff.change is not Change.CHANGED:
            ids = ", ".join(f"`{t.id}` ({t.executor})" for t in diff.tasks)
            lines.append(f"Tasks: {ids}")
            continue
        if diff.fields:
            lines += ["", "Pipeline fields:", "", *_field_table(diff.fields)]
        for task in diff.tasks_with(Change.ADDED):
            lines.append(f"- task `{task.id}` **added** (`{task.executor}`)")
        for task in diff.tasks_with(Change.REMOVED):
            lines.append(f"- task `{task.id}` **removed** (`{task.executor}`)")
        for task in diff.tasks_with(Change.CHANGED):
            lines += ["", f"Task `{task.id}` (`{task.executor}`) changed:", ""]
            lines += _field_table(task.fields)
    return "\n".join(lines) + "\n"


_SIGN = {Change.ADDED: "+", Change.REMOVED: "-", Change.CHANGED: "~", Change.UNCHANGED: " "}


def _task_counts(diff: PipelineDiff) -> str:
    if diff.change is not Change.CHANGED:
        return f"{len(diff.tasks)} {diff.change}"
    counts = [
        f"{len(diff.tasks_with(change))} {change}"
        for change in (Change.ADDED, Change.REMOVED, Change.CHANGED)
        if diff.tasks_with(change)
    ]
    return ", ".join(counts) or "pipeline fields only"


def _field_text(field: FieldChange) -> str:
    old = "(none)" if field.missing_old else _value(field.old)
    new = "(none)" if field.missing_new else _value(field.new)
    return f"{field.field}: {old} → {new}"


def _field_table(fields: tuple[FieldChange, ...]) -> list[str]:
    rows = ["| field | before | after |", "|---|---|---|"]
    for field in fields:
        old = "—" if field.missing_old else f"`{_cell(_value(field.old))}`"
        new = "—" if field.missing_new else f"`{_cell(_value(field.new))}`"
        rows.append(f"| `{field.field}` | {old} | {new} |")
    return rows


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _cell(text: str) -> str:
    """Safe inside a table cell's code span: no pipe, no backtick, no line break."""
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def _code(text: str) -> str:
    return text.replace("`", "'")
