"""`flowctl init` and the files for users' repositories: the scaffold validates, its
modeline points at a schema that exists, and every flowctl command the CI templates and
hooks run exists with the options they pass."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from flowctl.cli.gitops_commands import template
from flowctl.cli.main import cli

from .helpers import flowctl

ROOT = Path(__file__).resolve().parents[2]


def test_init_scaffolds_a_repository_that_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = flowctl("init", str(tmp_path / "repo"))
    assert done.code == 0, done.err
    repo = tmp_path / "repo"
    expected = {
        "pipelines/hello.yaml",
        "schemas/pipeline.schema.json",
        ".pre-commit-config.yaml",
        ".gitignore",
        ".github/workflows/flowctl.yml",
    }
    written = {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()}
    assert written == expected
    assert flowctl("validate", str(repo / "pipelines")).code == 0

    hello = (repo / "pipelines/hello.yaml").read_text()
    modeline = re.match(r"# yaml-language-server: \$schema=(\S+)\n", hello)
    assert modeline is not None
    assert (repo / "pipelines" / modeline.group(1)).resolve() == (
        repo / "schemas/pipeline.schema.json"
    ).resolve()
    assert (repo / ".github/workflows/flowctl.yml").read_text() == template("github-actions.yml")

    monkeypatch.chdir(repo)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run = flowctl("run", "pipelines/hello.yaml", "-p", "who=you", "--database-url", url)
    assert run.code == 0 and '"HELLO, YOU!"' in run.out


def test_init_keeps_existing_files_and_writes_gitlab_ci(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines/hello.yaml").write_text("mine\n")
    done = flowctl("init", str(tmp_path), "--ci", "gitlab")
    assert done.code == 0
    assert f"kept     {tmp_path / 'pipelines/hello.yaml'} (exists)" in done.out
    assert (tmp_path / "pipelines/hello.yaml").read_text() == "mine\n"
    assert (tmp_path / ".gitlab-ci.yml").read_text() == template("gitlab-ci.yml")
    assert not (tmp_path / ".github").exists()


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_the_ci_examples_are_the_templates_init_writes(name: str) -> None:
    assert (ROOT / "examples/ci" / name).read_text() == template(name)


def _flowctl_commands(value: object, key: str = "") -> list[list[str]]:
    """Every `flowctl ...` command line that a CI file or hook runs (run/script/entry)."""
    if isinstance(value, dict):
        return [c for k, v in value.items() for c in _flowctl_commands(v, str(k))]
    if isinstance(value, list):
        return [c for v in value for c in _flowctl_commands(v, key)]
    if not isinstance(value, str) or key not in ("run", "script", "entry"):
        return []
    found = []
    for line in value.splitlines():
        if line.lstrip().startswith("flowctl "):
            words = shlex.split(line.split("||")[0].split(">")[0])
            found.append(words[1:])
    return found


@pytest.mark.parametrize(
    "path",
    [
        "examples/ci/github-actions.yml",
        "examples/ci/gitlab-ci.yml",
        ".pre-commit-hooks.yaml",
        "flowctl/templates/pre-commit-config.yaml",
    ],
)
def test_every_flowctl_command_in_the_ci_files_exists(path: str) -> None:
    document = yaml.safe_load((ROOT / path).read_text())
    commands = _flowctl_commands(document)
    assert commands, f"no flowctl command found in {path}"
    for words in commands:
        command = cli.commands[words[0]]
        options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
        used = {w for w in words[1:] if w.startswith("--")}
        assert used <= options, (path, words)


def test_the_pre_commit_hook_validates_pipeline_files() -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "flowctl-validate" and hook["entry"] == "flowctl validate"
    assert re.search(hook["files"], "pipelines/team/a.yaml")
    assert not re.search(hook["files"], ".github/workflows/ci.yml")
