"""Every error a user can see, in one place.

Errors are raised deep in the code and rendered once, at the CLI or API edge, as one
clean line (never a traceback). Each class knows its exit code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a pipeline file, with the position of the offending node."""

    path: str
    line: int  # 1-based; 0 when the problem is about the whole file
    column: int  # 1-based
    message: str
    rule: str
    hint: str | None = None
    severity: str = "error"

    def format(self) -> str:
        text = (
            f"{self.path}:{self.line}:{self.column}: {self.severity}: {self.message} [{self.rule}]"
        )
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "message": self.message,
            "rule": self.rule,
            "hint": self.hint,
        }


class FlowctlError(Exception):
    """Base of the errors a user sees; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ParamsError(FlowctlError):
    """Run parameters do not match `spec.params`."""

    exit_code = 2


class RenderError(FlowctlError):
    """A Jinja expression failed while rendering a task's inputs."""

    def __init__(self, task_id: str, field: str, expression: str, reason: str) -> None:
        self.task_id = task_id
        self.field = field
        self.expression = expression
        self.reason = reason
        super().__init__(f"task {task_id!r}: cannot render {field} {expression!r}: {reason}")


class ExecutorError(FlowctlError):
    """An executor failed in a way the user should read (not a bug in flowctl).

    `retryable=False` says that another attempt cannot succeed (a refused address, a
    missing file, a 401): the orchestrator then fails the task without using its retries.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class NotFoundError(FlowctlError):
    """An execution, definition or file that was asked for does not exist."""
