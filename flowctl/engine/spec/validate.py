"""Document → every diagnostic it deserves: JSON Schema, executors' `with:` blocks, semantics.

The schema check runs in two steps: a compiled yes/no check (fastjsonschema, ~20x
faster than walking the schema) that passes nearly every file, and only for a file that
fails it, jsonschema's full walk that explains every error with its path.
"""

from __future__ import annotations

import copy
import difflib
import functools
import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import fastjsonschema
from jinja2 import TemplateSyntaxError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from flowctl.engine.executors.base import is_known, known_executor_names, with_schema
from flowctl.engine.spec.load import (
    Document,
    LoadError,
    iter_pipeline_files,
    load_file,
)
from flowctl.engine.spec.templating import (
    CONTEXT_NAMES,
    analyze,
    is_template,
    iter_templates,
)
from flowctl.errors import Diagnostic
from flowctl.schemas import builtin_executor_names, load_schema

if TYPE_CHECKING:  # jsonschema is imported only when a file fails the fast check
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

Keys = tuple[str | int, ...]

# Names that `params.x` / `tasks.x` would resolve to a dict method (Jinja reads attributes
# before keys), so `{{ params.values }}` could never read a param named `values`.
RESERVED_NAMES = frozenset(dir(dict))

PARALLEL_THRESHOLD = 200  # below this, starting worker processes costs more than it saves

