"""Jinja expressions inside pipeline values: static analysis and rendering.

Every template runs in `ImmutableSandboxedEnvironment` with `StrictUndefined`.
A value that is exactly one `{{ … }}` keeps its native type (a dict stays a dict).

Two fast paths keep the hot paths cheap without changing semantics:
- a value that is a plain dotted path (`{{ tasks.ocr.output.text }}`) is analysed by a
  regular expression and evaluated with the sandbox's own `getattr`, which is exactly
  what Jinja's compiled code would call; no Jinja parse or compile happens;
- everything else is parsed/compiled by Jinja once per distinct source (cached).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.lexer import TokenStream
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowctl.engine.spec.fastlex import fast_tokens, token_stream
from flowctl.errors import FlowctlError

CONTEXT_NAMES = frozenset({"params", "tasks", "secrets", "execution", "item"})

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class _AnalysisEnvironment(ImmutableSandboxedEnvironment):
    """Parses with flowctl's fast tokenizer where it applies (see fastlex.py)."""

    def _tokenize(
        self,
        source: str,
        name: str | None,
        filename: str | None = None,
        state: str | None = None,
    ) -> TokenStream:
        tokens = fast_tokens(source) if state is None else None
        if tokens is None:
            return super()._tokenize(source, name, filename, state)
        return token_stream(tokens, name, filename)


_ANALYSIS_ENV = _AnalysisEnvironment(undefined=StrictUndefined, autoescape=False)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_SIMPLE_PATH = re.compile(rf"^\{{\{{\s*({_IDENT}(?:\.{_IDENT}|\[[0-9]+\])*)\s*\}}\}}$")
_SINGLE_EXPRESSION = re.compile(r"^\{\{(.*)\}\}$", re.DOTALL)
_PATH_PART = re.compile(rf"\.({_IDENT})|\[([0-9]+)\]")


# Names a bare path may not start with: Jinja's constants and globals are not variables.
_NOT_VARIABLES = frozenset({"true", "false", "none", "True", "False", "None", *ENV.globals})


