"""Run parameters: `-p key=value` strings and a params file, checked against `spec.params`.

Every problem is reported at once, naming the param; nothing runs or is recorded
when any is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from flowctl.engine.spec.validate import matches_param_type
from flowctl.errors import ParamsError

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def parse_assignments(assignments: Sequence[str]) -> dict[str, str]:
    """["a=1", "b=x=y"] → {"a": "1", "b": "x=y"}."""
    parsed: dict[str, str] = {}
    problems = []
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            problems.append(f"-p {assignment!r}: expected NAME=VALUE")
            continue
        parsed[name.strip()] = value
    if problems:
        raise ParamsError("; ".join(problems))
    return parsed


def resolve_params(
    declared: Mapping[str, Mapping[str, Any]],
    from_file: Mapping[str, Any] | None = None,
    from_cli: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Typed values for every declared param; command-line values override the file's."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    given: dict[str, tuple[Any, bool]] = {}  # name → (value, is_text_from_cli)
    for name, value in (from_file or {}).items():
        given[name] = (value, False)
    for name, text in (from_cli or {}).items():
        given[name] = (text, True)
    for name in sorted(set(given) - set(declared)):
        known = ", ".join(sorted(declared)) or "none"
        problems.append(f"unknown param {name!r} (declared: {known})")
    for name, spec in declared.items():
        expected = spec["type"]
        if name in given:
            raw, is_text = given[name]
            try:
                value = _convert(raw, expected) if is_text else _check(raw, expected)
            except ValueError as error:
                problems.append(f"param {name!r}: {error}")
                continue
        elif "default" in spec:
            value = spec["default"]
        else:
            problems.append(f"missing required param {name!r} ({expected})")
            continue
        if "enum" in spec and value not in spec["enum"]:
            allowed = ", ".join(json.dumps(v) for v in spec["enum"])
            problems.append(f"param {name!r}: {json.dumps(value)} is not one of {allowed}")
            continue
        values[name] = value
    if problems:
        raise ParamsError("invalid params: " + "; ".join(problems))
    return values


def _convert(text: str, expected: str) -> Any:
    if expected == "string":
        return text
    if expected == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if expected == "number":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {text!r}")
        return int(number) if number.is_integer() and "." not in text else number
    if expected == "boolean":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"expected JSON ({expected}): {error.msg} at column {error.colno}"
        ) from None
    return _check(value, expected)


def _check(value: Any, expected: str) -> Any:
    if not matches_param_type(value, expected):
        raise ValueError(f"expected {expected}, got {type(value).__name__} {json.dumps(value)}")
    return value