SCHEDULE_PRESETS = frozenset(
    {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
)
PARAM_TYPES: dict[str, tuple[type, ...]] = {
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
    ("retry_delay",): 'durations look like "500ms", "5s", "2m", "1h", or a number of seconds',
    ("timeout",): 'durations look like "500ms", "5s", "2m", "1h", or a number of seconds',
}


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """One file's outcome, small enough to send between processes.

    The document itself is not kept: holding 1,000 node trees alive makes the garbage
    collector rescan them over and over (it tripled the time of a 1,000-file run).
    """

    path: str
    diagnostics: tuple[Diagnostic, ...]
    pipeline_name: str | None = None
    name_position: tuple[int, int] = (0, 0)

    @property
    def ok(self) -> bool:
        return not self.diagnostics


def load_and_validate(path: str) -> tuple[Document | None, list[Diagnostic]]:
    try:
        document = load_file(path)
    except LoadError as error:
        return None, [error.diagnostic]
    return document, validate_document(document)


def check_file(path: str) -> CheckedFile:
    document, diagnostics = load_and_validate(path)
    if document is None:
        return CheckedFile(path, tuple(diagnostics))
    name = _pipeline_name(document.data)
    position = document.position(("metadata", "name")) if name else (0, 0)
    return CheckedFile(path, tuple(diagnostics), name, position)


def check_paths(paths: Sequence[str], jobs: int | None = None) -> list[CheckedFile]:
    """Checks every pipeline file under `paths`, then names defined by two files.

    Many files are checked in worker processes (`jobs`, default: one per CPU).
    """
    files = list(iter_pipeline_files(paths))
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and len(files) >= PARALLEL_THRESHOLD and "fork" in mp.get_all_start_methods():
        _warm_caches()  # compiled validators are inherited by the forked workers
        with mp.get_context("fork").Pool(min(jobs, len(files) // 16 or 1)) as pool:
            chunk = max(1, len(files) // (jobs * 4))
            results = pool.map(check_file, files, chunksize=chunk)
    else:
        results = [check_file(path) for path in files]
    return with_duplicate_names(results)


def with_duplicate_names(results: list[CheckedFile]) -> list[CheckedFile]:
    first_seen: dict[str, str] = {}
    checked = []
    for result in results:
        name = result.pipeline_name
        if name is not None and name in first_seen:
            duplicate = Diagnostic(
                result.path,
                *result.name_position,
                f"pipeline {name!r} is already defined in {first_seen[name]}",
                "duplicate-pipeline",
                "pipeline names are unique in a repository",
            )
            result = replace(result, diagnostics=(*result.diagnostics, duplicate))
        elif name is not None:
            first_seen[name] = result.path
        checked.append(result)
    return checked


def _pipeline_name(data: Any) -> str | None:
    metadata = data.get("metadata") if isinstance(data, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _warm_caches() -> None:
    _fast_validator("pipeline")
    for name in builtin_executor_names():
        _fast_validator(f"executors/{name}")


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
    # A deep copy: fastjsonschema rewrites every "$ref" in place, and load_schema's is shared.
    schema = {
        **copy.deepcopy(load_schema(name)),
        "$schema": "http://json-schema.org/draft-07/schema#",
    }
    return fastjsonschema.compile(schema)


@functools.cache
def _full_validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

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
        yield from _explain(document, error, base)


def _is_template_error(error: ValidationError) -> bool:
    """A templated value stands for any type: only its rendered value can be checked."""
    if isinstance(error.instance, str) and is_template(error.instance):
        return True
    return bool(error.context) and all(_is_template_error(e) for e in error.context)


def _explain(document: Document, error: ValidationError, base: Keys) -> Iterator[Diagnostic]:
    if error.validator in ("oneOf", "anyOf") and error.context:
        # Explain the branch meant for this value's type, not the branches of other types.
        from jsonschema.exceptions import best_match

        relevant = [e for e in error.context if e.validator != "type"]
        if relevant:
            error = best_match(relevant)
    keys: Keys = (*base, *error.absolute_path)
    where = _dotted(keys)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        allowed = list(schema.get("properties", {}))
        for key in sorted(k for k in error.instance if k not in allowed):
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            yield document.diagnostic(
                (*keys, key),
                f"unknown field {key!r} in {where or 'the document'}",
                "unknown-field",
                hint,
                at_key=True,
            )
        return
    if error.validator == "required":
        yield document.diagnostic(keys, f"{where or 'document'}: {error.message}", "required")
        return
    if error.validator == "type":
        yield document.diagnostic(
            keys,
            f"{where}: expected {error.validator_value}, got {_json_type(error.instance)}",
            "type",
        )
        return
    named = tuple(k for k in keys if isinstance(k, str))
    field_hint = _HINTS.get(named[-2:]) or _HINTS.get(named[-1:])
    yield document.diagnostic(keys, f"{where}: {error.message}", "schema", field_hint)


def _dotted(keys: Keys) -> str:
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


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

    def error(
        self, keys: Keys, message: str, rule: str, hint: str | None = None, *, at_key: bool = False
    ) -> None:
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
        for name in self.params:
            if name in RESERVED_NAMES:
                self.error(
                    ("spec", "params", name),
                    f"param name {name!r} is reserved",
                    "reserved-name",
                    "`params.<name>` reads a mapping: a name like one of its methods "
                    "(keys, items, values, ...) would read the method",
                    at_key=True,
                )
        for name, param in self.params.items():
            if not isinstance(param, dict) or param.get("type") not in PARAM_TYPES:
                continue
            expected = param["type"]
            for key in ("default",) if "default" in param else ():
                if not matches_param_type(param[key], expected):
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
        if isinstance(schedule, str) and not is_valid_schedule(schedule):
            self.error(
                ("spec", "schedule"),
                f"invalid schedule {schedule!r}",
                "schedule",
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
                    ("spec", "tasks", index, "id"),
                    f"duplicate task id {task_id!r}",
                    "duplicate-task",
                    f"first defined on line {first_line}",
                )
                continue
            if task_id in RESERVED_NAMES:
                self.error(
                    ("spec", "tasks", index, "id"),
                    f"task id {task_id!r} is reserved",
                    "reserved-name",
                    "`tasks.<id>` reads a mapping: an id named like one of its methods "
                    "(keys, items, get, ...) would read the method",
                )
            self.tasks[task_id] = (index, task)
            self.deps[task_id] = set()

    def check_task(self, task_id: str, index: int, task: dict[str, Any]) -> None:
        keys: Keys = ("spec", "tasks", index)
        executor = task.get("executor")
        if isinstance(executor, str) and executor:
            if not is_known(executor):
                close = difflib.get_close_matches(executor, known_executor_names(), n=1)
                self.error(
                    (*keys, "executor"),
                    f"unknown executor {executor!r}",
                    "unknown-executor",
                    f"did you mean {close[0]!r}?"
                    if close
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
                    self.error(
                        (*keys, "needs", position), f"task {task_id!r} needs itself", "cycle"
                    )
                elif need not in self.tasks:
                    self.unknown_task((*keys, "needs", position), need)
                else:
                    self.deps[task_id].add(need)
        has_items = "for_each" in task
        for field_name in ("when", "for_each"):
            value = task.get(field_name)
            if isinstance(value, str) and not is_template(value):
                self.error(
                    (*keys, field_name),
                    f"{field_name} must be an expression, got {value!r}",
                    "not-an-expression",
                    f'write it as "{{{{ {value} }}}}"',
                )
        self.check_templates(task.get("when"), (*keys, "when"), task_id, allow_item=False)
        self.check_templates(task.get("for_each"), (*keys, "for_each"), task_id, allow_item=False)
        self.check_templates(task.get("with"), (*keys, "with"), task_id, allow_item=has_items)

    def check_with(self, executor: str, block: dict[str, Any], keys: Keys) -> None:
        schema_name = f"executors/{executor}"
        try:
            load_schema(schema_name)
        except FileNotFoundError:  # a plugin executor: validate with its declared schema
            from jsonschema import Draft202012Validator

            for error in Draft202012Validator(with_schema(executor)).iter_errors(block):
                if not _is_template_error(error):
                    self.diagnostics.extend(_explain(self.document, error, keys))
            return
        self.diagnostics.extend(
            _schema_errors(self.document, block, schema_name, keys, templated=True)
        )
        self.check_literals(executor, block, keys)

    def check_literals(self, executor: str, block: dict[str, Any], keys: Keys) -> None:
        """Fields marked `x-flowctl-literal` in an executor's schema take no expression:
        they name code to run, which data from upstream tasks must not choose."""
        for name, field in with_schema(executor).get("properties", {}).items():
            value = block.get(name)
            literal_only = isinstance(field, dict) and field.get("x-flowctl-literal")
            if literal_only and isinstance(value, str) and is_template(value):
                self.error(
                    (*keys, name),
                    f"{name} must be written literally, not as an expression",
                    "not-literal",
                    "it names code to import; an expression would let data choose it",
                )

    def check_templates(
        self, value: Any, keys: Keys, task_id: str | None, *, allow_item: bool
    ) -> None:
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
                hint = (
                    "`item` exists only inside a task with for_each"
                    if name == "item"
                    else "expressions can read " + ", ".join(sorted(CONTEXT_NAMES))
                )
                self.error(
                    where, f"unknown name {name!r} in expression {source!r}", "unknown-name", hint
                )
            for param in sorted(analysis.param_refs - set(self.params)):
                self.error(
                    where,
                    f"unknown param {param!r} in expression {source!r}",
                    "unknown-param",
                    "declare it under spec.params"
                    if not self.params
                    else "declared params: " + ", ".join(sorted(self.params)),
                )
            for function in sorted(analysis.unknown_functions):
                self.error(where, f"unknown {function} in expression {source!r}", "unknown-filter")
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
        if _is_block_scalar(self.document.root, keys):
            offset += 1  # the text of a `|` or `>` block starts on the line after the `|`
        self.diagnostics.append(
            Diagnostic(
                self.document.path,
                line + offset,
                column,
                f"Jinja syntax error: {error.message}",
                "template-syntax",
            )
        )

    def unknown_task(self, keys: Keys, ref: str) -> None:
        close = difflib.get_close_matches(ref, list(self.tasks), n=1)
        self.error(
            keys,
            f"unknown task {ref!r}",
            "unknown-task",
            f"did you mean {close[0]!r}?" if close else None,
        )

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
        cycle = path[path.index(task) :]
        cycle.reverse()
        shown = " → ".join([*cycle, cycle[0]])
        first = min(cycle, key=lambda t: self.tasks[t][0])
        self.error(
            ("spec", "tasks", self.tasks[first][0], "id"),
            f"dependency cycle: {shown}",
            "cycle",
            "a task cannot depend, directly or not, on itself",
        )


def _is_block_scalar(root: Node, keys: Keys) -> bool:
    node: Node | None = root
    for key in keys:
        if isinstance(node, MappingNode):
            node = next((v for k, v in node.value if k.value == str(key)), None)
        elif isinstance(node, SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return False
    return isinstance(node, ScalarNode) and node.style in ("|", ">")


@functools.lru_cache(maxsize=1024)
def is_valid_schedule(schedule: str) -> bool:
    if schedule in SCHEDULE_PRESETS:
        return True
    from croniter import croniter  # imported only when a file has a schedule

    fields = schedule.split()
    return len(fields) == 5 and bool(croniter.is_valid(schedule))


def matches_param_type(value: Any, expected: str) -> bool:
    """Whether `value` is of a param's declared type (a bool is not a number here)."""
    if isinstance(value, bool) and expected != "boolean":
        return False
    return isinstance(value, PARAM_TYPES[expected])
