"""IR vs IR: what a change to a pipeline means (tasks added, removed, changed, and which
fields), not which lines of its file moved.

Both sides are compiled IRs, so defaults are applied and references became `needs`:
moving a task in the file, reformatting or adding a comment changes nothing here, and
raising `defaults.retries` shows as a change of `retries` on every task it reaches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Fields of a task compared one by one; `with` is compared key by key.
TASK_FIELDS = (
    "executor",
    "description",
    "needs",
    "when",
    "for_each",
    "retries",
    "retry_delay",
    "timeout",
    "on_failure",
)
# Fields of the pipeline itself; `params` is compared param by param. `edges` and
# `order` follow from the tasks' `needs`, and `digest` from everything.
PIPELINE_FIELDS = (
    "irVersion",
    "description",
    "labels",
    "version",
    "schedule",
    "max_parallel",
    "output",
)


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str  # e.g. "retries", "with.model", "params.document"
    old: Any
    new: Any
    missing_old: bool = False  # the key did not exist before (distinct from a null value)
    missing_new: bool = False

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"field": self.field}
        if not self.missing_old:
            entry["old"] = self.old
        if not self.missing_new:
            entry["new"] = self.new
        return entry


@dataclass(frozen=True, slots=True)
class TaskDiff:
    id: str
    change: Change
    executor: str
    fields: tuple[FieldChange, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.id, "change": str(self.change)}
        entry["executor"] = self.executor
        if self.change is Change.CHANGED:
            entry["fields"] = [field.as_dict() for field in self.fields]
        return entry


@dataclass(frozen=True, slots=True)
class PipelineDiff:
    name: str
    change: Change
    old_digest: str | None
    new_digest: str | None
    path: str | None = None  # the file on the new side (or the old one when removed)
    fields: tuple[FieldChange, ...] = ()
    tasks: tuple[TaskDiff, ...] = ()  # added, removed and changed tasks only

    def tasks_with(self, change: Change) -> list[TaskDiff]:
        return [task for task in self.tasks if task.change is change]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "change": str(self.change),
            "path": self.path,
            "old_digest": self.old_digest,
            "new_digest": self.new_digest,
            "fields": [field.as_dict() for field in self.fields],
            "tasks": [task.as_dict() for task in self.tasks],
        }


def diff_pipeline(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, path: str | None = None
) -> PipelineDiff:
    """The semantic difference between two IRs of one pipeline (None: it does not exist)."""
    if old is None and new is None:
        raise ValueError("nothing to compare")
    name: str = (new or old or {})["name"]
    old_digest = old["digest"] if old else None
    new_digest = new["digest"] if new else None
    if old is None or new is None:
        side = new if new is not None else old
        assert side is not None
        change = Change.ADDED if old is None else Change.REMOVED
        every = tuple(TaskDiff(t["id"], change, t["executor"]) for t in side["tasks"])
        return PipelineDiff(name, change, old_digest, new_digest, path, (), every)
    fields = [*_compare(old, new, PIPELINE_FIELDS, "")]
    fields += _compare_mapping(old.get("params") or {}, new.get("params") or {}, "params.")
    old_tasks = {task["id"]: task for task in old["tasks"]}
    new_tasks = {task["id"]: task for task in new["tasks"]}
    tasks: list[TaskDiff] = []
    for task_id in sorted(old_tasks.keys() | new_tasks.keys()):
        before, after = old_tasks.get(task_id), new_tasks.get(task_id)
        if before is None:
            assert after is not None
            tasks.append(TaskDiff(task_id, Change.ADDED, after["executor"]))
        elif after is None:
            tasks.append(TaskDiff(task_id, Change.REMOVED, before["executor"]))
        else:
            changed = [*_compare(before, after, TASK_FIELDS, "")]
            changed += _compare_mapping(before.get("with") or {}, after.get("with") or {}, "with.")
            if changed:
                tasks.append(TaskDiff(task_id, Change.CHANGED, after["executor"], tuple(changed)))
    unchanged = not fields and not tasks and old_digest == new_digest
    change = Change.UNCHANGED if unchanged else Change.CHANGED
    return PipelineDiff(name, change, old_digest, new_digest, path, tuple(fields), tuple(tasks))


def diff_sets(
    old: Mapping[str, Mapping[str, Any]],
    new: Mapping[str, Mapping[str, Any]],
    paths: Mapping[str, str] | None = None,
) -> list[PipelineDiff]:
    """Every pipeline of either side, by name; `paths` names the file of each pipeline."""
    paths = paths or {}
    return [
        diff_pipeline(old.get(name), new.get(name), paths.get(name))
        for name in sorted(old.keys() | new.keys())
    ]


def _compare(
    old: Mapping[str, Any], new: Mapping[str, Any], names: tuple[str, ...], prefix: str
) -> list[FieldChange]:
    return [
        FieldChange(prefix + name, old.get(name), new.get(name))
        for name in names
        if not _same(old.get(name), new.get(name))
    ]


def _compare_mapping(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str
) -> list[FieldChange]:
    changes = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if key in old and key in new and _same(before, after):
            continue
        changes.append(FieldChange(prefix + key, before, after, key not in old, key not in new))
    return changes


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON: Python says `1 == True == 1.0`, the IR's JSON tells them apart."""
    return old is new or _canonical(old) == _canonical(new)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
