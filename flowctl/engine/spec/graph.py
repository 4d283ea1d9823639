"""TaskFlow IR → Mermaid or Graphviz DOT text."""

from __future__ import annotations

import json
from typing import Any


def _label(task: dict[str, Any]) -> str:
    extras = []
    if task.get("for_each") is not None:
        extras.append("for_each")
    if task.get("when") is not None:
        extras.append("when")
    suffix = f" [{', '.join(extras)}]" if extras else ""
    return f"{task['id']}: {task['executor']}{suffix}"


# Lowercase words that Mermaid reads as syntax, not as a node id ("end" breaks a flowchart).
_MERMAID_KEYWORDS = frozenset(
    {
        "end",
        "graph",
        "flowchart",
        "subgraph",
        "style",
        "class",
        "click",
        "call",
        "href",
        "direction",
    }
)


def _mermaid_id(task_id: str) -> str:
    # Task ids are lowercase, so a capitalized keyword cannot collide with another task.
    return task_id.capitalize() if task_id in _MERMAID_KEYWORDS else task_id


def to_mermaid(ir: dict[str, Any]) -> str:
    lines = ["flowchart TD"]
    for task in ir["tasks"]:
        label = _label(task).replace('"', "#quot;")
        lines.append(f'    {_mermaid_id(task["id"])}["{label}"]')
    for source, target in ir["edges"]:
        lines.append(f"    {_mermaid_id(source)} --> {_mermaid_id(target)}")
    return "\n".join(lines)


def to_dot(ir: dict[str, Any]) -> str:
    lines = [f"digraph {json.dumps(ir['name'])} {{", "    rankdir=TB;", "    node [shape=box];"]
    for task in ir["tasks"]:
        lines.append(f"    {json.dumps(task['id'])} [label={json.dumps(_label(task))}];")
    for source, target in ir["edges"]:
        lines.append(f"    {json.dumps(source)} -> {json.dumps(target)};")
    lines.append("}")
    return "\n".join(lines)
