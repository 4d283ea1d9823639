"""Entry point: the click group and the one place where errors become clean messages."""

from __future__ import annotations

import gc
import sys

import click

from flowctl import __version__
from flowctl.cli.gitops_commands import (
    apply_command,
    diff_command,
    history_command,
    init_command,
    rollback_command,
)
from flowctl.cli.run_commands import (
    db_group,
    resume_command,
    run_command,
    runs_command,
    status_command,
)
from flowctl.cli.spec_commands import compile_command, graph_command, schema_command
from flowctl.cli.validate import validate_command
from flowctl.errors import FlowctlError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowctl")
def cli() -> None:
    """Declarative YAML pipelines for AI and document workflows.

    Write a pipeline file, check it with `flowctl validate`, inspect it with
    `flowctl compile` and `flowctl graph`, run it here with `flowctl run` (and
    `resume`, `status`, `runs`), and deploy a folder of pipelines from git with
    `flowctl diff` and `flowctl apply` (`history`, `rollback`, `init`).
    """


cli.add_command(validate_command)
cli.add_command(compile_command)
cli.add_command(graph_command)
cli.add_command(schema_command)
cli.add_command(run_command)
cli.add_command(resume_command)
cli.add_command(status_command)
cli.add_command(runs_command)
cli.add_command(db_group)
cli.add_command(apply_command)
cli.add_command(diff_command)
cli.add_command(history_command)
cli.add_command(rollback_command)
cli.add_command(init_command)


def main() -> None:
    # A flowctl process builds documents (an object per YAML node, and no reference
    # cycles) and exits: the cyclic garbage collector would only rescan them, again and
    # again as they grow (on a 10,000-task file that cost more than loading itself).
    # Commands that go on to run a pipeline freeze what exists and turn it back on.
    gc.disable()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except FlowctlError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except OSError as error:  # a file or folder the user named, a full disk, ...
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    except Exception as error:
        if not type(error).__module__.startswith("sqlalchemy"):
            raise  # a bug in flowctl: the traceback is what its report needs
        # A database failing under a running command ("database is locked", a lost
        # connection): one line, without SQLAlchemy's statement dump.
        message = str(getattr(error, "orig", None) or error).strip().splitlines()
        click.echo(f"error: database: {message[0] if message else type(error).__name__}", err=True)
        sys.exit(1)
    sys.exit(0)
