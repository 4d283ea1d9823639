"""`validate`: checks data against a JSON Schema or a Pydantic model.

Contract:
- `schema` is an inline JSON Schema (a mapping, or JSON text), or the path of a JSON or
  YAML schema file under the allowed roots: the pipeline's folder, the working
  directory and `Settings.file_roots`. A path that resolves outside them (`../`, an
  absolute path elsewhere, a symlink out) is refused.
- `model` is `package.module:Model`, a Pydantic model the process can import.
- Output: `{valid, errors: [{path, message}], data}`; `data` is what the model coerced
  (as JSON), or the data as given for a schema. `path` is a JSON path (`$.items[0].sku`).
- `fail_on_invalid: true` turns invalid data into a task failure listing the errors.
- What another attempt cannot fix fails the task at once (`retryable=False`): invalid
  data with `fail_on_invalid`, a schema that is not valid, not UTF-8 or cannot be found, a path
  outside the allowed roots, a model that cannot be imported.

Schemas are checked with jsonschema's Draft 2020-12 validator, formats included; the
compiled validators are cached per schema (by content, and by file path + mtime).
Remote `$ref`s are never fetched.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as ModelValidationError
from referencing.exceptions import Unresolvable

from flowctl.engine.executors.base import BaseExecutor, TaskContext
from flowctl.engine.files import allowed_roots, resolve_file
from flowctl.errors import ExecutorError
from flowctl.schemas import load_schema

MAX_ERRORS = 100  # listed in the output; a failure message lists the first few
_ERRORS_IN_FAILURE = 10
_MESSAGE_LIMIT = 300
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ValidateExecutor(BaseExecutor):
    name: ClassVar[str] = "validate"
    with_schema: ClassVar[dict[str, Any]] = load_schema("executors/validate")

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any:
        data = params["data"]
        if "model" in params:
            valid, errors, data = _check_model(params["model"], data)
        else:
            validator = self._validator(ctx, params["schema"])
            errors = _schema_errors(validator, data)
            valid = not errors
        if not valid and params.get("fail_on_invalid", False):
            raise ExecutorError(_failure(errors), retryable=False)
        return {"valid": valid, "errors": errors[:MAX_ERRORS], "data": data}

    def _validator(self, ctx: TaskContext, schema: Any) -> Draft202012Validator:
        if isinstance(schema, Mapping):
            return _compiled(_canonical(schema))
        text = str(schema).strip()
        if text.startswith("{"):  # JSON text, e.g. rendered by `| tojson`
            try:
                return _compiled(_canonical(json.loads(text)))
            except json.JSONDecodeError as error:
                raise ExecutorError(f"schema is not valid JSON: {error}", retryable=False) from None
        roots = allowed_roots(self.settings, ctx.pipeline_dir)
        path = resolve_file(text, roots, what="schema file")
        stat = path.stat()
        return _file_validator(str(path), stat.st_mtime_ns, stat.st_size)


# -- JSON Schema ------------------------------------------------------------------------


def _canonical(schema: Any) -> str:
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ExecutorError(f"schema is not JSON: {error}", retryable=False) from None


@functools.lru_cache(maxsize=256)
def _compiled(canonical: str) -> Draft202012Validator:
    schema = json.loads(canonical)
    if not isinstance(schema, dict | bool):
        raise ExecutorError(
            f"schema must be a mapping, got {type(schema).__name__}", retryable=False
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = _json_path(error.absolute_path)
        raise ExecutorError(
            f"schema is not a valid JSON Schema at {where}: {_short(error.message)}",
            retryable=False,
        ) from None
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@functools.lru_cache(maxsize=64)
def _file_validator(path: str, mtime_ns: int, size: int) -> Draft202012Validator:
    """Cached by path and modification time: an edited file is read again."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:  # the same bytes next time: not worth a retry
        raise ExecutorError(
            f"schema file {path} is not UTF-8 text (byte {error.start}: "
            f"{error.object[error.start : error.start + 1]!r}); save it as UTF-8",
            retryable=False,
        ) from None
    except OSError as error:
        raise ExecutorError(f"cannot read schema file {path}: {error}") from None
    try:
        schema = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        reason = str(error).replace("\n", " ")
        raise ExecutorError(
            f"schema file {path} cannot be parsed: {reason}", retryable=False
        ) from None
    try:
        return _compiled(_canonical(schema))
    except ExecutorError as error:
        raise ExecutorError(f"schema file {path}: {error}", retryable=error.retryable) from None


def _schema_errors(validator: Draft202012Validator, data: Any) -> list[dict[str, str]]:
    try:
        found = [
            {"path": _json_path(error.absolute_path), "message": _short(error.message)}
            for error in _first(validator.iter_errors(data))
        ]
    except Unresolvable as error:
        raise ExecutorError(
            f"schema has a $ref that cannot be resolved: {error}", retryable=False
        ) from None
    return sorted(found, key=lambda e: (e["path"], e["message"]))


def _first(errors: Iterable[ValidationError]) -> list[ValidationError]:
    found = []
    for error in errors:
        found.append(error)
        if len(found) >= MAX_ERRORS:
            break
    return found


# -- Pydantic ---------------------------------------------------------------------------


def _check_model(reference: str, data: Any) -> tuple[bool, list[dict[str, str]], Any]:
    adapter = _model(reference)
    try:
        value = adapter.validate_python(data)
    except ModelValidationError as error:
        errors = [
            {"path": _json_path(item["loc"]), "message": _short(item["msg"])}
            for item in error.errors(include_url=False)[:MAX_ERRORS]
        ]
        return False, errors, data
    return True, [], adapter.dump_python(value, mode="json")


@functools.lru_cache(maxsize=128)
def _model(reference: str) -> TypeAdapter[Any]:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ExecutorError(
            f"cannot import model {reference!r}: {error}", retryable=False
        ) from None
    model = getattr(module, attribute, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        found = "nothing" if model is None else type(model).__name__
        raise ExecutorError(
            f"model {reference!r} must name a Pydantic model (a BaseModel subclass), found {found}",
            retryable=False,
        )
    return TypeAdapter(model)


# -- shared -----------------------------------------------------------------------------


def _json_path(parts: Iterable[Any]) -> str:
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.match(str(part)):
            path += f".{part}"
        else:
            path += f"[{json.dumps(str(part))}]"
    return path


def _failure(errors: list[dict[str, str]]) -> str:
    shown = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:_ERRORS_IN_FAILURE])
    more = len(errors) - _ERRORS_IN_FAILURE
    suffix = f"; and {more} more" if more > 0 else ""
    count = f"{len(errors)} error" + ("s" if len(errors) != 1 else "")
    return f"data is invalid ({count}): {shown}{suffix}"


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"
