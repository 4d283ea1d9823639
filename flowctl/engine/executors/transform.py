"""`transform`: outputs its rendered `value`.

It shapes data between tasks, and is the no-op task of the benchmarks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from flowctl.engine.executors.base import BaseExecutor, TaskContext
from flowctl.schemas import load_schema


class TransformExecutor(BaseExecutor):
    name: ClassVar[str] = "transform"
    with_schema: ClassVar[dict[str, Any]] = load_schema("executors/transform")

    async def run(self, ctx: TaskContext, params: dict[str, Any]) -> Any:
        return params["value"]
