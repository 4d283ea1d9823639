"""A temporary git repository of pipelines, and flowctl run in this process.

Most commands run in-process (click's runner) to keep the tests fast; FlowctlError is
rendered as `main()` renders it, so exit codes and messages are what a user sees.
The end-to-end and concurrency tests run the real `flowctl` script instead.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from flowctl.cli.main import cli
from flowctl.engine.registry import connect
from flowctl.engine.state.models import WorkflowDefinition
from flowctl.errors import FlowctlError

FLOWCTL = Path(sys.executable).parent / "flowctl"


def pipeline(name: str, *, retries: int = 0, greeting: str = "hello", extra: str = "") -> str:
    """A valid pipeline; `retries`, `greeting` and `extra` (more tasks) vary its digest."""
    return textwrap.dedent(
        f"""\
        # yaml-language-server: $schema=../schemas/pipeline.schema.json
        apiVersion: flowctl/v1
        kind: Pipeline
        metadata: {{name: {name}}}
        spec:
          params:
            who: {{type: string, default: world}}
          defaults: {{retries: {retries}}}
          tasks:
            - id: greet
              executor: transform
              with: {{value: "{greeting} {{{{ params.who }}}}"}}
            - id: shout
              executor: transform
              with: {{value: "{{{{ tasks.greet.output | upper }}}}"}}
        """
    ) + textwrap.indent(textwrap.dedent(extra), "    ")


INVALID = """\
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: broken}
spec:
  tasks:
    - {id: a, executor: transfrom, with: {value: 1}}
"""


class GitRepo:
    """A git work tree under a temporary directory; every git call is made inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.name", "Ada Lovelace")
        self.git("config", "user.email", "ada@example.com")
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout.strip()

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


def flowctl(*args: str) -> Ran:
    """`flowctl ARGS` in this process, with main()'s rendering of FlowctlError."""
    result = CliRunner().invoke(cli, list(args))
    err = result.stderr
    code = result.exit_code
    if isinstance(result.exception, FlowctlError):
        err += f"error: {result.exception}\n"
        code = result.exception.exit_code
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(code, result.stdout, err)


def flowctl_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(FLOWCTL), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def definitions(url: str) -> list[WorkflowDefinition]:
    """Every stored version, by name then version."""
    engine = connect(url)
    try:
        with Session(engine) as session:
            query = select(WorkflowDefinition).order_by(
                WorkflowDefinition.name, WorkflowDefinition.version
            )
            return list(session.scalars(query).all())
    finally:
        engine.dispose()
