"""`flowctl history` and `flowctl rollback`: versions with their commits, rollbacks as
events (never rewriting a version), and the 0002 migration on an existing database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from flowctl.engine import registry
from flowctl.engine.state import migrate
from flowctl.engine.state.history import create_history_engine
from flowctl.engine.state.models import WorkflowDefinition

from .helpers import GitRepo, definitions, flowctl, pipeline


@pytest.fixture
def three_versions(history_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pipeline `greet` applied at three commits; returns the commits, oldest first."""
    repo = GitRepo(tmp_path / "repo")
    monkeypatch.chdir(repo.root)
    monkeypatch.setenv("FLOWCTL_ACTOR", "ci-bot")
    commits = []
    for retries in (0, 1, 2):
        repo.write("pipelines/greet.yaml", pipeline("greet", retries=retries))
        commits.append(repo.commit(f"retries {retries}"))
        assert flowctl("apply", "pipelines", "--database-url", history_url).code == 0
    return commits


def test_history_lists_versions_newest_first(history_url: str, three_versions: list[str]) -> None:
    done = flowctl("history", "greet", "--database-url", history_url)
    assert done.code == 0, done.err
    header, *rows = done.out.splitlines()
    assert header.split() == ["VERSION", "DIGEST", "COMMIT", "APPLIED", "(UTC)", "BY"]
    assert [row.split()[0] for row in rows] == ["3", "2", "1"]
    assert rows[0].split()[1] == "active" and "active" not in rows[1] + rows[2]
    for row, commit in zip(rows, reversed(three_versions), strict=True):
        assert commit[:10] in row and "ci-bot" in row and "(pipelines/greet.yaml, main)" in row
        assert "sha256:" in row

    as_json = json.loads(
        flowctl("history", "greet", "--output", "json", "--database-url", history_url).out
    )
    assert [v["version"] for v in as_json["versions"]] == [1, 2, 3]
    assert [v["source_commit"] for v in as_json["versions"]] == three_versions
    assert [e["action"] for e in as_json["events"]] == ["created", "updated", "updated"]


def test_rollback_is_an_event_and_the_next_apply_restores_the_folder(
    history_url: str, three_versions: list[str]
) -> None:
    before = {(d.version, d.digest, d.source_commit) for d in definitions(history_url)}
    done = flowctl("rollback", "greet", "--to", "1", "--database-url", history_url)
    assert done.code == 0, done.err
    assert "greet: active version v3 → v1 (recorded as a rollback)" in done.out
    stored = definitions(history_url)
    assert {(d.version, d.digest, d.source_commit) for d in stored} == before  # not rewritten
    assert [d.version for d in stored if d.active] == [1]

    run = flowctl("run", "greet", "--output", "json", "--database-url", history_url)
    assert run.code == 0, run.err
    history = flowctl("history", "greet", "--database-url", history_url).out
    assert "rollback v3 → v1 by ci-bot" in history

    again = flowctl("rollback", "greet", "--to", "1", "--database-url", history_url)
    assert again.code == 0 and "version 1 is already active" in again.out

    # the folder still holds version 3's content: apply makes the registry equal it again
    applied = flowctl("apply", "pipelines", "--database-url", history_url)
    assert "updated    greet" in applied.out and "v1 → v4" in applied.out
    latest = definitions(history_url)[-1]
    assert (latest.version, latest.active, latest.digest) == (4, True, stored[2].digest)


def test_rollback_and_history_errors(history_url: str, three_versions: list[str]) -> None:
    unknown_version = flowctl("rollback", "greet", "--to", "9", "--database-url", history_url)
    assert unknown_version.code == 1
    assert "pipeline 'greet' has no version 9 (versions: 1, 2, 3)" in unknown_version.err
    unknown_name = flowctl("rollback", "nope", "--to", "1", "--database-url", history_url)
    assert unknown_name.code == 1 and "no pipeline 'nope' in the registry" in unknown_name.err
    assert flowctl("history", "nope", "--database-url", history_url).code == 1
    assert flowctl("rollback", "greet", "--to", "0", "--database-url", history_url).code == 2


def test_two_active_versions_of_one_name_are_impossible(history_url: str) -> None:
    engine = registry.connect(history_url)
    row = {
        "name": "x",
        "digest": "sha256:0",
        "spec": {},
        "applied_at": datetime.now(UTC),
        "active": True,
    }
    try:
        with engine.begin() as connection:
            connection.execute(insert(WorkflowDefinition), {**row, "version": 1})
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(WorkflowDefinition), {**row, "version": 2})
        with engine.begin() as connection:  # inactive versions are not limited
            connection.execute(insert(WorkflowDefinition), {**row, "version": 2, "active": False})
    finally:
        engine.dispose()


def test_a_0001_database_upgrades_and_keeps_its_rows(history_url: str) -> None:
    engine = create_history_engine(history_url)
    try:
        migrate.upgrade(engine, "0001")
        with engine.begin() as connection:
            connection.execute(
                insert(WorkflowDefinition),
                {
                    "name": "old",
                    "version": 1,
                    "digest": "sha256:1",
                    "spec": {"name": "old"},
                    "applied_at": datetime.now(UTC),
                    "active": True,
                },
            )
        migrate.ensure_current(engine)
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION
        (kept,) = registry.active_definitions(engine)
        assert (kept.name, kept.version, kept.spec) == ("old", 1, {"name": "old"})
    finally:
        engine.dispose()
