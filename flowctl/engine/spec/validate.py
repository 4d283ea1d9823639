"""Document → every diagnostic it deserves: JSON Schema, executors' `with:` blocks, semantics.

The schema check runs in two steps: a compiled yes/no check (fastjsonschema, ~20x
faster than walking the schema) that passes nearly every file, and only for a file that
fails it, jsonschema's full walk that explains every error with its path.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
from jinja2 import TemplateSyntaxError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from flowctl.engine.executors.base import is_known, known_executor_names, with_schema
from flowctl.engine.spec.load import Document, LoadError, iter_pipeline_files, load_file
from flowctl.engine.spec.templating import (
    CONTEXT_NAMES,
    analyze,
    is_template,
    iter_templates,
)
from flowctl.errors import Diagnostic
from flowctl.schemas import load_schema

Keys = tuple[str | int, ...]

SCHEDULE_PRESETS = frozenset(
    {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
)
_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}
_HINTS = {
    ("metadata", "name"): "use lowercase letters, digits and '-', starting with a letter",
    ("id",): "use lowercase letters, digits and '_', starting with a letter or '_'",
}


@dataclass(slots=True)
class CheckedFile:
    """One file's outcome: its document (None when it did not load) and diagnostics."""

    path: str
    document: Document | None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    @property
    def pipeline_name(self) -> str | None:
        if self.document is None or not isinstance(self.document.data, dict):
            return None
        name = (self.document.data.get("metadata") or {}).get("name")
        return name if isinstance(name, str) else None


def check_file(path: str) -> CheckedFile:
    try:
        document = load_file(path)
    except LoadError as error:
        return CheckedFile(path, None, [error.diagnostic])
    return CheckedFile(path, document, validate_document(document))


def check_paths(paths: Sequence[str]) -> list[CheckedFile]:
    """Checks every pipeline file under `paths`, then names defined by two files."""
    results = [check_file(path) for path in iter_pipeline_files(paths)]
    return with_duplicate_names(results)


def with_duplicate_names(results: list[CheckedFile]) -> list[CheckedFile]:
    first_seen: dict[str, CheckedFile] = {}
    for result in results:
        name = result.pipeline_name
        if name is None:
            continue
        if name in first_seen:
            assert result.document is not None
            result.diagnostics.append(
                result.document.diagnostic(
                    ("metadata", "name"),
                    f"pipeline {name!r} is already defined in {first_seen[name].path}",
                    "duplicate-pipeline",
                    "pipeline names are unique in a repository",
                )
            )
        else:
            first_seen[name] = result
    return results


def validate_document(document: Document) -> list[Diagnostic]:
    data = document.data
    if not isinstance(data, dict):
        return [document.diagnostic((), "a pipeline file must be a YAML mapping", "type")]
    diagnostics = list(_schema_errors(document, data, "pipeline", ()))
    spec = data.get("spec")
    if isinstance(spec, dict):
        diagnostics.extend(_SemanticCheck(document, spec).run())
    diagnostics.sort(key=lambda d: (d.line, d.column))
    return diagnostics


# --- JSON Schema ------------------------------------------------------------------


@functools.cache
def _fast_validator(name: str) -> Any:
    # The schemas use only keywords whose meaning draft-07 and 2020-12 share.
    schema = {**load_schema(name), "$schema": "http://json-schema.org/draft-07/schema#"}
    return fastjsonschema.compile(schema)


@functools.cache
def _full_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name))


def _schema_errors(
    document: Document, instance: Any, name: str, base: Keys, *, templated: bool = False
) -> Iterator[Diagnostic]:
    try:
        _fast_validator(name)(instance)
        return
    except fastjsonschema.JsonSchemaException:
        pass
    for error in _full_validator(name).iter_errors(instance):
        if templated and _is_template_error(error):
            continue
        yield _explain(document, error, base)


def _is_template_error(error: ValidationError) -> bool:
    """A templated value stands for any type: only its rendered value can be checked."""
    if isinstance(error.instance, str) and is_template(error.instance):
        return True
    return bool(error.context) and all(_is_template_error(e) for e in error.context)


