"""`flowctl apply`: the registry equals the folder, versions carry their git commit, an
invalid folder writes nothing, `--prune`, runs by name, and concurrent applies."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from flowctl.engine import registry
from flowctl.engine.registry import Action, ConflictError, Current, Source
from flowctl.engine.spec.collect import collect_paths
from flowctl.engine.state.history import SqlHistory
from flowctl.engine.state.models import DefinitionEvent

from .helpers import INVALID, GitRepo, definitions, flowctl, flowctl_process, pipeline

EXTRA_TASK = """\
- id: polite
  executor: transform
  needs: [shout]
  with: {value: please}
"""


def test_the_git_flow_end_to_end(history_url: str, tmp_path: Path) -> None:
    """Commit, apply, change one file and commit, diff as markdown, apply: versions and
    commits recorded; the real `flowctl` script, as CI runs it."""
    repo = GitRepo(tmp_path / "repo")
    repo.write("pipelines/greet.yaml", pipeline("greet"))
    repo.write("pipelines/team/report.yaml", pipeline("report"))
    first = repo.commit("two pipelines")

    applied = flowctl_process("apply", "pipelines", "--database-url", history_url, cwd=repo.root)
    assert applied.returncode == 0, applied.stderr
    assert "created    greet" in applied.stdout and "created    report" in applied.stdout
    assert "applied: 2 created" in applied.stdout

    repo.write("pipelines/greet.yaml", pipeline("greet", retries=2, extra=EXTRA_TASK))
    second = repo.commit("greet: retries and a task")

    diff = flowctl_process(
        "diff", "pipelines", "--against", "registry", "--format", "markdown",
        "--database-url", history_url, cwd=repo.root,
    )  # fmt: skip
    assert diff.returncode == 3, diff.stderr
    assert "| `greet` | changed | 1 added, 2 changed |" in diff.stdout
    assert "- task `polite` **added** (`transform`)" in diff.stdout
    assert "| `retries` | `0` | `2` |" in diff.stdout
    assert "report" not in diff.stdout.split("**")[1]  # the summary counts it unchanged

    again = flowctl_process(
        "apply", "pipelines", "--output", "json", "--database-url", history_url, cwd=repo.root
    )
    assert again.returncode == 0, again.stderr
    steps = {step["name"]: step for step in json.loads(again.stdout)["pipelines"]}
    assert steps["greet"]["action"] == "updated" and steps["greet"]["version"] == 2
    assert steps["greet"]["commit"] == second
    assert steps["report"]["action"] == "unchanged"

    stored = {(d.name, d.version): d for d in definitions(history_url)}
    assert sorted(stored) == [("greet", 1), ("greet", 2), ("report", 1)]
    assert stored["greet", 1].source_commit == first and not stored["greet", 1].active
    assert stored["greet", 2].source_commit == second and stored["greet", 2].active
    assert stored["report", 1].source_commit == first and stored["report", 1].active
    assert stored["greet", 2].source_path == "pipelines/greet.yaml"
    assert stored["report", 1].source_path == "pipelines/team/report.yaml"
    assert stored["greet", 2].source_branch == "main"
    assert stored["greet", 2].source_author == "Ada Lovelace <ada@example.com>"
    assert stored["greet", 2].applied_at is not None
    assert [t["id"] for t in stored["greet", 2].spec["tasks"]] == ["greet", "shout", "polite"]

    quiet = flowctl_process("diff", "pipelines", "--database-url", history_url, cwd=repo.root)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr


def test_a_second_apply_changes_nothing_and_says_so(history_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "a.yaml").write_text(pipeline("a"))
    assert flowctl("apply", str(folder), "--database-url", history_url).code == 0
    before = [(d.name, d.version, d.applied_at) for d in definitions(history_url)]

    second = flowctl("apply", str(folder), "--database-url", history_url)
    assert second.code == 0, second.err
    assert "nothing to apply: the registry matches the folder (1 unchanged)" in second.out
    assert [(d.name, d.version, d.applied_at) for d in definitions(history_url)] == before


def test_outside_git_nothing_is_recorded_about_commits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "a.yaml").write_text(pipeline("a"))
    assert flowctl("apply", str(tmp_path / "a.yaml"), "--database-url", url).code == 0
    (stored,) = definitions(url)
    assert stored.source_commit is None and stored.source_branch is None
    assert stored.source_path == str(tmp_path / "a.yaml")


def test_an_uncommitted_change_is_flagged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    repo = GitRepo(tmp_path / "repo")
    repo.write("pipelines/a.yaml", pipeline("a"))
    commit = repo.commit("a")
    repo.write("pipelines/a.yaml", pipeline("a", retries=1))
    done = flowctl("apply", str(repo.root / "pipelines"), "--database-url", url)
    assert done.code == 0
    assert "has uncommitted changes" in done.err
    assert definitions(url)[0].source_commit == commit


def test_an_invalid_file_makes_apply_write_nothing(history_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "a.yaml").write_text(pipeline("a"))
    assert flowctl("apply", str(folder), "--database-url", history_url).code == 0
    (folder / "a.yaml").write_text(pipeline("a", retries=5))  # a valid change …
    (folder / "b.yaml").write_text(pipeline("b"))  # … a valid new file …
    (folder / "broken.yaml").write_text(INVALID)  # … and one invalid file

    done = flowctl("apply", str(folder), "--database-url", history_url)
    assert done.code == 1
    assert "broken.yaml:6:" in done.err and "[unknown-executor]" in done.err
    assert "1 of 3 file(s) invalid; nothing applied" in done.err
    assert done.out == ""
    assert [(d.name, d.version, d.active) for d in definitions(history_url)] == [("a", 1, True)]


def test_two_files_with_one_name_are_invalid(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "one.yaml").write_text(pipeline("same"))
    (tmp_path / "two.yaml").write_text(pipeline("same", retries=1))
    done = flowctl("apply", str(tmp_path), "--database-url", url)
    assert done.code == 1 and "[duplicate-pipeline]" in done.err
    assert definitions(url) == []


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "a.yaml").write_text(pipeline("a"))
    done = flowctl("apply", str(tmp_path), "--dry-run", "--database-url", url)
    assert done.code == 0
    assert "created    a" in done.out and "dry run, nothing written" in done.out
    assert definitions(url) == []


def test_prune_deactivates_what_left_the_folder_and_keeps_its_history(
    history_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    for name in ("keep", "gone"):
        (folder / f"{name}.yaml").write_text(pipeline(name))
    assert flowctl("apply", str(folder), "--database-url", history_url).code == 0
    (folder / "gone.yaml").unlink()

    without = flowctl("apply", str(folder), "--database-url", history_url)
    assert without.code == 0
    assert "missing    gone" in without.out and "--prune deactivates it" in without.out
    assert {d.name: d.active for d in definitions(history_url)} == {"gone": True, "keep": True}

    pruned = flowctl("apply", str(folder), "--prune", "--database-url", history_url)
    assert pruned.code == 0
    assert "pruned     gone" in pruned.out and "applied: 1 unchanged, 1 pruned" in pruned.out
    assert {d.name: d.active for d in definitions(history_url)} == {"gone": False, "keep": True}
    history = flowctl("history", "gone", "--database-url", history_url)
    assert history.code == 0 and "pruned v1 → none" in history.out
    run = flowctl("run", "gone", "--database-url", history_url)
    assert run.code == 1 and "neither a file nor an active pipeline" in run.err

    (folder / "gone.yaml").write_text(pipeline("gone"))  # back: a new version, v2
    back = flowctl("apply", str(folder), "--prune", "--database-url", history_url)
    assert "updated    gone" in back.out
    assert [(d.version, d.active) for d in definitions(history_url) if d.name == "gone"] == [
        (1, False),
        (2, True),
    ]


def test_an_empty_folder_is_refused_rather_than_pruning_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "empty").mkdir()
    done = flowctl("apply", str(tmp_path / "empty"), "--prune", "--database-url", url)
    assert done.code == 1 and "no pipeline files" in done.err


def test_run_by_name_runs_the_active_version_and_records_it(
    history_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "greet.yaml").write_text(pipeline("greet", greeting="hi"))
    assert flowctl("apply", "greet.yaml", "--database-url", history_url).code == 0
    first = flowctl(
        "run", "greet", "-p", "who=ada", "--output", "json", "--database-url", history_url
    )
    assert first.code == 0, first.err
    (tmp_path / "greet.yaml").write_text(pipeline("greet", greeting="hey"))
    assert flowctl("apply", "greet.yaml", "--database-url", history_url).code == 0
    second = flowctl(
        "run", "greet", "-p", "who=ada", "--output", "json", "--database-url", history_url
    )
    assert second.code == 0, second.err

    versions = {d.version: d.id for d in definitions(history_url)}
    history = SqlHistory(history_url)
    try:
        ran = [history.get_execution(json.loads(r.out)["execution_id"]) for r in (first, second)]
    finally:
        history.close()
    assert [r.definition_id for r in ran if r] == [versions[1], versions[2]]
    assert [r.ir["tasks"][0]["with"]["value"] for r in ran if r] == [
        "hi {{ params.who }}",
        "hey {{ params.who }}",
    ]
    missing_file = flowctl("run", "nope.yaml", "--database-url", history_url)
    assert missing_file.code == 2 and "does not exist" in missing_file.out + missing_file.err
    unknown = flowctl("run", "nope", "--database-url", history_url)
    assert unknown.code == 1 and "neither a file nor an active pipeline" in unknown.err


def _sources(folder: Path) -> list[Source]:
    return [Source(p.ir, p.path) for p in collect_paths([str(folder)]).pipelines]


def test_concurrent_applies_never_duplicate_a_version(history_url: str, tmp_path: Path) -> None:
    """Four threads apply four different contents of one pipeline at the same instant:
    every apply lands, as versions 1..4, exactly one active, one event each."""
    folders = []
    for index in range(4):
        folder = tmp_path / f"f{index}"
        folder.mkdir()
        (folder / "shared.yaml").write_text(pipeline("shared", retries=index))
        (folder / f"own{index}.yaml").write_text(pipeline(f"own{index}"))
        folders.append(_sources(folder))
    engine = registry.connect(history_url)
    barrier = threading.Barrier(len(folders))
    outcomes: list[object] = []

    def apply(sources: list[Source]) -> None:
        barrier.wait()
        try:
            outcomes.append(registry.apply(engine, sources, attempts=8))
        except Exception as error:  # collected, asserted below
            outcomes.append(error)

    threads = [threading.Thread(target=apply, args=(sources,)) for sources in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert all(isinstance(o, registry.Plan) for o in outcomes), outcomes
        shared = [d for d in definitions(history_url) if d.name == "shared"]
        assert [d.version for d in shared] == [1, 2, 3, 4]
        assert len({d.digest for d in shared}) == 4
        assert sum(d.active for d in shared) == 1
        own = [d.name for d in definitions(history_url) if d.name != "shared"]
        assert sorted(own) == ["own0", "own1", "own2", "own3"]
        with engine.connect() as connection:
            actions = connection.execute(
                DefinitionEvent.__table__.select().where(DefinitionEvent.name == "shared")
            ).all()
        assert sorted(row.to_version for row in actions) == [1, 2, 3, 4]
    finally:
        engine.dispose()


def test_concurrent_apply_processes(history_url: str, tmp_path: Path) -> None:
    """Two `flowctl apply` processes with different changes, started together."""
    import subprocess

    from .helpers import FLOWCTL

    assert flowctl("db", "upgrade", "--database-url", history_url).code == 0
    folders = []
    for index in range(2):
        folder = tmp_path / f"f{index}"
        folder.mkdir()
        (folder / "shared.yaml").write_text(pipeline("shared", retries=index + 1))
        folders.append(folder)
    processes = [
        subprocess.Popen(
            [str(FLOWCTL), "apply", str(folder), "--database-url", history_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in folders
    ]
    results = [(p.wait(60), *p.communicate()) for p in processes]
    assert [code for code, _, _ in results] == [0, 0], results
    shared = definitions(history_url)
    assert [d.version for d in shared] == [1, 2]
    assert sum(d.active for d in shared) == 1


def test_a_plan_made_from_a_stale_registry_is_retried_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "a.yaml").write_text(pipeline("a"))
    assert flowctl("apply", str(tmp_path), "--database-url", url).code == 0
    (tmp_path / "a.yaml").write_text(pipeline("a", retries=3))
    stale = {"a": Current("a", latest_version=0)}  # as if nothing had been applied yet
    calls: list[int] = []

    def read_stale(connection: object) -> dict[str, Current]:
        calls.append(1)
        return stale

    monkeypatch.setattr(registry, "read_registry", read_stale)
    monkeypatch.setattr(registry, "backoff", lambda attempt: None)
    with pytest.raises(ConflictError, match="kept changing"):
        registry.apply(registry.connect(url), _sources(tmp_path), attempts=3)
    assert len(calls) == 3
    done = flowctl("apply", str(tmp_path), "--database-url", url)
    assert done.code == 1 and "error: the registry kept changing" in done.err
    assert [(d.version, d.digest) for d in definitions(url)] == [
        (1, _sources_digest(pipeline("a"), tmp_path))
    ]


def _sources_digest(text: str, tmp_path: Path) -> str:
    folder = tmp_path / "digest"
    folder.mkdir(exist_ok=True)
    (folder / "x.yaml").write_text(text)
    return _sources(folder)[0].digest


def test_make_plan_is_pure_and_complete() -> None:
    def source(name: str, digest: str) -> Source:
        return Source({"name": name, "digest": digest}, f"{name}.yaml")

    current = {
        "same": Current("same", 1, 10, 1, "d1"),
        "changed": Current("changed", 3, 20, 2, "old"),
        "inactive": Current("inactive", 2),
        "left": Current("left", 1, 30, 1, "d"),
    }
    sources = [source("same", "d1"), source("changed", "new"), source("inactive", "x")]
    sources.append(source("fresh", "f"))
    plan = registry.make_plan(sources, current, prune=True)
    assert [(s.name, s.action, s.previous_version, s.version) for s in plan.steps] == [
        ("changed", Action.UPDATED, 2, 4),
        ("fresh", Action.CREATED, None, 1),
        ("inactive", Action.UPDATED, None, 3),
        ("left", Action.PRUNED, 1, None),
        ("same", Action.UNCHANGED, 1, 1),
    ]
    kept = registry.make_plan(sources, current, prune=False)
    assert [s.action for s in kept.steps if s.name == "left"] == [Action.MISSING]
