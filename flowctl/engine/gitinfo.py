"""What git knows about a pipeline file: the last commit that touched it, the branch, the
author; and the pipeline files as they were at another ref (for `flowctl diff`).

Every call is a `git` subprocess run in the file's folder; outside a work tree (or
without git installed) the answers are None, never an error, so `apply` works on a
plain folder too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from flowctl.errors import FlowctlError

GIT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class GitSource:
    """Where a file's content came from; a field is None when git cannot tell."""

    path: str  # relative to the top of the work tree, with "/"
    commit: str | None
    branch: str | None
    author: str | None  # "Name <email>" of the last commit that touched the file
    dirty: bool = False  # the file differs from that commit (uncommitted changes)


class GitError(FlowctlError):
    """A git ref or path that `flowctl diff --against` cannot read."""


def _git(cwd: str | os.PathLike[str], *args: str) -> str | None:
    output = _git_bytes(cwd, *args)
    return None if output is None else output.decode("utf-8", "replace").strip()


def work_tree(folder: str | os.PathLike[str]) -> Path | None:
    """The top of the git work tree holding `folder`, or None."""
    top = _git(folder, "rev-parse", "--show-toplevel")
    return Path(top).resolve() if top else None


def _branch(top: Path) -> str | None:
    branch = _git(top, "symbolic-ref", "--quiet", "--short", "HEAD")
    return branch or None  # a detached HEAD (most CI checkouts of a pull request) has none


def file_sources(
    paths: Sequence[str], branch_hint: str | None = None
) -> dict[str, GitSource | None]:
    """Git metadata of each file, or None for a file outside any git work tree.

    `branch_hint` (from the CI's environment) names the branch when HEAD is detached.
    """
    tops: dict[Path, Path | None] = {}
    branches: dict[Path, str | None] = {}
    found: dict[str, GitSource | None] = {}
    for path in paths:
        file = Path(path).resolve()
        if file.parent not in tops:
            tops[file.parent] = work_tree(file.parent)
        top = tops[file.parent]
        if top is None:
            found[path] = None
            continue
        if top not in branches:
            branches[top] = _branch(top) or branch_hint
        found[path] = _file_source(top, file.relative_to(top).as_posix(), branches[top])
    return found


def _file_source(top: Path, relative: str, branch: str | None) -> GitSource:
    log = _git(top, "log", "-1", "--format=%H%x00%an <%ae>", "--", relative)
    commit, author = log.split("\x00", 1) if log and "\x00" in log else (None, None)
    status = _git(top, "status", "--porcelain", "--", relative)
    return GitSource(relative, commit, branch, author, dirty=bool(status))


def files_at_ref(paths: Sequence[str], ref: str) -> Iterator[tuple[str, bytes]]:
    """(path, content) of every *.yaml/*.yml file under `paths` as they were at `ref`.

    Paths are given and returned as the caller names them (relative to the working
    directory); a path that did not exist at `ref` yields nothing.
    """
    for path in paths:
        folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
        top = work_tree(os.path.abspath(folder))
        if top is None:
            raise GitError(f"{path} is not inside a git work tree; --against {ref} needs one")
        if _git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") is None:
            raise GitError(f"unknown git ref {ref!r}")
        absolute = Path(path).resolve()
        relative = absolute.relative_to(top).as_posix()
        scope = [] if relative == "." else ["--", relative]
        listing = _git(top, "ls-tree", "-r", "-z", "--name-only", "--full-tree", ref, *scope)
        names = sorted(name for name in (listing or "").split("\x00") if _is_pipeline(name))
        for name in names:
            content = _git_bytes(top, "show", f"{ref}:{name}")
            if content is not None:
                shown = os.path.relpath(top / name)
                yield shown, content


def _is_pipeline(name: str) -> bool:
    parts = name.split("/")
    hidden = any(part.startswith(".") for part in parts[:-1])
    return bool(name) and not hidden and name.endswith((".yaml", ".yml"))


def _git_bytes(cwd: str | os.PathLike[str], *args: str) -> bytes | None:
    try:
        done = subprocess.run(
            ["git", "-C", os.fspath(cwd), *args],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
