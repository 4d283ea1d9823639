"""`flowctl compile`, `flowctl graph` and `flowctl schema`: looking at what a file means."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from flowctl.engine.spec.compile import compile_document
from flowctl.engine.spec.graph import to_dot, to_mermaid
from flowctl.engine.spec.validate import load_and_validate
from flowctl.schemas import load_schema


def load_ir(path: str) -> dict[str, Any]:
    """Validate and compile one file; prints the diagnostics and exits 1 if invalid."""
    document, diagnostics = load_and_validate(path)
    if diagnostics or document is None:
        for diagnostic in diagnostics:
            click.echo(diagnostic.format(), err=True)
        sys.exit(1)
    return compile_document(document)


@click.command("compile")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def compile_command(file: str) -> None:
    """Print the TaskFlow IR of FILE as JSON (defaults applied, edges, order, digest)."""
    click.echo(json.dumps(load_ir(file), indent=2, ensure_ascii=False))


@click.command("graph")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
)
def graph_command(file: str, output_format: str) -> None:
    """Draw the DAG of FILE as Mermaid or Graphviz DOT."""
    ir = load_ir(file)
    click.echo(to_mermaid(ir) if output_format == "mermaid" else to_dot(ir))


@click.command("schema")
@click.option(
    "--kind",
    type=click.Choice(["pipeline", "taskflow"]),
    default="pipeline",
    show_default=True,
    help="pipeline: the YAML files; taskflow: the compiled IR.",
)
def schema_command(kind: str) -> None:
    """Print the JSON Schema (Draft 2020-12) of pipeline files or of the compiled IR."""
    click.echo(json.dumps(load_schema(kind), indent=2))
