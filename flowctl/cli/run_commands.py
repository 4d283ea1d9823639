"""`flowctl run`, `resume`, `status`, `runs` and `db upgrade`: executions on this machine."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowctl.cli.options import database_option, output_option, settings_for
from flowctl.config import Settings
from flowctl.engine.states import TaskStatus, WorkflowStatus
from flowctl.errors import ParamsError

if TYPE_CHECKING:  # the engine (SQLAlchemy, ...) is imported only by commands that run
    from flowctl.engine.orchestrator import ExecutionResult

EXIT_CODES = {WorkflowStatus.COMPLETED: 0, WorkflowStatus.FAILED: 1, WorkflowStatus.CANCELLED: 130}


def _open_history(settings: Settings, *, memory: bool = False) -> Any:
    if memory:
        from flowctl.engine.state.history import MemoryHistory

        return MemoryHistory()
    from flowctl.engine.state.history import SqlHistory

    return SqlHistory(settings.database_url)


@click.command("run")
@click.argument("file", metavar="FILE|NAME")
@click.option(
    "-p",
    "--param",
    "assignments",
    multiple=True,
    metavar="NAME=VALUE",
    help="A param value; repeat for several.",
)
@click.option(
    "--params-file",
    type=click.Path(exists=True, dir_okay=False),
    help="A YAML or JSON mapping of param values (-p overrides it).",
)
@output_option
@database_option
@click.option(
    "--no-history",
    is_flag=True,
    help="Keep state in memory only: fastest, but the run cannot be resumed.",
)
def run_command(
    file: str,
    assignments: tuple[str, ...],
    params_file: str | None,
    output_format: str,
    database_url: str | None,
    no_history: bool,
) -> None:
    """Run the pipeline FILE here, and print its result.

    A NAME that is not a file runs the active version of that pipeline in the
    registry (`flowctl apply`); the execution records which version it ran.

    Exits 0 when the execution COMPLETED, 1 when it FAILED, 2 on bad params,
    130 when it was cancelled (Ctrl-C or SIGTERM; resume it with `flowctl resume`).
    """
    from flowctl.engine.local import new_execution
    from flowctl.engine.params import parse_assignments, resolve_params

    ir, definition_id = _file_or_registered_ir(file, database_url)
    _collect_garbage_from_now_on()
    from_file = _read_params_file(params_file) if params_file else None
    params = resolve_params(ir["params"], from_file, parse_assignments(assignments))
    settings = settings_for(database_url)
    history = _open_history(settings, memory=no_history)
    # Relative paths in tasks resolve against the file's folder (a registered pipeline: here).
    pipeline_dir = Path(file).resolve().parent if definition_id is None else Path.cwd()
    try:
        runner = _runner(history, settings, pipeline_dir, output_format)  # reads secrets
        # Recorded only now: nothing is written when the params or the secrets are bad.
        record = new_execution(
            history, ir, params, definition_id=definition_id, pipeline_dir=pipeline_dir
        )
        result = _drive(runner, lambda: runner.run(record), output_format)
    finally:
        history.close()
    _print_result(result, output_format)
    sys.exit(EXIT_CODES.get(result.status, 1))


def _file_or_registered_ir(
    file: str, database_url: str | None
) -> tuple[dict[str, Any], int | None]:
    """FILE's IR, or when FILE is a pipeline name and no such file exists, the IR and
    definition id of that pipeline's active version in the registry."""
    import re

    from flowctl.cli.spec_commands import load_ir

    path = Path(file)
    if not path.exists() and re.fullmatch(r"[a-z][a-z0-9-]{0,62}", file):
        from flowctl.cli.gitops_commands import registered_ir

        return registered_ir(file, settings_for(database_url))
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise click.BadParameter(f"file {file!r} {reason}", param_hint="'FILE|NAME'")
    return load_ir(file), None


@click.command("resume")
@click.argument("execution_id")
@output_option
@database_option
def resume_command(execution_id: str, output_format: str, database_url: str | None) -> None:
    """Continue a FAILED, CANCELLED or interrupted execution.

    Completed tasks are not run again: their checkpointed outputs are reused.
    """
    _collect_garbage_from_now_on()
    settings = settings_for(database_url)
    history = _open_history(settings)
    try:
        runner = _runner(history, settings, None, output_format)
        result = _drive(runner, lambda: runner.resume(execution_id), output_format)
    finally:
        history.close()
    _print_result(result, output_format)
    sys.exit(EXIT_CODES.get(result.status, 1))


