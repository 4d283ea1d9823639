"""Pipeline files → their compiled IRs by name, all or nothing (for `apply` and `diff`).

A folder is usable only when every file in it is valid and no two files define the same
pipeline: `apply` must not publish half a folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.load import Document, LoadError, iter_pipeline_files, load_bytes
from flowctl.engine.spec.validate import (
    CheckedFile,
    load_and_validate,
    validate_document,
    with_duplicate_names,
)
from flowctl.errors import Diagnostic


@dataclass(frozen=True, slots=True)
class CompiledPipeline:
    path: str
    ir: dict[str, Any]

    @property
    def name(self) -> str:
        name: str = self.ir["name"]
        return name


@dataclass(frozen=True, slots=True)
class Collection:
    """Every pipeline of a set of files, or the diagnostics that make the set unusable."""

    pipelines: tuple[CompiledPipeline, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    files: int = field(default=0)

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    def by_name(self) -> dict[str, CompiledPipeline]:
        return {pipeline.name: pipeline for pipeline in self.pipelines}


def collect_paths(paths: Sequence[str]) -> Collection:
    """The pipelines in files and folders of the work tree."""
    return _collect((*load_and_validate(path), path) for path in iter_pipeline_files(paths))


def collect_contents(contents: Iterable[tuple[str, bytes]]) -> Collection:
    """The pipelines in (path, bytes) pairs, e.g. files read from a git ref."""
    return _collect((*_validate_bytes(path, raw), path) for path, raw in contents)


def _validate_bytes(path: str, raw: bytes) -> tuple[Document | None, list[Diagnostic]]:
    try:
        document = load_bytes(raw, path)
    except LoadError as error:
        return None, [error.diagnostic]
    return document, validate_document(document)


def _collect(checked: Iterable[tuple[Document | None, list[Diagnostic], str]]) -> Collection:
    results: list[CheckedFile] = []
    pipelines: list[CompiledPipeline] = []
    for document, diagnostics, path in checked:
        if document is None or diagnostics:
            results.append(CheckedFile(path, tuple(diagnostics)))
            continue
        ir = compile_document(document)
        position = document.position(("metadata", "name"))
        results.append(CheckedFile(path, (), ir["name"], position))
        pipelines.append(CompiledPipeline(path, ir))
    found = tuple(d for result in with_duplicate_names(results) for d in result.diagnostics)
    if found:
        return Collection(diagnostics=found, files=len(results))
    return Collection(tuple(pipelines), files=len(results))
