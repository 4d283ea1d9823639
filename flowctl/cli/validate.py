"""`flowctl validate PATH...`: every error in every file, as text, JSON or GitHub annotations."""

from __future__ import annotations

import json
import sys

import click

from flowctl.engine.spec.validate import CheckedFile, check_paths
from flowctl.errors import Diagnostic


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text for people, json for tools, github for workflow annotations.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes for many files (default: one per CPU).",
)
def validate_command(paths: tuple[str, ...], output_format: str, jobs: int | None) -> None:
    """Check pipeline files (folders are searched recursively for *.yaml and *.yml).

    Exits 0 when every file is valid, 1 when any is invalid, 2 on a usage error.
    """
    results = check_paths(paths, jobs)
    diagnostics = [d for result in results for d in result.diagnostics]
    if output_format == "json":
        click.echo(json.dumps(_as_json(results), indent=2))
    elif output_format == "github":
        for diagnostic in diagnostics:
            click.echo(_github_annotation(diagnostic))
    else:
        for diagnostic in diagnostics:
            click.echo(diagnostic.format())
        invalid = sum(1 for result in results if not result.ok)
        summary = f"{len(results)} file(s) checked, {invalid} invalid, {len(diagnostics)} error(s)"
        click.echo(summary, err=True)
    if diagnostics:
        sys.exit(1)


def _as_json(results: list[CheckedFile]) -> dict[str, object]:
    return {
        "valid": all(result.ok for result in results),
        "files": [
            {"path": r.path, "valid": r.ok, "errors": [d.as_dict() for d in r.diagnostics]}
            for r in results
        ],
    }


def _github_annotation(diagnostic: Diagnostic) -> str:
    """A workflow command: GitHub shows it on the pull request's file and line."""

    def escape(text: str, *, is_property: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if is_property else text

    message = diagnostic.message + (f"\n{diagnostic.hint}" if diagnostic.hint else "")
    location = f"file={escape(diagnostic.path, is_property=True)}"
    if diagnostic.line:
        location += f",line={diagnostic.line},col={diagnostic.column}"
    return (
        f"::error {location},title={escape(diagnostic.rule, is_property=True)}::{escape(message)}"
    )