@click.command("status")
@click.argument("execution_id")
@output_option
@database_option
def status_command(execution_id: str, output_format: str, database_url: str | None) -> None:
    """Show an execution and the latest state of each of its tasks."""
    from flowctl.errors import NotFoundError

    history = _open_history(settings_for(database_url))
    try:
        record = history.get_execution(execution_id)
        if record is None:
            raise NotFoundError(f"no execution {execution_id!r} in the history")
        checkpoints = history.checkpoints(execution_id)
    finally:
        history.close()
    tasks: dict[str, dict[str, Any]] = {
        task["id"]: {
            "status": str(TaskStatus.PENDING),
            "attempts": 0,
            "output": None,
            "error": None,
        }
        for task in record.ir["tasks"]
    }
    for checkpoint in checkpoints:
        tasks[checkpoint.task_id] = {
            "status": str(checkpoint.status),
            "attempts": checkpoint.attempt,
            "output": checkpoint.output,
            "error": checkpoint.error,
        }
    document = {
        "execution_id": record.id,
        "pipeline": record.pipeline,
        "status": str(record.status),
        "digest": record.digest,
        "params": record.params,
        "result": record.result,
        "error": record.error,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "tasks": tasks,
    }
    if output_format == "json":
        click.echo(json.dumps(document, indent=2, default=str))
        return
    click.echo(f"{record.id}  {record.pipeline}  {record.status}")
    if record.error:
        click.echo(f"error: {record.error}")
    for task_id, task in tasks.items():
        line = f"  {task_id:<24} {task['status']:<16} attempts={task['attempts']}"
        if task["error"]:
            line += f"  {task['error']}"
        click.echo(line)


@click.command("runs")
@click.option("--pipeline", help="Only executions of this pipeline.")
@click.option("--status", type=click.Choice([str(s) for s in WorkflowStatus]))
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@output_option
@database_option
def runs_command(
    pipeline: str | None,
    status: str | None,
    limit: int,
    output_format: str,
    database_url: str | None,
) -> None:
    """List recent executions, newest first."""
    history = _open_history(settings_for(database_url))
    try:
        records = history.list_executions(pipeline, status, limit)
    finally:
        history.close()
    rows = [
        {
            "execution_id": r.id,
            "pipeline": r.pipeline,
            "status": str(r.status),
            "created_at": _iso(r.created_at),
            "finished_at": _iso(r.finished_at),
            "error": r.error,
        }
        for r in records
    ]
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no executions")
    for row in rows:
        click.echo(
            f"{row['execution_id']}  {row['pipeline']:<24} {row['status']:<10} {row['created_at']}"
        )


@click.group("db")
def db_group() -> None:
    """The history database."""


@db_group.command("upgrade")
@database_option
def db_upgrade_command(database_url: str | None) -> None:
    """Create or migrate the history's tables to the current schema."""
    from flowctl.engine.state import migrate
    from flowctl.engine.state.history import open_history_engine

    engine = open_history_engine(settings_for(database_url).database_url)  # migrates it
    try:
        click.echo(f"history schema at revision {migrate.current_revision(engine)}")
    finally:
        engine.dispose()


# -- helpers ----------------------------------------------------------------------------


def _runner(history: Any, settings: Settings, pipeline_dir: Path | None, output_format: str) -> Any:
    from flowctl.engine.local import Runner
    from flowctl.engine.secrets import Secrets

    secrets = Secrets.load(settings.secret_environment(), settings.secrets_file)
    return Runner(history, secrets=secrets, pipeline_dir=pipeline_dir, settings=settings)


def _drive(
    runner: Any, start: Callable[[], Awaitable[ExecutionResult]], output_format: str
) -> ExecutionResult:
    """Runs the execution on an event loop; SIGINT/SIGTERM cancel it cleanly."""
    import asyncio  # here, not at the top: `flowctl validate` should not pay for it
    import signal

    progress = None
    if output_format == "text" and sys.stderr.isatty():
        from rich.console import Console

        from flowctl.cli.progress import TerminalProgress

        progress = TerminalProgress(Console(stderr=True))
        runner.observer = progress

    async def main() -> ExecutionResult:
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        assert current is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, current.cancel)
        try:
            return await start()
        except asyncio.CancelledError:
            assert runner.orchestrator is not None
            return runner.orchestrator.result()  # type: ignore[no-any-return]
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    with progress if progress else contextlib.nullcontext():
        return asyncio.run(main())


def _print_result(result: ExecutionResult, output_format: str) -> None:
    if output_format == "json":
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
        return
    click.echo(f"execution {result.execution_id}  {result.pipeline}  {result.status}")
    if result.error:
        click.echo(f"error: {result.error}")
    if result.status is WorkflowStatus.COMPLETED:
        click.echo(json.dumps(result.result, indent=2, default=str, ensure_ascii=False))
    elif result.status is WorkflowStatus.CANCELLED:
        click.echo(f"resume with: flowctl resume {result.execution_id}")


def _collect_garbage_from_now_on() -> None:
    """Turns the garbage collector (paused by `main`) back on for a run, which does make
    reference cycles (asyncio tasks, exceptions); what exists now (modules, the IR) lives
    until the process ends and is moved out of its scans."""
    import gc

    gc.freeze()
    gc.enable()


def _read_params_file(path: str) -> dict[str, Any]:
    from flowctl.engine.spec.load import LoadError, load_file

    try:
        data = load_file(path).data
    except LoadError as error:
        d = error.diagnostic
        raise ParamsError(f"{d.path}:{d.line}:{d.column}: {d.message} [{d.rule}]") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: a params file must be a mapping of NAME: value")
    return data


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
