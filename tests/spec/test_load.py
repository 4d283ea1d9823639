"""The YAML loader as a user meets it: what a file means, where an error points, and
that hostile files are refused quickly with one clear diagnostic."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowctl.engine.spec.load import (
    MAX_FILE_BYTES,
    Document,
    LoadError,
    load_bytes,
    load_file,
    load_text,
)
from flowctl.errors import Diagnostic

FLOWCTL = Path(sys.executable).with_name("flowctl")
SAFETY_SECONDS = 1.0  # a limit against hangs and blow-ups, not a benchmark


def within_a_second(load: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        return load()
    finally:
        elapsed = time.perf_counter() - started
        assert elapsed < SAFETY_SECONDS, f"took {elapsed:.2f} s"


def refused(load: Callable[[], Any]) -> Diagnostic:
    """The diagnostic of a load that must fail, and fail fast."""
    with pytest.raises(LoadError) as caught:
        within_a_second(load)
    return caught.value.diagnostic


def error_of(text: str) -> Diagnostic:
    return refused(lambda: load_text(text, "p.yaml"))


def where(diagnostic: Diagnostic) -> tuple[str, int, int]:
    return diagnostic.rule, diagnostic.line, diagnostic.column


# --- what a file means: the YAML 1.2 core schema ---------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        # YAML 1.1 booleans are plain words in 1.2 (the "Norway problem")
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("NO", "NO"),
        ("true", True),
        ("True", True),
        ("FALSE", False),
        # dates and times stay text; executors decide what they mean
        ("2024-01-31", "2024-01-31"),
        ("2024-01-31T10:00:00Z", "2024-01-31T10:00:00Z"),
        ("12:30", "12:30"),  # sexagesimal 750 in YAML 1.1
        # integers
        ("0", 0),
        ("42", 42),
        ("-7", -7),
        ("+3", 3),
        ("010", 10),  # decimal in 1.2, not octal
        ("0o17", 15),
        ("0x1F", 31),
        ("0xff", 255),
        ("1_000", "1_000"),  # no underscores in 1.2
        ("0b101", "0b101"),  # no binary in 1.2
        # floats
        ("1.5", 1.5),
        ("-0.25", -0.25),
        ("1e3", 1000.0),
        ("6.02E+23", 6.02e23),
        (".5", 0.5),
        # null, in every form
        ("~", None),
        ("null", None),
        ("Null", None),
        ("NULL", None),
        ("", None),
        ("nil", "nil"),
        ("none", "none"),
        # quoting always means text
        ("'true'", "true"),
        ('"42"', "42"),
        ("'null'", "null"),
        ("''", ""),
        # explicit core tags
        ("!!str 42", "42"),
        ("!!int '7'", 7),
        ("!!float 1", 1.0),
        ("!!bool 'true'", True),
        ("!!null ''", None),
    ],
)
def test_scalars_follow_the_yaml_1_2_core_schema(written: str, expected: Any) -> None:
    value = load_text(f"value: {written}\n").data["value"]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("written", [".inf", "-.Inf", "+.INF", ".nan", ".NaN", "1e999", "-1e999"])
def test_non_finite_numbers_are_refused(written: str) -> None:
    """The IR is JSON, which has no infinity or NaN (a timeout of .inf would not compile)."""
    with pytest.raises(LoadError) as caught:
        load_text(f"spec:\n  timeout: {written}\n")
    diagnostic = caught.value.diagnostic
    assert (diagnostic.rule, diagnostic.line, diagnostic.column) == ("non-finite-number", 2, 12)


def test_mapping_keys_are_text_like_in_json() -> None:
    assert load_text("1: a\ntrue: b\nnull: c\n").data == {"1": "a", "true": "b", "null": "c"}


def test_an_explicit_tag_with_a_wrong_value_is_refused() -> None:
    diagnostic = error_of("count: !!int twelve\n")
    assert where(diagnostic) == ("yaml-tag", 1, 8)
    assert "'twelve' is not a valid int" in diagnostic.message


def test_a_realistic_pipeline_loads_to_plain_data() -> None:
    text = (
        "apiVersion: flowctl/v1\n"
        "kind: Pipeline\n"
        "metadata: {name: demo, labels: {team: docs}}\n"
        "spec:\n"
        "  tasks:\n"
        "    - id: ocr\n"
        "      executor: transform\n"
        "      with:\n"
        "        value: |\n"
        "          {{ params.text }}\n"
        "        retries: 0x3\n"
    )
    data = load_text(text).data
    assert data["metadata"] == {"name": "demo", "labels": {"team": "docs"}}
    task = data["spec"]["tasks"][0]
    assert task["with"] == {"value": "{{ params.text }}\n", "retries": 3}


# --- merge keys ---------------------------------------------------------------------------


def test_merge_key_copies_a_mapping_and_own_keys_win() -> None:
    text = (
        "defaults: &defaults {retries: 2, timeout: 10s}\ntask:\n  <<: *defaults\n  timeout: 30s\n"
    )
    data = load_text(text).data
    assert data["task"] == {"retries": 2, "timeout": "30s"}
    assert data["defaults"] == {"retries": 2, "timeout": "10s"}  # the source is untouched


def test_own_keys_win_even_when_written_before_the_merge() -> None:
    data = load_text("base: &b {x: 1, y: 1}\nd: {y: 2, <<: *b}\n").data
    assert data["d"] == {"x": 1, "y": 2}


def test_merge_of_a_list_earlier_sources_win() -> None:
    text = "a: &a {x: a}\nb: &b {x: b, y: b}\nd:\n  <<: [*a, *b]\n  z: d\n"
    assert load_text(text).data["d"] == {"x": "a", "y": "b", "z": "d"}


def test_a_quoted_merge_key_is_an_ordinary_key() -> None:
    assert load_text("'<<': {x: 1}\n").data == {"<<": {"x": 1}}


def test_merge_of_something_else_than_a_mapping_is_refused() -> None:
    assert where(error_of("items: &i [1, 2]\nd:\n  <<: *i\n")) == ("yaml-merge", 1, 15)
    assert where(error_of("d:\n  <<: [{x: 1}, 3]\n")) == ("yaml-merge", 2, 16)


# --- duplicate keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("name: a\nkind: b\nname: c\n", 3, 1),
        ("spec:\n  tasks: []\n  params: {}\n  tasks: [1]\n", 4, 3),
        ("with: {a: 1, b: 2, a: 3}\n", 1, 20),
        ("list:\n  - id: x\n    id: y\n", 3, 5),
        ("a: 1\n'a': 2\n", 2, 1),  # quoting does not make a different key
        ("base: &b {x: 1}\nd:\n  <<: *b\n  x: 2\n  x: 3\n", 5, 3),
    ],
)
def test_duplicate_key_points_at_the_second_key(text: str, line: int, column: int) -> None:
    diagnostic = error_of(text)
    assert where(diagnostic) == ("duplicate-key", line, column)
    assert diagnostic.path == "p.yaml"
    assert "duplicate key" in diagnostic.message
    assert diagnostic.hint


def test_a_key_overriding_a_merged_key_is_not_a_duplicate() -> None:
    assert load_text("b: &b {x: 1}\nd: {<<: *b, x: 2}\n").data["d"] == {"x": 2}


# --- positions --------------------------------------------------------------------------------

POSITIONED = """\
apiVersion: flowctl/v1
metadata:
  name: demo
