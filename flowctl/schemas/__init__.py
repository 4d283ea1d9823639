"""The JSON Schemas that ship with flowctl: pipeline, TaskFlow IR, executors' `with:` blocks."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

SCHEMA_FILES = resources.files(__name__)


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Schema by file stem: "pipeline", "taskflow", or "executors/<name>"."""
    text = SCHEMA_FILES.joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def builtin_executor_names() -> frozenset[str]:
    """Names of the built-in executors: one `with:` schema file each."""
    folder = SCHEMA_FILES.joinpath("executors")
    return frozenset(
        p.name.removesuffix(".schema.json")
        for p in folder.iterdir()
        if p.name.endswith(".schema.json")
    )
