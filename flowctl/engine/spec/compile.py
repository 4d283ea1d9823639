"""Validated document → TaskFlow IR: defaults applied, edges, topological order, digest.

The IR is a plain JSON document (schema: flowctl/schemas/taskflow.schema.json) that
everything downstream consumes: the local run, the workers, `apply` and Airflow.
Its digest is the sha256 of its canonical JSON, so comments, key order, whitespace and
the order of tasks in the file do not change it.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from typing import Any

from flowctl.engine.spec.load import Document
from flowctl.engine.spec.templating import analyze, iter_templates

IR_VERSION = "taskflow/v1"
DEFAULT_RETRIES = 0
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_MAX_PARALLEL = 32

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float) -> float:
    """ "500ms", "5s", "2m", "1h" or a number of seconds → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def compile_document(document: Document) -> dict[str, Any]:
    """The IR of a document that `validate_document` found valid."""
    data = document.data
    metadata, spec = data["metadata"], data["spec"]
    defaults = spec.get("defaults", {})
    tasks = [_compile_task(task, defaults) for task in spec["tasks"]]
    order = _topological_order(tasks)
    by_id = {task["id"]: task for task in tasks}
    ir: dict[str, Any] = {
        "irVersion": IR_VERSION,
        "name": metadata["name"],
        "description": metadata.get("description"),
        "labels": metadata.get("labels", {}),
        "version": metadata.get("version"),
        "params": spec.get("params", {}),
        "schedule": spec.get("schedule"),
        "max_parallel": spec.get("max_parallel", DEFAULT_MAX_PARALLEL),
        "tasks": [by_id[task_id] for task_id in order],
        "edges": [
            [need, task["id"]] for task in (by_id[i] for i in order) for need in task["needs"]
        ],
        "order": order,
        "output": spec.get("output"),
    }
    ir["digest"] = digest(ir)
    return ir


def digest(ir: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the IR (without its digest)."""
    body = {key: value for key, value in ir.items() if key != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _compile_task(task: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    needs = set(task.get("needs", []))
    for field in ("with", "when", "for_each"):
        for _, source in iter_templates(task.get(field)):
            needs |= analyze(source).task_refs
    timeout = task.get("timeout", defaults.get("timeout"))
    when = task.get("when")
    return {
        "id": task["id"],
        "executor": task["executor"],
        "description": task.get("description"),
        "with": task.get("with", {}),
        "needs": sorted(needs),
        "when": None if when is True else when,
        "for_each": task.get("for_each"),
        "retries": task.get("retries", defaults.get("retries", DEFAULT_RETRIES)),
        "retry_delay": parse_duration(
            task.get("retry_delay", defaults.get("retry_delay", DEFAULT_RETRY_DELAY))
        ),
        "timeout": None if timeout is None else parse_duration(timeout),
        "on_failure": task.get("on_failure", "fail"),
    }


def _topological_order(tasks: list[dict[str, Any]]) -> list[str]:
    """Kahn's algorithm; ties broken by task id so the order does not depend on the file."""
    waiting = {task["id"]: len(task["needs"]) for task in tasks}
    dependents: dict[str, list[str]] = {task["id"]: [] for task in tasks}
    for task in tasks:
        for need in task["needs"]:
            dependents[need].append(task["id"])
    ready = [task_id for task_id, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        task_id = heapq.heappop(ready)
        order.append(task_id)
        for dependent in dependents[task_id]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, dependent)
    if len(order) != len(tasks):  # validation rejects cycles; this guards direct callers
        raise ValueError("the pipeline has a dependency cycle")
    return order