def _explain(document: Document, error: ValidationError, base: Keys) -> Diagnostic:
    if error.validator in ("oneOf", "anyOf") and error.context:
        # Explain the branch meant for this value's type, not the branches of other types.
        relevant = [e for e in error.context if e.validator != "type"]
        if relevant:
            error = best_match(relevant)
    keys: Keys = (*base, *error.absolute_path)
    where = _dotted(keys)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        key = extra[0] if extra else ""
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
        return document.diagnostic(
            (*keys, key), f"unknown field {key!r} in {where or 'the document'}",
            "unknown-field", hint, at_key=True,
        )
    if error.validator == "required":
        return document.diagnostic(keys, f"{where or 'document'}: {error.message}", "required")
    if error.validator == "type":
        return document.diagnostic(
            keys, f"{where}: expected {error.validator_value}, got {_json_type(error.instance)}",
            "type",
        )
    hint = _HINTS.get(tuple(k for k in keys[-2:] if isinstance(k, str))) or _HINTS.get(
        tuple(k for k in keys[-1:] if isinstance(k, str))
    )
    return document.diagnostic(keys, f"{where}: {error.message}", "schema", hint)


def _dotted(keys: Keys) -> str:
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


# --- Semantics ----------------------------------------------------------------------


class _SemanticCheck:
    """Checks that need the whole pipeline: references, names, cycles, executors."""

    def __init__(self, document: Document, spec: dict[str, Any]) -> None:
        self.document = document
        self.spec = spec
        self.diagnostics: list[Diagnostic] = []
        params = spec.get("params")
        self.params = params if isinstance(params, dict) else {}
        self.tasks: dict[str, tuple[int, dict[str, Any]]] = {}
        self.deps: dict[str, set[str]] = {}

    def error(self, keys: Keys, message: str, rule: str, hint: str | None = None,
              *, at_key: bool = False) -> None:
        self.diagnostics.append(self.document.diagnostic(keys, message, rule, hint, at_key=at_key))

    def run(self) -> list[Diagnostic]:
        self.check_params()
        self.check_schedule()
        tasks = self.spec.get("tasks")
        if isinstance(tasks, list):
            self.collect_tasks(tasks)
            for task_id, (index, task) in self.tasks.items():
                self.check_task(task_id, index, task)
            self.check_cycles()
        if "output" in self.spec:
            self.check_templates(self.spec["output"], ("spec", "output"), None, allow_item=False)
        return self.diagnostics

    def check_params(self) -> None:
        for name, param in self.params.items():
            if not isinstance(param, dict) or param.get("type") not in _PARAM_TYPES:
                continue
            expected = param["type"]
            for key in ("default",) if "default" in param else ():
                if not _matches(param[key], expected):
                    self.error(
                        ("spec", "params", name, key),
                        f"default of param {name!r} must be {expected}, "
                        f"got {_json_type(param[key])}",
                        "param-default",
                    )
                elif isinstance(param.get("enum"), list) and param[key] not in param["enum"]:
                    self.error(
                        ("spec", "params", name, key),
                        f"default of param {name!r} is not one of its enum values",
                        "param-default",
                    )

    def check_schedule(self) -> None:
        schedule = self.spec.get("schedule")
        if not isinstance(schedule, str) or schedule in SCHEDULE_PRESETS:
            return
        from croniter import croniter  # imported only when a file has a schedule

        if schedule.startswith("@") or not croniter.is_valid(schedule):
            self.error(
                ("spec", "schedule"), f"invalid schedule {schedule!r}", "schedule",
                "use a 5-field cron expression or one of " + ", ".join(sorted(SCHEDULE_PRESETS)),
            )

    def collect_tasks(self, tasks: list[Any]) -> None:
        for index, task in enumerate(tasks):
            if not isinstance(task, dict) or not isinstance(task.get("id"), str):
                continue
            task_id = task["id"]
            if task_id in self.tasks:
                first_line = self.document.position(("spec", "tasks", self.tasks[task_id][0]))[0]
                self.error(
                    ("spec", "tasks", index, "id"), f"duplicate task id {task_id!r}",
                    "duplicate-task", f"first defined on line {first_line}",
                )
                continue
            self.tasks[task_id] = (index, task)
            self.deps[task_id] = set()

    def check_task(self, task_id: str, index: int, task: dict[str, Any]) -> None:
        keys: Keys = ("spec", "tasks", index)
        executor = task.get("executor")
        if isinstance(executor, str) and executor:
            if not is_known(executor):
                close = difflib.get_close_matches(executor, known_executor_names(), n=1)
                self.error(
                    (*keys, "executor"), f"unknown executor {executor!r}", "unknown-executor",
                    f"did you mean {close[0]!r}?" if close
                    else "known executors: " + ", ".join(known_executor_names()),
                )
            else:
                block = task.get("with", {})
                if isinstance(block, dict):
                    self.check_with(executor, block, (*keys, "with"))
        needs = task.get("needs")
        if isinstance(needs, list):
            for position, need in enumerate(needs):
                if not isinstance(need, str):
                    continue
                if need == task_id:
                    self.error((*keys, "needs", position), f"task {task_id!r} needs itself",
                               "cycle")
                elif need not in self.tasks:
                    self.unknown_task((*keys, "needs", position), need)
                else:
                    self.deps[task_id].add(need)
        has_items = "for_each" in task
        for field_name in ("when", "for_each"):
            value = task.get(field_name)
            if isinstance(value, str) and not is_template(value):
                self.error(
                    (*keys, field_name), f"{field_name} must be an expression, got {value!r}",
                    "not-an-expression", f'write it as "{{{{ {value} }}}}"',
                )
        self.check_templates(task.get("when"), (*keys, "when"), task_id, allow_item=False)
        self.check_templates(task.get("for_each"), (*keys, "for_each"), task_id,
                             allow_item=False)
        self.check_templates(task.get("with"), (*keys, "with"), task_id, allow_item=has_items)

    def check_with(self, executor: str, block: dict[str, Any], keys: Keys) -> None:
        schema_name = f"executors/{executor}"
        try:
            load_schema(schema_name)
        except FileNotFoundError:  # a plugin executor: validate with its declared schema
            for error in Draft202012Validator(with_schema(executor)).iter_errors(block):
                if not _is_template_error(error):
                    self.diagnostics.append(_explain(self.document, error, keys))
            return
        self.diagnostics.extend(
            _schema_errors(self.document, block, schema_name, keys, templated=True)
        )

    def check_templates(self, value: Any, keys: Keys, task_id: str | None,
                        *, allow_item: bool) -> None:
        if value is None:
            return
        for where, source in iter_templates(value, keys):
            try:
                analysis = analyze(source)
            except TemplateSyntaxError as error:
                self.syntax_error(where, error)
                continue
            allowed = CONTEXT_NAMES if allow_item else CONTEXT_NAMES - {"item"}
            for name in sorted(analysis.names - allowed):
                hint = ("`item` exists only inside a task with for_each" if name == "item"
                        else "expressions can read " + ", ".join(sorted(CONTEXT_NAMES)))
                self.error(where, f"unknown name {name!r} in expression {source!r}",
                           "unknown-name", hint)
            for param in sorted(analysis.param_refs - set(self.params)):
                self.error(where, f"unknown param {param!r} in expression {source!r}",
                           "unknown-param",
                           "declare it under spec.params" if not self.params
                           else "declared params: " + ", ".join(sorted(self.params)))
            for ref in sorted(analysis.task_refs):
                if ref not in self.tasks:
                    self.unknown_task(where, ref)
                elif ref == task_id:
                    self.error(where, f"task {task_id!r} references its own output", "cycle")
                elif task_id is not None:
                    self.deps[task_id].add(ref)

    def syntax_error(self, keys: Keys, error: TemplateSyntaxError) -> None:
        line, column = self.document.position(keys)
        offset = (error.lineno or 1) - 1
        self.diagnostics.append(
            Diagnostic(self.document.path, line + offset, column,
                       f"Jinja syntax error: {error.message}", "template-syntax")
        )

    def unknown_task(self, keys: Keys, ref: str) -> None:
        close = difflib.get_close_matches(ref, list(self.tasks), n=1)
        self.error(keys, f"unknown task {ref!r}", "unknown-task",
                   f"did you mean {close[0]!r}?" if close else None)

    def check_cycles(self) -> None:
        remaining = {task: set(deps) for task, deps in self.deps.items()}
        ready = [task for task, deps in remaining.items() if not deps]
        dependents: dict[str, list[str]] = {task: [] for task in remaining}
        for task, deps in remaining.items():
            for dep in deps:
                dependents[dep].append(task)
        while ready:
            done = ready.pop()
            for task in dependents[done]:
                remaining[task].discard(done)
                if not remaining[task]:
                    ready.append(task)
            del remaining[done]
        if not remaining:
            return
        # Walk upstream from any blocked task until a task repeats: that loop is a cycle.
        path: list[str] = []
        task = min(remaining, key=lambda t: self.tasks[t][0])
        while task not in path:
            path.append(task)
            task = min(remaining[task], key=lambda t: self.tasks[t][0])
        cycle = path[path.index(task):]
        cycle.reverse()
        shown = " → ".join([*cycle, cycle[0]])
        first = min(cycle, key=lambda t: self.tasks[t][0])
        self.error(("spec", "tasks", self.tasks[first][0], "id"), f"dependency cycle: {shown}",
                   "cycle", "a task cannot depend, directly or not, on itself")


def _matches(value: Any, expected: str) -> bool:
    if isinstance(value, bool) and expected not in ("boolean",):
        return False
    return isinstance(value, _PARAM_TYPES[expected])
