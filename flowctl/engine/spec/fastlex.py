"""A fast tokenizer for the common shape of pipeline templates, feeding Jinja's own parser.

Validating a pipeline parses every expression in it, and Jinja's lexer spends ~75 µs
on a one-line expression (a Python-level loop per token), two thirds of the parse.
For text with `{{ … }}` expressions only (no blocks, comments, whitespace control,
dict literals, escapes or exotic numbers) one C-level regex scan produces the same
tokens; anything else returns None and Jinja's lexer takes over. It is used only for
analysis: rendering always compiles with Jinja's own lexer, and a syntax error found
with these tokens is confirmed by Jinja's lexer before it is reported
(tests/spec/test_fastlex.py compares both token streams on a corpus).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from jinja2.lexer import Token, TokenStream

_EXPRESSION_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<end>\}\})
    | (?<!\.)(?P<float>[0-9]+\.[0-9]+)(?![0-9_.eE])  # `x.1.5` is x, 1, 5 for Jinja
    | (?P<integer>0|[1-9][0-9]*)(?![0-9_.xXoObBeE])
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*+)(?![^\x00-\x7f])
    | '(?P<single>[^'\\]*)'
    | "(?P<double>[^"\\]*)"
    | (?P<operator>\*\*|//|==|!=|>=|<=|[-+/*%~\[\]().:|,;=<>])
    )""",
    re.VERBOSE,
)
_OPERATORS = {
    "+": "add",
    "-": "sub",
    "/": "div",
    "//": "floordiv",
    "*": "mul",
    "%": "mod",
    "**": "pow",
    "~": "tilde",
    "[": "lbracket",
    "]": "rbracket",
    "(": "lparen",
    ")": "rparen",
    "==": "eq",
    "!=": "ne",
    ">": "gt",
    ">=": "gteq",
    "<": "lt",
    "<=": "lteq",
    "=": "assign",
    ".": "dot",
    ":": "colon",
    "|": "pipe",
    ",": "comma",
    ";": "semicolon",
}


def fast_tokens(source: str) -> list[Token] | None:
    """Jinja's tokens for `source`, or None when it is not the simple shape."""
    if "{%" in source or "{#" in source or "{{-" in source or "\r" in source:
        return None
    if source.endswith("\n"):  # Jinja drops one trailing newline (keep_trailing_newline)
        source = source[:-1]
    tokens: list[Token] = []
    position, lineno = 0, 1
    while True:
        start = source.find("{{", position)
        text = source[position:] if start < 0 else source[position:start]
        if text:
            tokens.append(Token(lineno, "data", text))
            lineno += text.count("\n")
        if start < 0:
            return tokens
        tokens.append(Token(lineno, "variable_begin", "{{"))
        position = start + 2
        while True:
            match = _EXPRESSION_TOKEN.match(source, position)
            if match is None:
                return None  # something unusual (or an error): let Jinja's lexer decide
            lineno += source.count("\n", position, match.start(match.lastgroup or 0))
            position = match.end()
            kind = match.lastgroup or ""
            if kind == "end":
                if source[match.start(kind) - 1] in "-+":
                    return None
                tokens.append(Token(lineno, "variable_end", "}}"))
                break
            value = match.group(kind)
            if kind == "float":
                tokens.append(Token(lineno, "float", float(value)))  # type: ignore[arg-type]
            elif kind == "integer":
                tokens.append(Token(lineno, "integer", int(value)))  # type: ignore[arg-type]
            elif kind in ("single", "double"):
                tokens.append(Token(lineno, "string", value))
                lineno += value.count("\n")
            elif kind == "name":
                tokens.append(Token(lineno, "name", value))
            else:
                tokens.append(Token(lineno, _OPERATORS[value], value))


def token_stream(tokens: list[Token], name: str | None, filename: str | None) -> TokenStream:
    def generate() -> Iterator[Token]:
        yield from tokens

    return TokenStream(generate(), name, filename)
