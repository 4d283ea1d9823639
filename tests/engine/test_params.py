"""Run parameters: `-p` strings and params files, typed and checked against `spec.params`.

(That a bad param records nothing in the history is checked through the CLI, in
tests/cli/test_cli_run.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from flowctl.engine.params import parse_assignments, resolve_params
from flowctl.errors import ParamsError

DECLARED: dict[str, dict[str, Any]] = {
    "name": {"type": "string"},
    "count": {"type": "integer", "default": 3},
    "ratio": {"type": "number", "default": 0.5},
    "verbose": {"type": "boolean", "default": False},
    "tags": {"type": "array", "default": []},
    "options": {"type": "object", "default": {}},
    "mode": {"type": "string", "enum": ["fast", "full"], "default": "fast"},
}


def test_assignments_split_at_the_first_equals_sign() -> None:
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}


@pytest.mark.parametrize("bad", ["novalue", "=value", " =x"])
def test_an_assignment_without_a_name_or_equals_sign_is_a_params_error(bad: str) -> None:
    with pytest.raises(ParamsError, match="expected NAME=VALUE") as caught:
        parse_assignments(["ok=1", bad])
    assert repr(bad) in str(caught.value)
    assert caught.value.exit_code == 2


def test_cli_values_are_converted_to_the_declared_types() -> None:
    values = resolve_params(
        DECLARED,
        from_cli={
            "name": "ada",
            "count": "7",
            "ratio": "2",
            "verbose": "yes",
            "tags": '["a", "b"]',
            "options": '{"k": 1}',
            "mode": "full",
        },
    )
    assert values == {
        "name": "ada",
        "count": 7,
        "ratio": 2,
        "verbose": True,
        "tags": ["a", "b"],
        "options": {"k": 1},
        "mode": "full",
    }


def test_defaults_fill_what_is_not_given() -> None:
    assert resolve_params(DECLARED, from_cli={"name": "x"}) == {
        "name": "x",
        "count": 3,
        "ratio": 0.5,
        "verbose": False,
        "tags": [],
        "options": {},
        "mode": "fast",
    }


def test_the_command_line_overrides_the_params_file() -> None:
    values = resolve_params(
        DECLARED, from_file={"name": "file", "count": 1}, from_cli={"count": "2"}
    )
    assert (values["name"], values["count"]) == ("file", 2)


@pytest.mark.parametrize(
    ("from_file", "from_cli", "message"),
    [
        (None, {"name": "x", "colour": "red"}, "unknown param 'colour'"),
        (None, {"name": "x", "count": "seven"}, "param 'count': expected an integer, got 'seven'"),
        (None, {"name": "x", "ratio": "1/2"}, "param 'ratio': expected a number"),
        (None, {"name": "x", "verbose": "maybe"}, "param 'verbose': expected true or false"),
        (None, {"name": "x", "tags": "[1,"}, "param 'tags': expected JSON (array)"),
        (None, {"name": "x", "tags": '{"a": 1}'}, "param 'tags': expected array, got dict"),
        (None, {}, "missing required param 'name' (string)"),
        (None, {"name": "x", "mode": "slow"}, '\'mode\': "slow" is not one of "fast", "full"'),
        ({"name": 5}, None, "param 'name': expected string, got int 5"),
        ({"name": "x", "count": True}, None, "param 'count': expected integer, got bool true"),
        ({"name": "x", "count": 1.5}, None, "param 'count': expected integer, got float 1.5"),
        ({"name": "x", "extra": 1}, None, "unknown param 'extra'"),
    ],
)
def test_bad_params_are_a_params_error_naming_the_param(
    from_file: dict[str, Any] | None, from_cli: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(ParamsError) as caught:
        resolve_params(DECLARED, from_file, from_cli)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ParamsError) as caught:
        resolve_params(DECLARED, from_cli={"count": "x", "nope": "1"})
    text = str(caught.value)
    assert "unknown param 'nope'" in text
    assert "param 'count'" in text
    assert "missing required param 'name'" in text


def test_the_unknown_param_error_lists_the_declared_ones() -> None:
    with pytest.raises(ParamsError, match=r"declared: a, b"):
        resolve_params({"b": {"type": "string"}, "a": {"type": "string"}}, from_cli={"c": "1"})
    with pytest.raises(ParamsError, match=r"declared: none"):
        resolve_params({}, from_cli={"c": "1"})


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e999"])
def test_a_number_param_must_be_finite(text: str) -> None:
    """JSON (the history, the IR) has no infinity or NaN."""
    with pytest.raises(ParamsError, match="expected a finite number"):
        resolve_params({"x": {"type": "number"}}, from_cli={"x": text})
