"""The executor protocol and the registry that finds executors by name.

An executor is a class with a `name`, a JSON Schema for its `with:` block, and one
`async def run(self, ctx, params)`. Retries, timeouts, rendering and checkpointing
live in the orchestrator, never in an executor.

Built-in executors are imported lazily (importing `openai` costs ~0.3 s, which
`flowctl validate` must not pay); third-party executors register through the
entry-point group `flowctl.executors`, whose entries are looked up only for names
that are not built in.
"""

from __future__ import annotations

import copy
import functools
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

from flowctl.config import Settings
from flowctl.schemas import builtin_executor_names, load_schema

ENTRY_POINT_GROUP = "flowctl.executors"


@dataclass(slots=True)
class TaskContext:
    """What an executor may know about the attempt it runs."""

    execution_id: str
    task_id: str
    attempt: int
    pipeline_dir: Path | None = None
    item: Any = None
    secrets: frozenset[str] = field(default_factory=frozenset)  # values to redact


class Executor(Protocol):
    """Constructed once per run with the settings; `aclose()` is awaited when the run ends."""

    name: ClassVar[str]
    with_schema: ClassVar[dict[str, Any]]

    def __init__(self, settings: Settings) -> None: ...

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any: ...

    async def aclose(self) -> None: ...


class BaseExecutor:
    """Convenience base: keeps the settings, closes nothing."""

    name: ClassVar[str]
    with_schema: ClassVar[dict[str, Any]]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def aclose(self) -> None:
        return None


_BUILTIN_CLASSES = {
    "transform": "flowctl.engine.executors.transform:TransformExecutor",
    "llm": "flowctl.engine.executors.llm:LlmExecutor",
    "ocr": "flowctl.engine.executors.ocr:OcrExecutor",
    "http": "flowctl.engine.executors.http:HttpExecutor",
    "sql": "flowctl.engine.executors.sql:SqlExecutor",
    "validate": "flowctl.engine.executors.validate:ValidateExecutor",
}


_REGISTERED: dict[str, type[Executor]] = {}


class UnknownExecutorError(LookupError):
    pass


def register(cls: type[Executor]) -> type[Executor]:
    """Adds an executor in this process (usable as a class decorator).

    Packages should rather declare an entry point in the `flowctl.executors` group,
    so that every flowctl process (CLI, workers, Airflow) finds them.
    """
    _REGISTERED[cls.name] = cls
    executor_class.cache_clear()
    with_schema.cache_clear()
    return cls


@functools.cache
def _plugin_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_executor_names() -> list[str]:
    return sorted({*builtin_executor_names(), *_REGISTERED, *_plugin_entry_points()})


@functools.cache
def with_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of an executor's `with:` block; raises UnknownExecutorError."""
    if name in builtin_executor_names():
        return load_schema(f"executors/{name}")
    return executor_class(name).with_schema


@functools.cache
def executor_class(name: str) -> type[Executor]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN_CLASSES:
        module_name, _, attribute = _BUILTIN_CLASSES[name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                message = f"executor {name!r} is not available in this version"
            else:
                message = f"executor {name!r} needs the package {error.name!r}, not installed"
            raise UnknownExecutorError(message) from None
        cls: type[Executor] = getattr(module, attribute)
        return cls
    entry_point = _plugin_entry_points().get(name)
    if entry_point is None:
        if name in builtin_executor_names():
            raise UnknownExecutorError(f"executor {name!r} is not available in this version")
        raise UnknownExecutorError(f"unknown executor {name!r}")
    loaded: type[Executor] = entry_point.load()
    return loaded


@functools.cache
def _rendered_validators(name: str) -> tuple[Any, Any]:
    """(fast yes/no check or None, explaining validator) of an executor's `with:` schema.

    The fast check (fastjsonschema, draft-07) is used for the built-in schemas only,
    which keep to the keywords both drafts share; a plugin's schema may not.
    """
    import fastjsonschema
    from jsonschema import Draft202012Validator

    fast = None
    if name in builtin_executor_names():
        schema = copy.deepcopy(with_schema(name))  # fastjsonschema rewrites $refs in place
        fast = fastjsonschema.compile(
            {**schema, "$schema": "http://json-schema.org/draft-07/schema#"}
        )
    return fast, Draft202012Validator(with_schema(name))


def check_rendered_with(name: str, params: dict[str, Any]) -> str | None:
    """What is wrong with a rendered `with:` block, or None.

    Validation could only check the types of literal values; a value written as an
    expression is checked here, once rendered, before the executor sees it.
    """
    import fastjsonschema

    fast, explain = _rendered_validators(name)
    if fast is not None:
        try:
            fast(params)
            return None
        except fastjsonschema.JsonSchemaException:
            pass
    problems = []
    for error in explain.iter_errors(params):
        if _holds_bytes(error.instance):
            continue  # bytes from an upstream task (an ocr source): JSON Schema has no type
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append(f"with{where}: {_without_value(error)}")
    return "; ".join(problems) or None


def _holds_bytes(value: Any) -> bool:
    return isinstance(value, bytes | bytearray)


def _without_value(error: Any) -> str:
    """jsonschema's message, without the value when it is text (or holds text): it may be a
    credential (a URL with a password, a token from an upstream task) that is no secret."""
    keyword, expected = error.validator, error.validator_value
    if not isinstance(error.instance, str | dict | list):
        return str(error.message)  # numbers, booleans and null say nothing sensitive
    if keyword == "type":
        types = expected if isinstance(expected, list) else [expected]
        return "is not of type " + ", ".join(repr(t) for t in types)
    if keyword in ("required", "additionalProperties", "dependentRequired"):
        return str(error.message)  # names fields, not values
    if keyword == "enum":
        return f"is not one of {expected!r}"
    if keyword == "pattern":
        return f"does not match {expected!r}"
    if keyword in ("oneOf", "anyOf"):
        return "is not valid under any of the given schemas"
    return f"does not satisfy {keyword}: {expected!r}"


def is_known(name: str) -> bool:
    return name in builtin_executor_names() or name in _REGISTERED or name in _plugin_entry_points()