spec:
  tasks:
    - id: first
      executor: transform
    - id: second
      with:
        value: "{{ tasks.first.output }}"
        items: [a, b,
                c]
"""


@pytest.fixture
def positioned() -> Document:
    return load_text(POSITIONED, "pipelines/demo.yaml")


@pytest.mark.parametrize(
    ("keys", "at_key", "expected"),
    [
        ((), False, (1, 1)),
        (("apiVersion",), False, (1, 13)),
        (("apiVersion",), True, (1, 1)),
        (("metadata", "name"), False, (3, 9)),
        (("metadata", "name"), True, (3, 3)),
        (("spec", "tasks"), False, (6, 5)),
        (("spec", "tasks", 0), False, (6, 7)),
        (("spec", "tasks", 1), False, (8, 7)),
        (("spec", "tasks", 1, "id"), True, (8, 7)),
        (("spec", "tasks", 1, "id"), False, (8, 11)),
        (("spec", "tasks", 0, "executor"), True, (7, 7)),
        (("spec", "tasks", 1, "with", "value"), False, (10, 16)),
        (("spec", "tasks", 1, "with", "items", 2), False, (12, 17)),
        # a missing key or index: the nearest parent that exists
        (("spec", "tasks", 1, "with", "missing"), False, (10, 9)),
        (("spec", "tasks", 7, "id"), False, (6, 5)),
        (("metadata", "name", "deeper"), False, (3, 9)),
    ],
)
def test_position_of_a_node(
    positioned: Document,
    keys: tuple[str | int, ...],
    at_key: bool,
    expected: tuple[int, int],
) -> None:
    assert positioned.position(keys, at_key=at_key) == expected


def test_diagnostic_carries_path_position_rule_and_hint(positioned: Document) -> None:
    diagnostic = positioned.diagnostic(
        ("spec", "tasks", 0, "executor"), "unknown executor", "unknown-executor", "try x"
    )
    assert (diagnostic.path, diagnostic.line, diagnostic.column) == ("pipelines/demo.yaml", 7, 17)
    assert diagnostic.format() == (
        "pipelines/demo.yaml:7:17: error: unknown executor [unknown-executor]\n  hint: try x"
    )
    at_key = positioned.diagnostic(("metadata", "name"), "m", "r", at_key=True)
    assert (at_key.line, at_key.column) == (3, 3)


def test_a_bom_does_not_shift_positions() -> None:
    document = load_bytes(b"\xef\xbb\xbfa: 1\nb: [x, y]\n")
    assert document.data == {"a": 1, "b": ["x", "y"]}
    assert document.position(("b", 1)) == (2, 8)


def test_positions_count_characters_not_bytes() -> None:
    document = load_text("name: café\nnext: [é, ü, x]\n")
    assert document.position(("next", 2)) == (2, 14)


# --- syntax errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("a: [1, 2\nb: 3\n", 2, 2, "flow sequence"),
        ("a: b: c\n", 1, 5, "mapping values are not allowed"),
        ("a:\n\tb: 1\n", 2, 1, "cannot start any token"),
        ("a: 'unclosed\n", 2, 1, "quoted scalar"),
        ("a: 1\n b: 2\n", 2, 3, "mapping values are not allowed"),
        ("- a\nb: c\n", 2, 1, "block"),
        ("a: *nowhere\n", 1, 4, "undefined alias"),
        ("a: 1\nb: é\nc: x\x07\n", 3, 5, "control characters are not allowed"),
    ],
)
def test_syntax_error_has_line_and_column(text: str, line: int, column: int, words: str) -> None:
    diagnostic = error_of(text)
    assert where(diagnostic) == ("yaml-syntax", line, column)
    assert words in diagnostic.message
    assert "\n" not in diagnostic.message


# --- hostile and broken files ---------------------------------------------------------------------


def billion_laughs() -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 9):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused() -> None:
    diagnostic = error_of(billion_laughs())
    assert where(diagnostic) == ("alias-bomb", 1, 1)
    assert "1,000,000" in diagnostic.message


def test_merge_keys_cannot_be_used_to_multiply_work() -> None:
    keys = ", ".join(f"k{i}: {i}" for i in range(5000))
    text = f"base: &b {{{keys}}}\ncopies:\n" + "  - {<<: *b}\n" * 5000
    assert error_of(text).rule == "alias-bomb"


def test_aliases_within_the_budget_are_shared_not_copied() -> None:
    document = within_a_second(lambda: load_text("a: &a [1, 2]\nb: *a\nc: [*a, *a]\n"))
    assert document.data == {"a": [1, 2], "b": [1, 2], "c": [[1, 2], [1, 2]]}


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("&loop [*loop]\n", 1, 1),
        ("a: &a [x, *a]\n", 1, 4),
        ("a: &a {self: *a}\n", 1, 4),
        ("a: &a\n  b:\n    - c: *a\n", 1, 4),
    ],
)
def test_recursive_alias_is_refused(text: str, line: int, column: int) -> None:
    assert where(error_of(text)) == ("recursive-alias", line, column)


def test_1000_level_nested_flow_sequence_is_refused() -> None:
    diagnostic = error_of("[" * 1000 + "]" * 1000 + "\n")
    assert diagnostic.rule in ("too-deep", "yaml-syntax")
    assert diagnostic.line == 1 and diagnostic.column > 1


def test_100_level_nested_block_mapping_is_refused() -> None:
    text = "".join("  " * level + f"k{level}:\n" for level in range(100)) + "  " * 100 + "end\n"
    diagnostic = error_of(text)
    assert diagnostic.rule in ("too-deep", "yaml-syntax")
    assert diagnostic.line > 1 and diagnostic.column > 1


def test_nesting_far_past_any_limit_is_refused() -> None:
    assert error_of("[" * 200_000 + "\n").rule in ("too-deep", "yaml-syntax")
    assert error_of("- " * 100_000 + "x\n").rule in ("too-deep", "yaml-syntax")


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert load_text("[" * 60 + "]" * 60 + "\n").data is not None


def test_aliases_cannot_nest_past_the_depth_limit() -> None:
    # Each anchor is shallow; expanded, the last one is 100 x 50 levels deep, which
    # would overflow every recursive walk downstream (validation, rendering, JSON).
    lines = []
    for level in range(100):
        inner = f"*a{level - 1}" if level else "leaf"
        lines.append(f"a{level}: &a{level} " + "[" * 50 + inner + "]" * 50)
    diagnostic = error_of("\n".join(lines) + "\n")
    assert diagnostic.rule == "too-deep"
    assert diagnostic.line >= 1 and diagnostic.column >= 1


def test_file_over_10_mib_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:  # ~50 MB, sparse: cheap to make
        handle.write(b"apiVersion: flowctl/v1\n")
        handle.truncate(50 * 1024 * 1024)
    tracemalloc.start()
    try:
        diagnostic = refused(lambda: load_file(big))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"loading allocated {peak} bytes: it read the file"
    assert (diagnostic.rule, diagnostic.path) == ("file-too-large", str(big))
    assert "50.0 MiB" in diagnostic.message and "10 MiB" in diagnostic.message


def test_a_file_at_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "padded.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * (MAX_FILE_BYTES - 6) + b"\n")
    assert within_a_second(lambda: load_file(path)).data == {"a": 1}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_that_streams_too_much_is_refused(tmp_path: Path) -> None:
    # `flowctl validate <(generate)`: the size is unknown until it is read.
    fifo = tmp_path / "stream.yaml"
    os.mkfifo(fifo)

    def write() -> None:
        chunk = b"# " + b"x" * 65533 + b"\n"
        try:
            with fifo.open("wb") as handle:
                for _ in range(MAX_FILE_BYTES // len(chunk) + 2):
                    handle.write(chunk)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    diagnostic = refused(lambda: load_file(fifo))
    writer.join(timeout=5)
    assert diagnostic.rule == "file-too-large"
    assert "over 10 MiB" in diagnostic.message


def test_a_missing_file_is_an_io_error(tmp_path: Path) -> None:
    diagnostic = refused(lambda: load_file(tmp_path / "nope.yaml"))
    assert diagnostic.rule == "io"
    assert "No such file" in diagnostic.message


def test_python_tags_never_execute_anything(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    payloads = [
        f"!!python/object/apply:os.system ['touch {marker}']",
        f"!!python/object/new:os.system ['touch {marker}']",
        f"!!python/object/apply:pathlib.Path.touch [{marker}]",
        f"!!python/object:os.system {{command: 'touch {marker}'}}",
        "!!python/name:os.system",
        "!!python/module:os",
    ]
    for payload in payloads:
        diagnostic = error_of(f"apiVersion: flowctl/v1\nrun: {payload}\n")
        assert where(diagnostic) == ("yaml-tag", 2, 6), payload
        assert "python/" in diagnostic.message
    assert not marker.exists()


@pytest.mark.parametrize(
    "value",
    ["!foo bar", "!foo {a: 1}", "!foo [1]", "!<tag:example.com,2024:x> 1", "!!binary aGk="],
)
def test_tags_outside_the_core_schema_are_refused(value: str) -> None:
    diagnostic = error_of(f"a: 1\nb: {value}\n")
    assert where(diagnostic) == ("yaml-tag", 2, 4)
    assert "tag" in diagnostic.message


def test_non_utf8_bytes_point_at_the_bad_byte() -> None:
    diagnostic = refused(lambda: load_bytes(b"a: 1\nname: caf\xe9\n", "latin1.yaml"))
    assert where(diagnostic) == ("encoding", 2, 10)
    assert "0xe9" in diagnostic.message
    assert diagnostic.hint == "save the file as UTF-8"


def test_non_utf8_column_counts_characters_before_the_bad_byte() -> None:
    diagnostic = refused(lambda: load_bytes("a: 1\nname: café ".encode() + b"\xff\n"))
    assert where(diagnostic) == ("encoding", 2, 12)


def test_unpaired_surrogate_from_a_python_caller_is_an_encoding_error() -> None:
    assert where(error_of("a: 1\nb: x\ud800\n")) == ("encoding", 2, 5)


@pytest.mark.parametrize("text", ["", "\n\n", "   \n", "# only\n# comments\n", "\ufeff"])
def test_empty_file_is_refused(text: str) -> None:
    assert where(error_of(text)) == ("empty-file", 1, 1)


def test_two_documents_are_refused() -> None:
    diagnostic = error_of("a: 1\n---\nb: 2\n")
    assert where(diagnostic) == ("multiple-documents", 2, 1)
    assert "one pipeline per file" in diagnostic.message


def test_one_document_with_markers_is_accepted() -> None:
    assert load_text("%YAML 1.2\n---\na: 1\n...\n").data == {"a": 1}


@pytest.mark.parametrize("raw", [b"\xef\xbb\xbfa: 1\n", "\ufeffa: 1\n".encode()])
def test_utf8_bom_is_accepted(raw: bytes, tmp_path: Path) -> None:
    assert load_bytes(raw).data == {"a": 1}
    path = tmp_path / "bom.yaml"
    path.write_bytes(raw)
    assert load_file(path).data == {"a": 1}


def test_load_error_message_is_the_formatted_diagnostic() -> None:
    with pytest.raises(
        LoadError, match=r"^p\.yaml:3:1: error: duplicate key 'a' \[duplicate-key\]"
    ):
        load_text("a: 1\nb: 2\na: 3\n", "p.yaml")


# --- through the command line -------------------------------------------------------------------

HOSTILE_FILES: dict[str, tuple[bytes, str, int, int]] = {
    # name: (content, rule, line, column)
    "laughs.yaml": (billion_laughs().encode(), "alias-bomb", 1, 1),
    "loop.yaml": (b"a: &a [x, *a]\n", "recursive-alias", 1, 4),
    "deep-flow.yaml": (b"[" * 1000 + b"]" * 1000 + b"\n", "too-deep", 1, 66),
    "python.yaml": (b"a: !!python/object/apply:os.system ['true']\n", "yaml-tag", 1, 4),
    "custom-tag.yaml": (b"a: 1\nb: !foo x\n", "yaml-tag", 2, 4),
    "latin1.yaml": (b"a: 1\nname: caf\xe9\n", "encoding", 2, 10),
    "empty.yaml": (b"", "empty-file", 1, 1),
    "comments.yaml": (b"# nothing here\n", "empty-file", 1, 1),
    "two.yaml": (b"a: 1\n---\nb: 2\n", "multiple-documents", 2, 1),
    "duplicate.yaml": (b"a: 1\nb: 2\na: 3\n", "duplicate-key", 3, 1),
    "syntax.yaml": (b"a: [1, 2\nb: 3\n", "yaml-syntax", 2, 2),
    "control.yaml": (b"a: \x07\n", "yaml-syntax", 1, 4),
}


def run_validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FLOWCTL), "validate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_reports_each_hostile_file_on_one_line(tmp_path: Path) -> None:
    for name, (content, *_) in HOSTILE_FILES.items():
        (tmp_path / name).write_bytes(content)
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)

    result = run_validate("--jobs", "1", str(tmp_path))

    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for name, (_, rule, line, column) in HOSTILE_FILES.items():
        pattern = rf"^{re.escape(str(tmp_path / name))}:{line}:{column}: error: .+ \[{rule}\]$"
        assert re.search(pattern, result.stdout, re.MULTILINE), (name, result.stdout)
    assert re.search(
        rf"^{re.escape(str(big))}:0:0: error: .+ \[file-too-large\]$", result.stdout, re.M
    )


def test_cli_on_one_bad_file_exits_1_with_a_clean_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"apiVersion: flowctl/v1\nkind: Pipeline\nkind: Other\n")
    result = run_validate(str(bad))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        f"{bad}:3:1: error: duplicate key 'kind' [duplicate-key]"
    )
    assert "Traceback" not in result.stderr
