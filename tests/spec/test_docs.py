"""docs/spec.md stays true to the schemas and to the validator.

Every property of every shipped JSON Schema must appear as inline code in the part of
the reference that documents that schema, and every rule name the spec layer can emit
must appear as inline code in the reference. Adding a property or a rule without
documenting it fails here.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowctl
from flowctl.engine.executors.base import UnknownExecutorError, executor_class
from flowctl.engine.spec.templating import CONTEXT_NAMES
from flowctl.engine.spec.validate import SCHEDULE_PRESETS

PACKAGE = Path(flowctl.__file__).resolve().parent
SCHEMAS = PACKAGE / "schemas"
SPEC_SOURCES = sorted((PACKAGE / "engine" / "spec").glob("*.py"))
DOC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"

# Where each schema is documented: the heading of its section in docs/spec.md.
PIPELINE_SECTION = "## Pipeline file"
TASKFLOW_SECTION = "## TaskFlow IR"
EXECUTORS_SECTION = "## Executors"

_SUBSCHEMA_KEYS = (
    *("items", "additionalProperties", "not", "propertyNames", "contains"),
    *("if", "then", "else", "unevaluatedProperties", "unevaluatedItems"),
)
_SUBSCHEMA_LIST_KEYS = ("oneOf", "anyOf", "allOf", "prefixItems")
_SUBSCHEMA_MAP_KEYS = ("$defs", "definitions", "patternProperties", "dependentSchemas")

# Calls that create a diagnostic, and the position of their rule argument.
_RULE_ARGUMENT = {"Diagnostic": 4, "diagnostic": 2, "fail": 2, "error": 2}
_RULE_NAME = re.compile(r"^[a-z]+(?:-[a-z]+)*$")


# --- reading the doc ------------------------------------------------------------------


def _doc_text() -> str:
    """The reference without its fenced code blocks (a `# comment` there is no heading)."""
    return re.sub(r"^```.*?^```[ \t]*$", "", DOC.read_text(encoding="utf-8"), flags=re.M | re.S)


def inline_code(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


def section(text: str, heading: str) -> str:
    """The text under `heading`, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        pytest.fail(f"docs/spec.md has no section {heading!r}")
    body = []
    for line in lines[start + 1 :]:
        match = re.match(r"^(#+) ", line)
        if match and len(match.group(1)) <= level:
            break
        body.append(line)
    return "\n".join(body)


# --- reading the schemas --------------------------------------------------------------


def schema_files() -> list[Path]:
    return [
        SCHEMAS / "pipeline.schema.json",
        SCHEMAS / "taskflow.schema.json",
        *sorted((SCHEMAS / "executors").glob("*.schema.json")),
    ]


def property_names(schema: Any) -> Iterator[str]:
    """Every property name declared anywhere in `schema`, however deeply nested."""
    if not isinstance(schema, dict):
        return
    for name, subschema in schema.get("properties", {}).items():
        yield name
        yield from property_names(subschema)
    for key in _SUBSCHEMA_KEYS:
        yield from property_names(schema.get(key))
    for key in _SUBSCHEMA_LIST_KEYS:
        for subschema in schema.get(key, []):
            yield from property_names(subschema)
    for key in _SUBSCHEMA_MAP_KEYS:
        for subschema in schema.get(key, {}).values():
            yield from property_names(subschema)


def documenting_section(path: Path) -> str:
    name = path.name.removesuffix(".schema.json")
    if path.parent.name == "executors":
        return f"### `{name}`"
    return {"pipeline": PIPELINE_SECTION, "taskflow": TASKFLOW_SECTION}[name]


# --- reading the rules ----------------------------------------------------------------


def emitted_rules() -> dict[str, str]:
    """rule name → where the spec layer emits it (file:line), read from the source.

    A diagnostic is made by `Diagnostic(path, line, column, message, rule, ...)` or by
    the helpers `document.diagnostic(keys, message, rule, ...)`, `self.fail(node,
    message, rule, ...)` and `self.error(keys, message, rule, ...)`. A rule argument that
    is neither a string literal nor a forwarded `rule` parameter fails the test, so a new
    way of passing rules cannot slip past it.
    """
    rules: dict[str, str] = {}
    for source in SPEC_SOURCES:
        tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in _RULE_ARGUMENT:
                continue
            index = _RULE_ARGUMENT[name]
            # A starred argument is a (line, column) pair: `Diagnostic(path, *position, ...)`.
            args = [a for arg in node.args for a in ([arg, arg] if _is_starred(arg) else [arg])]
            argument = args[index] if len(args) > index else None
            for keyword in node.keywords:
                if keyword.arg == "rule":
                    argument = keyword.value
            if argument is None or (isinstance(argument, ast.Name) and argument.id == "rule"):
                continue
            where = f"{source.relative_to(PACKAGE.parent)}:{node.lineno}"
            constants = [
                n.value
                for n in ast.walk(argument)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
            assert constants, f"cannot read the rule name passed at {where}"
            for value in constants:
                assert _RULE_NAME.match(value), f"{value!r} at {where} is not a rule name"
                rules.setdefault(value, where)
    return rules


def _is_starred(node: ast.expr) -> bool:
    return isinstance(node, ast.Starred)


# --- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: p.name)
def test_every_schema_property_is_documented(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    names = set(property_names(schema))
    assert names, f"no properties found in {path.name}"
    heading = documenting_section(path)
    documented = inline_code(section(_doc_text(), heading))
    missing = sorted(names - documented)
    assert not missing, (
        f"{path.name} has properties that docs/spec.md does not document as inline code "
        f"under {heading!r}: {', '.join(missing)}"
    )


def test_property_collector_sees_nested_properties() -> None:
    http = json.loads((SCHEMAS / "executors" / "http.schema.json").read_text(encoding="utf-8"))
    pipeline = json.loads((SCHEMAS / "pipeline.schema.json").read_text(encoding="utf-8"))
    assert {"bearer", "basic", "username", "password"} <= set(property_names(http))
    assert {"retry_delay", "on_failure", "max_parallel", "enum"} <= set(property_names(pipeline))


def test_every_rule_is_documented() -> None:
    rules = emitted_rules()
    assert {"yaml-syntax", "unknown-field", "cycle", "duplicate-pipeline"} <= set(rules)
    documented = inline_code(section(_doc_text(), "## Validation"))
    missing = sorted(f"{rule} ({where})" for rule, where in rules.items() if rule not in documented)
    assert not missing, "rules emitted but not documented in docs/spec.md: " + ", ".join(missing)


def test_schedule_presets_and_context_names_are_documented() -> None:
    documented = inline_code(_doc_text())
    missing = sorted((SCHEDULE_PRESETS | CONTEXT_NAMES) - documented)
    assert not missing, "missing from docs/spec.md: " + ", ".join(missing)


def _runnable(name: str) -> bool:
    try:
        executor_class(name)
    except UnknownExecutorError:
        return False
    return True


@pytest.mark.parametrize(
    "path", sorted((SCHEMAS / "executors").glob("*.schema.json")), ids=lambda p: p.name
)
def test_executor_availability_is_stated(path: Path) -> None:
    name = path.name.removesuffix(".schema.json")
    text = section(_doc_text(), f"### `{name}`")
    if _runnable(name):
        assert "Runnable." in text, f"docs/spec.md should say that {name!r} is runnable"
    else:
        assert "later release" in text, f"docs/spec.md should say {name!r} is not runnable yet"
