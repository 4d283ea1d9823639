"""YAML text → plain data, keeping the node tree so errors can point at a line and column.

Why PyYAML's libyaml composer and not ruamel.yaml's round-trip loader: on a 70-line
pipeline the composer takes ~0.17 ms against ~5.7 ms for ruamel's round-trip loader
(see benchmarks/), and its nodes carry the same line/column marks. We do not use
PyYAML's constructors: we build the data ourselves from the nodes, so that

- the YAML 1.2 core schema applies (`yes`, `no`, `on` and dates stay strings);
- duplicate keys are errors, not silently overwritten;
- any tag outside the core schema (`!!python/object`, `!custom`) is an error, so
  loading never executes or instantiates anything;
- aliases are shared, not copied, and a document whose aliases would expand past a
  budget ("billion laughs") is rejected before anything walks it.

Positions are looked up in the node tree only when an error is reported.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
import yaml.cyaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from flowctl.errors import Diagnostic

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
MAX_EXPANDED_NODES = 1_000_000

_CORE = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_CORE + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = _CORE + "seq", _CORE + "map", _CORE + "merge"


_PLAIN_SCALARS = [
    (_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")),
    (_NULL, re.compile(r"^(?:~|null|Null|NULL|)$")),
    (_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")),
    (
        _FLOAT,
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
    ),
    (_MERGE, re.compile(r"^<<$")),
]
_MAYBE_NOT_STRING = frozenset("tTfFnN~-+.0123456789<")


class _Resolver12(yaml.resolver.BaseResolver):
    """Implicit tags of the YAML 1.2 core schema (PyYAML resolves YAML 1.1's).

    One flat method instead of PyYAML's path-resolver machinery: the composer calls it
    for every node, and it was the largest cost of loading after the C parser itself.
    """

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if implicit[0] and (not value or value[0] in _MAYBE_NOT_STRING):
                for tag, pattern in _PLAIN_SCALARS:
                    if pattern.match(value):
                        return tag
            return _STR
        return _SEQ if kind is SequenceNode else _MAP


_BYTE_POSITIONS = getattr(yaml, "__with_libyaml__", False)

if _BYTE_POSITIONS:

    class _Composer(yaml.cyaml.CParser, _Resolver12):  # type: ignore[misc,name-defined]
        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)  # type: ignore[attr-defined]
            _Resolver12.__init__(self)

else:  # pragma: no cover - only without libyaml

    class _Composer(  # type: ignore[no-redef]
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        yaml.composer.Composer,
        _Resolver12,
    ):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            _Resolver12.__init__(self)


@dataclass(frozen=True, slots=True)
class Document:
    """A loaded YAML file: its data (JSON-compatible) and the node tree for positions."""

    path: str
    data: Any
    root: Node

    def position(self, keys: Sequence[str | int], *, at_key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the node at `keys`, or of its nearest existing parent.

        With `at_key`, a mapping entry is located by its key rather than its value
        (where an unknown or duplicate field should point).
        """
        node = self.root
        for index, key in enumerate(keys):
            child = _child(node, key, at_key=at_key and index == len(keys) - 1)
            if child is None:
                break
            node = child
        return node.start_mark.line + 1, node.start_mark.column + 1

    def diagnostic(
        self,
        keys: Sequence[str | int],
        message: str,
        rule: str,
        hint: str | None = None,
        *,
        at_key: bool = False,
    ) -> Diagnostic:
        line, column = self.position(keys, at_key=at_key)
        return Diagnostic(self.path, line, column, message, rule, hint)


def _child(node: Node, key: str | int, *, at_key: bool) -> Node | None:
    if isinstance(node, MappingNode):
        found = None
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == str(key):
                found = key_node if at_key else value_node
        return found
    if isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        child: Node = node.value[key]
        return child
    return None


class LoadError(Exception):
    """The file is not a usable YAML document; carries one diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(diagnostic.format())


def load_file(path: str | os.PathLike[str]) -> Document:
    """Read and load one pipeline file; raises LoadError with a positioned diagnostic."""
    name = os.fspath(path)
    try:
        size = os.stat(name).st_size
        if size <= MAX_FILE_BYTES:
            with open(name, "rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
            size = max(size, len(raw))  # a pipe or a growing file: stat did not know
    except OSError as error:
        raise LoadError(
            Diagnostic(name, 0, 0, f"cannot read file: {error.strerror}", "io")
        ) from None
    if size > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES // 1048576
        amount = f"{size / 1048576:.1f} MiB" if size > MAX_FILE_BYTES + 1 else f"over {limit} MiB"
        raise LoadError(
            Diagnostic(
                name,
                0,
                0,
                f"file is {amount}; pipeline files are limited to {limit} MiB",
                "file-too-large",
            )
        )
    return load_bytes(raw, name)


def load_bytes(raw: bytes, path: str = "<string>") -> Document:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        line_start = raw.rfind(b"\n", 0, error.start) + 1
        column = len(raw[line_start : error.start].decode("utf-8")) + 1  # characters, not bytes
        raise LoadError(
            Diagnostic(
                path,
                line,
                column,
                f"file is not valid UTF-8 (byte 0x{raw[error.start]:02x})",
                "encoding",
                "save the file as UTF-8",
            )
        ) from None
    return load_text(text, path)


def load_text(text: str, path: str = "<string>") -> Document:
    return _load_text(text, path)


def _load_text(text: str, path: str) -> Document:
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        composer = _Composer(text)
    except UnicodeEncodeError as error:  # lone surrogates, only from a Python caller
        line, column = _line_column(text, error.start)
        message = f"text holds an unpaired surrogate {text[error.start]!r}"
        raise LoadError(Diagnostic(path, line, column, message, "encoding")) from None
    try:
        root = composer.get_single_node()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = " ".join(p for p in (error.context, error.problem) if p) or "invalid YAML"
        if "expected a single document" in message:
            message = "file holds several YAML documents; put one pipeline per file"
            raise LoadError(Diagnostic(path, line, column, message, "multiple-documents")) from None
        raise LoadError(Diagnostic(path, line, column, message, "yaml-syntax")) from None
    except yaml.reader.ReaderError as error:  # a character YAML forbids, e.g. a control code
        position = error.position
        if _BYTE_POSITIONS:  # libyaml counts UTF-8 bytes
            position = len(text.encode("utf-8")[:position].decode("utf-8", "ignore"))
        line, column = _line_column(text, position)
        code = ord(error.character) if isinstance(error.character, str) else error.character
        message = f"{error.reason} (found character #x{code:04x})"
        raise LoadError(Diagnostic(path, line, column, message, "yaml-syntax")) from None
    except yaml.YAMLError as error:
        raise LoadError(Diagnostic(path, 1, 1, str(error), "yaml-syntax")) from None
    finally:
        composer.dispose()
    if root is None:
        raise LoadError(Diagnostic(path, 1, 1, "file is empty", "empty-file"))
    builder = _Builder(path)
    data = builder.build(root, 0)
    try:
        expanded = _expanded_size(root, {}) if builder.aliased else 0
    except RecursionError:
        expanded = MAX_EXPANDED_NODES + 1
    if expanded > MAX_EXPANDED_NODES:
        raise _alias_bomb(path)
    return Document(path, data, root)


def _alias_bomb(path: str) -> LoadError:
    return LoadError(
        Diagnostic(
            path,
            1,
            1,
            f"aliases expand to more than {MAX_EXPANDED_NODES:,} nodes",
            "alias-bomb",
            "flowctl refuses documents whose anchors and aliases multiply in size",
        )
    )


def _line_column(text: str, position: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - line_start + 1


class _Builder:
    """Turns a node tree into JSON-compatible data, with the checks listed above."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.built: dict[int, Any] = {}
        self.in_progress: set[int] = set()
        self.heights: dict[int, int] = {}
        self.merged_entries = 0
        self.aliased = False

    def fail(self, node: Node, message: str, rule: str, hint: str | None = None) -> LoadError:
        mark = node.start_mark
        return LoadError(Diagnostic(self.path, mark.line + 1, mark.column + 1, message, rule, hint))

    def build(self, node: Node, depth: int) -> Any:
        key = id(node)
        if key in self.built:
            self.aliased = True
            if depth + self.height(node) > MAX_DEPTH:
                raise self.fail(
                    node,
                    f"document is nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                    "too-deep",
                )
            return self.built[key]
        if key in self.in_progress:
            raise self.fail(node, "recursive alias: a node contains itself", "recursive-alias")
        if depth > MAX_DEPTH:
            raise self.fail(node, f"document is nested deeper than {MAX_DEPTH} levels", "too-deep")
        if isinstance(node, ScalarNode):
            value = self.scalar(node)
        else:
            self.in_progress.add(key)
            value = (
                self.mapping(node, depth)
                if isinstance(node, MappingNode)
                else self.sequence(node, depth)
            )
            self.in_progress.discard(key)
        self.built[key] = value
        return value

    def sequence(self, node: Node, depth: int) -> list[Any]:
        if node.tag != _SEQ:
            raise self.fail(node, f"tag {node.tag!r} is not allowed here", "yaml-tag")
        return [self.build(child, depth + 1) for child in node.value]

    def mapping(self, node: Node, depth: int) -> dict[str, Any]:
        if node.tag != _MAP:
            raise self.fail(node, f"tag {node.tag!r} is not allowed here", "yaml-tag")
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise self.fail(key_node, "mapping keys must be plain scalars", "complex-key")
            if key_node.tag == _MERGE:
                for name, value in self.merge_sources(value_node, depth).items():
                    merged.setdefault(name, value)
                continue
            key = key_node.value
            if key in result:
                raise self.fail(
                    key_node,
                    f"duplicate key {key!r}",
                    "duplicate-key",
                    "YAML keeps only the last value; remove one of them",
                )
            result[key] = self.build(value_node, depth + 1)
        return {**merged, **result} if merged else result

    def merge_sources(self, node: Node, depth: int) -> dict[str, Any]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            value = self.build(source, depth + 1)
            if not isinstance(value, dict):
                raise self.fail(source, "a merge key '<<' takes a mapping", "yaml-merge")
            self.merged_entries += len(value)  # merges copy: bound the work before it is done
            if self.merged_entries > MAX_EXPANDED_NODES:
                raise _alias_bomb(self.path)
            merged.update(value)
        return merged

    def height(self, node: Node) -> int:
        """Levels below an already built node, aliases expanded (bounded: it was built)."""
        key = id(node)
        if key not in self.heights:
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = node.value
            elif isinstance(node, MappingNode):
                for key_node, value_node in node.value:
                    merges = key_node.tag == _MERGE and isinstance(value_node, SequenceNode)
                    children.extend(value_node.value if merges else [value_node])
            self.heights[key] = 1 + max(map(self.height, children)) if children else 0
        return self.heights[key]

    def scalar(self, node: ScalarNode) -> Any:
        tag, value = node.tag, node.value
        if tag == _STR:
            return value
        try:
            if tag == _NULL:
                if value not in ("~", "null", "Null", "NULL", ""):
                    raise ValueError
                return None
            if tag == _BOOL:
                return {"true": True, "false": False}[value.lower()]
            if tag == _INT:
                if value.startswith("0o"):
                    return int(value[2:], 8)
                return int(value, 16) if value.startswith("0x") else int(value)
            if tag == _FLOAT:
                special = value.lstrip("+-").lower() in (".inf", ".nan")
                number = math.inf if special else float(value)
                if not math.isfinite(number):
                    raise self.fail(
                        node,
                        f"{value!r} is not a finite number",
                        "non-finite-number",
                        "pipelines compile to JSON, which has no infinity or NaN",
                    )
                return number
        except (ValueError, KeyError):
            raise self.fail(
                node, f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}", "yaml-tag"
            ) from None
        raise self.fail(
            node,
            f"tag {tag!r} is not allowed",
            "yaml-tag",
            "only plain YAML (strings, numbers, booleans, null, lists, mappings) is accepted",
        )


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Node count with every alias expanded, computed in time linear in the unique nodes."""
    key = id(node)
    if key in memo:
        return memo[key]
    size = 1
    if isinstance(node, MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    memo[key] = size
    return size


def iter_pipeline_files(paths: Sequence[str | os.PathLike[str]]) -> Iterator[str]:
    """Files named on the command line, and *.yaml/*.yml files under named folders, sorted."""
    for path in paths:
        name = os.fspath(path)
        if os.path.isdir(name):
            found: list[str] = []
            for folder, dirs, files in os.walk(name):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(
                    os.path.join(folder, f) for f in files if f.endswith((".yaml", ".yml"))
                )
            yield from sorted(found)
        else:
            yield name