def _simple_path(source: str) -> re.Match[str] | None:
    match = _SIMPLE_PATH.match(source)
    if match is None:
        return None
    head = match.group(1).split(".", 1)[0].split("[", 1)[0]
    return None if head in _NOT_VARIABLES else match


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def iter_templates(
    value: Any, keys: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(keys, source) for every string holding a Jinja expression inside `value`."""
    if isinstance(value, str):
        if is_template(value):
            yield keys, value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from iter_templates(child, (*keys, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from iter_templates(child, (*keys, index))


@dataclass(frozen=True, slots=True)
class Analysis:
    """What an expression reads: top-level names, and the task ids and params it references."""

    names: frozenset[str]
    task_refs: frozenset[str]
    param_refs: frozenset[str]
    unknown_functions: frozenset[str] = frozenset()  # "filter 'x'" / "test 'y'"


@functools.lru_cache(maxsize=65536)
def analyze(source: str) -> Analysis:
    """Names and task references of a template; raises jinja2.TemplateSyntaxError."""
    match = _simple_path(source.strip())
    if match:
        head, _, rest = match.group(1).partition(".")
        head = head.split("[", 1)[0]
        first = re.split(r"[.\[]", rest, maxsplit=1)[0] if rest else ""
        return Analysis(
            frozenset({head}),
            frozenset({first}) if head == "tasks" and first else frozenset(),
            frozenset({first}) if head == "params" and first else frozenset(),
        )
    try:
        tree = _ANALYSIS_ENV.parse(source)
    except TemplateSyntaxError:
        tree = ENV.parse(source)  # Jinja's own lexer has the last word on errors
    return _analyze_tree(tree)


def _analyze_tree(tree: nodes.Template) -> Analysis:
    """One walk over the tree (Jinja's find_all walks it once per node type, slowly)."""
    loaded: set[str] = set()
    stored: set[str] = set()
    refs: dict[str, set[str]] = {"tasks": set(), "params": set()}
    unknown: set[str] = set()
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.Name):
            (loaded if node.ctx == "load" else stored).add(node.name)
        elif isinstance(node, nodes.Getattr | nodes.Getitem):
            target = node.node
            if isinstance(target, nodes.Name) and target.name in refs and target.ctx == "load":
                if isinstance(node, nodes.Getattr):
                    refs[target.name].add(node.attr)
                elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                    refs[target.name].add(node.arg.value)
        elif isinstance(node, nodes.Filter) and node.name not in ENV.filters:
            unknown.add(f"filter {node.name!r}")
        elif isinstance(node, nodes.Test) and node.name not in ENV.tests:
            unknown.add(f"test {node.name!r}")
        for field in node.fields:
            child = getattr(node, field)
            if isinstance(child, nodes.Node):
                stack.append(child)
            elif isinstance(child, list):
                stack.extend(c for c in child if isinstance(c, nodes.Node))
    return Analysis(
        frozenset(loaded - stored - set(ENV.globals)),
        frozenset(refs["tasks"]),
        frozenset(refs["params"]),
        frozenset(unknown),
    )


class TemplateRenderError(Exception):
    """Rendering failed; `expression` is the source, `reason` a one-line explanation."""

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(reason)


Renderer = Callable[[Mapping[str, Any]], Any]


def compile_value(value: Any) -> Renderer:
    """A function context → rendered value; templates are compiled here, once."""
    if isinstance(value, str):
        return _compile_string(value) if is_template(value) else _Constant(value)
    if isinstance(value, dict):
        parts = {key: compile_value(child) for key, child in value.items()}
        if all(type(part) is _Constant for part in parts.values()):
            return _Constant(value)
        return lambda context: {key: part(context) for key, part in parts.items()}
    if isinstance(value, list):
        items = [compile_value(child) for child in value]
        if all(type(item) is _Constant for item in items):
            return _Constant(value)
        return lambda context: [item(context) for item in items]
    return _Constant(value)


class _Constant:
    """A value without expressions: rendering returns it as it is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, context: Mapping[str, Any]) -> Any:
        return self.value


@functools.lru_cache(maxsize=65536)
def _compile_string(source: str) -> Renderer:
    stripped = source.strip()
    path = _simple_path(stripped)
    if path:
        return _path_renderer(source, path.group(1))
    single = _SINGLE_EXPRESSION.match(stripped)
    if single and "{{" not in single.group(1) and "}}" not in single.group(1):
        expression = ENV.compile_expression(single.group(1), undefined_to_none=False)

        def render_native(context: Mapping[str, Any]) -> Any:
            return _guard(source, lambda: _defined(expression(**context)))

        return render_native
    template = ENV.from_string(source)
    return lambda context: _guard(source, lambda: template.render(context))


_DICT_ATTRS = frozenset(dir(dict))


def _path_renderer(source: str, path: str) -> Renderer:
    head = re.match(_IDENT, path)
    assert head is not None
    name = head.group(0)
    steps = [(m.group(1), m.group(2)) for m in _PATH_PART.finditer(path, head.end())]

    def render(context: Mapping[str, Any]) -> Any:
        if name not in context:
            raise TemplateRenderError(source, f"{name!r} is undefined")
        value = context[name]
        try:
            for attribute, index in steps:
                if (
                    attribute
                    and type(value) is dict
                    and attribute in value
                    and attribute not in _DICT_ATTRS
                ):
                    # What the sandbox's getattr returns for a plain dict's key, minus the
                    # AttributeError it raises and catches first (the hot path of runs).
                    value = value[attribute]
                    continue
                value = (
                    ENV.getattr(value, attribute) if attribute else ENV.getitem(value, int(index))
                )
                if isinstance(value, StrictUndefined):
                    raise TemplateRenderError(source, _undefined_reason(value))
        except TemplateRenderError:
            raise
        except Exception as error:  # e.g. a missing secret
            raise TemplateRenderError(source, str(error) or type(error).__name__) from None
        return value

    return render


def _defined(value: Any) -> Any:
    if isinstance(value, StrictUndefined):
        value._fail_with_undefined_error()
    return value


def _undefined_reason(value: StrictUndefined) -> str:
    try:
        value._fail_with_undefined_error()
    except UndefinedError as error:
        return str(error)
    return "undefined value"  # pragma: no cover


def _guard(source: str, render: Callable[[], Any]) -> Any:
    try:
        return render()
    except TemplateRenderError:
        raise
    except (UndefinedError, SecurityError, TemplateSyntaxError, FlowctlError) as error:
        raise TemplateRenderError(source, str(error)) from None
    except Exception as error:  # user expressions can raise anything (1/0, int('x'))
        raise TemplateRenderError(source, f"{type(error).__name__}: {error}") from None
