"""The fast tokenizer must be invisible: for any template it either declines (None) or
produces exactly the tokens of Jinja's own lexer, so analysis never changes meaning."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError

from flowctl.engine.spec import templating
from flowctl.engine.spec.fastlex import fast_tokens
from flowctl.engine.spec.templating import ENV, analyze

TokenTuple = tuple[int, str, object]

# Templates pipeline authors write, and the shapes around them that a regex gets wrong.
CORPUS = [
    # plain paths
    "{{ params.text }}",
    "{{ tasks.ocr.output.text }}",
    "{{tasks.ocr.output}}",
    "{{ tasks['ocr'].output }}",
    '{{ tasks["fetch-page"].output.body }}',
    "{{ item }}",
    "{{ execution.id }}",
    "{{ tasks.split.output[0].pages[12] }}",
    "{{ tasks.split.output.0.1 }}",
    "{{ x.1.5 }}",
    "{{ x.10.25 }}",
    "{{ _private._x1 }}",
    # filters and calls with arguments
    "{{ params.orders | map(attribute='customer') | unique | sort | list }}",
    "{{ params.name | default('anonymous') | upper }}",
    "{{ tasks.ocr.output.text | truncate(200, true, '...') }}",
    "{{ params.items | join(', ') }}",
    "{{ range(3) | list }}",
    "{{ params.x | round(2) }}",
    "{{ params.x|int }}",
    "{{ params.values | selectattr('ok', 'equalto', true) | list | length }}",
    "{{ lookup(params.key, default=none) }}",
    # strings, including ones holding the delimiters
    "{{ 'a}}b' }}",
    '{{ "}}" ~ params.x }}',
    "{{ '{{ not an expression }}' }}",
    "{{ 'it''s' }}",
    '{{ "say \\"hi\\"" }}',
    "{{ 'tab\\there' }}",
    "{{ 'café' ~ params.x }}",
    "{{ 'line\nbreak' }}",
    "{{ '' }}",
    # block scalars: the value ends with a newline, sometimes several lines
    "{{ params.text }}\n",
    "Summary of {{ params.name }}:\n{{ tasks.summarize.output }}\n",
    "line one\nline two {{ params.x }}\nline three\n",
    "{{ params.a }}\n{{ params.b }}\n\n",
    "{{ params.a\n   | upper }}\n",
    "\n{{ params.a }}",
    "\n",
    "",
    "no expression at all",
    # numbers
    "{{ 0 }}",
    "{{ 10 }}",
    "{{ 1.5 }}",
    "{{ 0.25 * params.x }}",
    "{{ 007 }}",
    "{{ 1_000 }}",
    "{{ 1e3 }}",
    "{{ 1.5e-3 }}",
    "{{ 0x1F }}",
    "{{ 0o17 }}",
    "{{ 0b101 }}",
    "{{ 00 }}",
    "{{ 1. }}",
    "{{ .5 }}",
    "{{ -1 }}",
    # operators
    "{{ 2 ** 10 }}",
    "{{ params.total // 3 }}",
    "{{ params.a == params.b }}",
    "{{ params.a != 'x' }}",
    "{{ params.a >= 1 and params.a <= 10 }}",
    "{{ params.a < 1 or params.a > 10 }}",
    "{{ params.a % 2 }}",
    "{{ params.a ~ '-' ~ params.b }}",
    "{{ (params.a + 1) * (params.b - 1) / 2 }}",
    "{{ params.xs[1:3] }}",
    "{{ params.xs[::2] }}",
    "{{ [1, 2, 3] }}",
    "{{ (1, 2) }}",
    # keywords
    "{{ not params.flag }}",
    "{{ 'a' in params.list }}",
    "{{ params.x is defined }}",
    "{{ params.x is not none }}",
    "{{ params.x not in ['a', 'b'] }}",
    "{{ params.a if params.b else params.c }}",
    "{{ true and false or none }}",
    "{{ True }}",
    # unicode names and text
    "{{ é }}",
    "{{ params.café }}",
    "{{ données }}",
    "Grüße, {{ params.name }}!",
    "{{ params.a\u00a0}}",
    # text around expressions, several expressions
    "Hello {{ params.name }}, you have {{ params.count }} messages",
    "{{ params.a }}{{ params.b }}",
    "{{ params.a }} and {{ params.b }} and {{ params.c }}",
    "prefix-{{ params.x }}-suffix",
    "{ {{ params.x }} }",
    "{{{ params.x }}}",
    "a }} b",
    "{{ params.x }}}}",
    # unterminated and broken expressions
    "{{ params.x",
    "{{ params.x }",
    "{{",
    "{{ 'unterminated }}",
    "{{ params.x )}}",
    "{{ (params.x }}",
    "{{ params.xs[0 }}",
    "{{ params.x ! y }}",
    "{{ params. }}",
    "{{ | upper }}",
    "{{ }}",
    "{{ params.a }}{{",
    # dict literals
    "{{ {'a': 1, 'b': params.x} }}",
    "{{ {'nested': {'k': [1, 2]}} | tojson }}",
    "{{ dict(a=1) }}",
    # whitespace control
    "{{- params.x -}}",
    "{{ params.x -}}",
    "{{- params.x }}",
    "{{ params.x +}}",
    "{{ params.x-}}",
    "{{ params.x - 1 }}",
    "a\n  {{- params.x -}}\n  b",
    # blocks and comments
    "{% if params.flag %}yes{% else %}no{% endif %}",
    "{% for x in params.xs %}{{ x }},{% endfor %}",
    "{% set y = params.x %}{{ y }}",
    "{# a comment #}{{ params.x }}",
    "{# {{ not an expression }} #}",
    "{% raw %}{{ kept }}{% endraw %}",
    "{%- if params.x -%} x {%- endif -%}",
    # carriage returns and other whitespace
    "{{ params.a }}\r\n",
    "line\r\n{{ params.a }}",
    "{{\tparams.a\t}}",
    "{{\nparams.a\n}}",
    "{{ params.a\x0b}}",
]


def jinja_tokens(source: str) -> list[TokenTuple] | None:
    """Jinja's own token stream, or None when Jinja's lexer rejects the source."""
    try:
        return [(t.lineno, t.type, t.value) for t in ENV._tokenize(source, None)]
    except TemplateSyntaxError:
        return None


def fast(source: str) -> list[TokenTuple] | None:
    tokens = fast_tokens(source)
    return None if tokens is None else [(t.lineno, t.type, t.value) for t in tokens]


def check_invisible(source: str) -> None:
    """fast_tokens declines, or agrees with Jinja; where Jinja's lexer rejects the
    source, the fast tokens must not parse either (Jinja then reports the error)."""
    got = fast(source)
    if got is None:
        return
    expected = jinja_tokens(source)
    if expected is not None:
        assert got == expected
    else:
        with pytest.raises(TemplateSyntaxError):
            templating._ANALYSIS_ENV.parse(source)


def test_corpus_is_large_and_has_no_repeats() -> None:
    assert len(CORPUS) >= 60
    assert len(set(CORPUS)) == len(CORPUS)


@pytest.mark.parametrize("source", CORPUS)
def test_fast_tokens_decline_or_equal_jinjas(source: str) -> None:
    check_invisible(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ params.orders | map(attribute='customer') | unique | sort | list }}",
        "{{ tasks['ocr'].output }}",
        "{{ 'a}}b' }}",
        "Summary of {{ params.name }}:\n{{ tasks.summarize.output }}\n",
        "{{ params.a >= 1 and params.a <= 10 }}",
        "{{ 2 ** 10 }}",
        "{{ params.total // 3 }}",
        "{{ 1.5 }}",
        "{{ 0 }}",
        "{{ tasks.split.output[0].pages[12] }}",
        "Hello {{ params.name }}, you have {{ params.count }} messages",
        "{{\nparams.a\n}}",
    ],
)
def test_the_common_shape_takes_the_fast_path(source: str) -> None:
    """Declining everything would be correct but useless: the usual templates are taken."""
    assert fast(source) == jinja_tokens(source)
    assert fast(source) is not None


@pytest.mark.parametrize(
    "source",
    [
        "{{- params.x -}}",
        "{% if x %}{% endif %}",
        "{# c #}",
        "{{ {'a': 1} }}",
        "{{ 1_000 }}",
        "{{ 0x1F }}",
        "{{ 007 }}",
        "{{ 1e3 }}",
        "{{ params.café }}",
        '{{ "a\\"b" }}',
        "{{ params.a }}\r\n",
    ],
)
def test_unusual_shapes_are_left_to_jinja(source: str) -> None:
    assert fast_tokens(source) is None


def test_path_with_numeric_steps_is_not_read_as_a_float() -> None:
    # Jinja reads `x.1.5` as x . 1 . 5 (an index, then another), never x . 1.5
    assert jinja_tokens("{{ x.1.5 }}") == [
        (1, "variable_begin", "{{"),
        (1, "name", "x"),
        (1, "dot", "."),
        (1, "integer", 1),
        (1, "dot", "."),
        (1, "integer", 5),
        (1, "variable_end", "}}"),
    ]
    assert fast("{{ x.1.5 }}") in (None, jinja_tokens("{{ x.1.5 }}"))


# templating.analyze reads a lone `{{ name }}` with a regex (its simple-path shortcut);
# Jinja's constants and globals must not be taken for context names there.
SIMPLE_PATH_CONSTANTS = ["{{ True }}", "{{ true }}", "{{ none }}", "{{ range }}"]


@pytest.mark.parametrize("source", [*CORPUS, *SIMPLE_PATH_CONSTANTS[1:]])
def test_analysis_equals_analysis_with_jinjas_lexer(source: str) -> None:
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError as error:
        with pytest.raises(TemplateSyntaxError) as caught:
            analyze(source)
        assert (caught.value.lineno, caught.value.message) == (error.lineno, error.message)
        return
    assert analyze(source) == templating._analyze_tree(tree)


def test_analysis_reads_task_and_param_references() -> None:
    analysis = analyze("{{ tasks.ocr.output.text | truncate(params.limit) ~ tasks['llm'] }}")
    assert analysis.task_refs == {"ocr", "llm"}
    assert analysis.param_refs == {"limit"}
    assert analysis.names == {"tasks", "params"}


# --- generated expressions ---------------------------------------------------------------

PIECES = [
    *["tasks", "params", "item", "x", "_y", "a1", "é", "café"],
    *["and", "or", "not", "in", "is", "if", "else", "true", "none"],
    *["0", "1", "10", "007", "1_000", "1.5", "0.25", "1e3", "0x1F", "0o7", ".5", "1."],
    *["+", "-", "*", "**", "/", "//", "%", "~", "==", "!=", ">=", "<=", "<", ">", "="],
    *["|", ",", ":", ";", ".", "(", ")", "[", "]", "{", "}", "!", "?", "@", "$", "\\"],
    *["'", '"', "'s'", '"d"', "'}}'", '"{{"', "''"],
    *["{{", "}}", "{{-", "-}}", "{%", "%}", "{#", "#}"],
    *[" ", "  ", "\n", "\t", "\r", "\x0b", "\u00a0", "text "],
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=16), st.booleans())
def test_generated_expressions_decline_or_equal_jinjas(parts: list[str], wrap: bool) -> None:
    body = "".join(parts)
    check_invisible("{{ " + body + " }}" if wrap else body)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="{}()[]'\". -|~0123456789abx_é\n", max_size=24))
def test_generated_text_declines_or_equals_jinjas(source: str) -> None:
    check_invisible(source)
