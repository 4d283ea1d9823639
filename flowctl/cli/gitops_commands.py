"""`flowctl apply`, `diff`, `history`, `rollback` and `init`: the GitOps flow.

Pipelines are files in git; a pull request runs `validate` and `diff`, a merge runs
`apply`, and the registry (the history database's definitions) equals the folder.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowctl.cli.options import database_option, output_option, settings_for
from flowctl.config import Settings
from flowctl.errors import Diagnostic, NotFoundError

if TYPE_CHECKING:  # SQLAlchemy is imported only by the commands that need it
    from flowctl.engine.registry import Definition, Plan
    from flowctl.engine.spec.collect import Collection

EXIT_CHANGES = 3  # `flowctl diff`: something would change (CI branches on it)

paths_argument = click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))


@click.command("apply")
@paths_argument
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option(
    "--prune",
    is_flag=True,
    help="Deactivate registered pipelines that are not in PATHS (their history stays).",
)
@output_option
@database_option
def apply_command(
    paths: tuple[str, ...],
    dry_run: bool,
    prune: bool,
    output_format: str,
    database_url: str | None,
) -> None:
    """Make the registry's pipelines equal to the files in PATHS.

    Every file is validated first: if any is invalid, nothing is written. A new
    pipeline is created as version 1, a changed one (by digest) gets a new version, and
    the whole plan is written in one transaction. Exits 0 on success (changed or
    not), 1 on invalid files, a conflict or a database error.
    """
    from flowctl.engine import gitinfo, registry
    from flowctl.engine.spec.collect import collect_paths

    collection = collect_paths(paths)
    _exit_if_invalid(collection, "nothing applied")
    if not collection.pipelines:
        raise NotFoundError(f"no pipeline files in {', '.join(paths)}; nothing applied")
    settings = settings_for(database_url)
    git = gitinfo.file_sources([p.path for p in collection.pipelines], settings.git_branch)
    sources = [registry.Source(p.ir, p.path, git[p.path]) for p in collection.pipelines]
    engine = registry.connect(settings.database_url)
    try:
        plan = registry.apply(engine, sources, prune=prune, dry_run=dry_run, actor=settings.actor)
    finally:
        engine.dispose()
    if output_format == "json":
        document = {
            "dry_run": dry_run,
            "changed": plan.changes,
            "pipelines": [step.as_dict() for step in plan.steps],
        }
        click.echo(json.dumps(document, indent=2))
        return
    _print_plan(plan, dry_run=dry_run)


def _print_plan(plan: Plan, *, dry_run: bool) -> None:
    from flowctl.engine.registry import Action

    for step in plan.steps:
        before = f"v{step.previous_version}" if step.previous_version else "-"
        after = f"v{step.version}" if step.version else "inactive"
        versions = after if step.action is Action.CREATED else f"{before} → {after}"
        if step.action in (Action.UNCHANGED, Action.MISSING):
            versions = before
        line = f"{step.action:<10} {step.name:<32} {versions:<16} {_short(step.digest)}"
        git = step.source.git if step.source else None
        if step.source:
            line += f"  {step.source.path}"
        if git and git.commit:
            line += f" @ {git.commit[:10]}"
        if step.action is Action.MISSING:
            line += "  not in PATHS; kept (--prune deactivates it)"
        click.echo(line.rstrip())
        if git and git.dirty:
            click.echo(
                f"warning: {step.source.path if step.source else step.name} has uncommitted "
                "changes; the recorded commit is its last commit",
                err=True,
            )
    counts = ", ".join(
        f"{plan.count(action)} {action}"
        for action in (Action.CREATED, Action.UPDATED, Action.UNCHANGED, Action.PRUNED)
        if plan.count(action)
    )
    if not plan.changes:
        click.echo(f"nothing to apply: the registry matches the folder ({counts})")
    elif dry_run:
        click.echo(f"dry run, nothing written; would apply: {counts}")
    else:
        click.echo(f"applied: {counts}")


@click.command("diff")
@paths_argument
@click.option(
    "--against",
    default="registry",
    show_default=True,
    metavar="registry|GIT_REF",
    help="Compare with the registry's active versions, or with the same paths at a git ref.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
    help="markdown is a ready pull-request comment.",
)
@click.option(
    "--prune",
    is_flag=True,
    help="With --against registry: also list registered pipelines missing from PATHS.",
)
@database_option
def diff_command(
    paths: tuple[str, ...],
    against: str,
    output_format: str,
    prune: bool,
    database_url: str | None,
) -> None:
    """Show what changes, per pipeline: tasks added, removed and changed, and the fields
    that changed (executor, `with` values, dependencies, retries, schedule…).

    Exits 0 when nothing changes, 3 when something would, 1 on invalid input, 2 on a
    usage error.
    """
    from flowctl.cli import diff_render
    from flowctl.engine.spec.collect import collect_contents, collect_paths
    from flowctl.engine.spec.diff import Change, diff_sets

    new = collect_paths(paths)
    _exit_if_invalid(new, "nothing compared")
    paths_by_name = {p.name: p.path for p in new.pipelines}
    if against == "registry":
        old = _registry_specs(settings_for(database_url), None if prune else list(paths_by_name))
    else:
        from flowctl.engine.gitinfo import files_at_ref

        before = collect_contents(files_at_ref(paths, against))
        _exit_if_invalid(before, f"nothing compared (files at {against})")
        old = {p.name: p.ir for p in before.pipelines}
        paths_by_name = {p.name: p.path for p in before.pipelines} | paths_by_name
    diffs = diff_sets(old, {p.name: p.ir for p in new.pipelines}, paths_by_name)
    if output_format == "json":
        click.echo(diff_render.render_json(diffs, against))
    elif output_format == "markdown":
        click.echo(diff_render.render_markdown(diffs, against), nl=False)
    else:
        click.echo(diff_render.render_text(diffs, against))
    if any(diff.change is not Change.UNCHANGED for diff in diffs):
        sys.exit(EXIT_CHANGES)


def _registry_specs(settings: Settings, names: list[str] | None) -> dict[str, dict[str, Any]]:
    from flowctl.engine import registry

    engine = registry.connect(settings.database_url)
    try:
        return {d.name: d.spec for d in registry.active_definitions(engine, names)}
    finally:
        engine.dispose()


@click.command("history")
@click.argument("name")
@output_option
@database_option
def history_command(name: str, output_format: str, database_url: str | None) -> None:
    """List the versions of pipeline NAME (digest, commit, time) and its rollbacks."""
    from flowctl.engine import registry

    engine = registry.connect(settings_for(database_url).database_url)
    try:
        found = registry.versions(engine, name)
        timeline = registry.events(engine, name)
    finally:
        engine.dispose()
    if not found:
        raise NotFoundError(f"no pipeline {name!r} in the registry")
    if output_format == "json":
        document = {
            "name": name,
            "versions": [d.as_dict() for d in found],
            "events": [e.as_dict() for e in timeline],
        }
        click.echo(json.dumps(document, indent=2, default=str))
        return
    click.echo(f"{'VERSION':<8} {'':<6} {'DIGEST':<19} {'COMMIT':<10} {'APPLIED (UTC)':<19}  BY")
    for definition in reversed(found):
        click.echo(_version_line(definition))
    for event in timeline:
        if event.action.value in ("rollback", "pruned"):
            before = f"v{event.from_version}" if event.from_version else "none"
            after = f"v{event.to_version}" if event.to_version else "none"
            who = f" by {event.by}" if event.by else ""
            click.echo(f"{_time(event.at)}  {event.action} {before} → {after}{who}")


def _version_line(definition: Definition) -> str:
    marker = "active" if definition.active else ""
    commit = (definition.source_commit or "-")[:10]
    line = (
        f"{definition.version:<8} {marker:<6} {_short(definition.digest):<19} {commit:<10} "
        f"{_time(definition.applied_at):<19}  {definition.applied_by or '-'}"
    )
    details = [d for d in (definition.source_path, definition.source_branch) if d]
    return line + (f"  ({', '.join(details)})" if details else "")


@click.command("rollback")
@click.argument("name")
@click.option("--to", "version", type=click.IntRange(min=1), required=True, help="The version.")
@database_option
def rollback_command(name: str, version: int, database_url: str | None) -> None:
    """Make VERSION of pipeline NAME the active one again (recorded as an event).

    The next `flowctl apply` of the folder makes the folder's content active again:
    to keep the old version, revert the change in git too.
    """
    from flowctl.engine import registry

    settings = settings_for(database_url)
    engine = registry.connect(settings.database_url)
    try:
        previous, changed = registry.rollback(engine, name, version, actor=settings.actor)
    finally:
        engine.dispose()
    if not changed:
        click.echo(f"{name}: version {version} is already active")
        return
    before = f"v{previous}" if previous else "none"
    click.echo(f"{name}: active version {before} → v{version} (recorded as a rollback)")


_CI_FILES = {"github": ".github/workflows/flowctl.yml", "gitlab": ".gitlab-ci.yml"}
_CI_TEMPLATES = {"github": "github-actions.yml", "gitlab": "gitlab-ci.yml"}


@click.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option(
    "--ci",
    type=click.Choice(["github", "gitlab", "none"]),
    default="github",
    show_default=True,
    help="Which CI file to write.",
)
def init_command(directory: str, ci: str) -> None:
    """Scaffold a pipelines repository in DIRECTORY (default: here).

    Writes an example pipeline (with the schema modeline for editors), the pipeline
    schema, a CI workflow (validate + diff on pull requests, apply on main) and a
    pre-commit config. Existing files are kept, never overwritten.
    """
    from flowctl.schemas import load_schema

    files = {
        "pipelines/hello.yaml": template("hello.yaml"),
        "schemas/pipeline.schema.json": json.dumps(load_schema("pipeline"), indent=2) + "\n",
        ".pre-commit-config.yaml": template("pre-commit-config.yaml"),
        ".gitignore": ".flowctl/\n",
    }
    if ci != "none":
        files[_CI_FILES[ci]] = template(_CI_TEMPLATES[ci])
    root = Path(directory)
    for relative, content in files.items():
        target = root / relative
        if target.exists():
            click.echo(f"kept     {target} (exists)")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        click.echo(f"created  {target}")
    click.echo(
        "next: flowctl validate pipelines/ && flowctl run pipelines/hello.yaml; "
        "set FLOWCTL_DATABASE_URL in CI for `flowctl apply`"
    )


def template(name: str) -> str:
    """A file `flowctl init` writes (also the source of examples/ci/)."""
    return resources.files("flowctl.templates").joinpath(name).read_text(encoding="utf-8")


def _exit_if_invalid(collection: Collection, consequence: str) -> None:
    if collection.ok:
        return
    diagnostics: tuple[Diagnostic, ...] = collection.diagnostics
    for diagnostic in diagnostics:
        click.echo(diagnostic.format(), err=True)
    invalid = len({d.path for d in diagnostics})
    click.echo(f"{invalid} of {collection.files} file(s) invalid; {consequence}", err=True)
    sys.exit(1)


def _short(digest: str | None) -> str:
    return digest[:19] if digest else "-"


def _time(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def registered_ir(name: str, settings: Settings) -> tuple[dict[str, Any], int]:
    """The IR and row id of the active version of pipeline `name` (`flowctl run NAME`)."""
    from flowctl.engine import registry

    engine = registry.connect(settings.database_url)
    try:
        definition = registry.active_definition(engine, name)
    finally:
        engine.dispose()
    if definition is None:
        raise NotFoundError(
            f"{name!r} is neither a file nor an active pipeline in the registry "
            "(`flowctl apply` registers pipelines)"
        )
    return definition.spec, definition.id
