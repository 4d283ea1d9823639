"""Configuration: the one place that reads FLOWCTL_* environment variables.

Command-line flags override these values; everything else receives a Settings object.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_STATE_DIR = Path(".flowctl")


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(default_factory=lambda: default_database_url())
    secrets_file: Path | None = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    openai_api_key: str | None = field(default=None, repr=False)  # llm's default api_key
    connections: Mapping[str, str] = field(default_factory=dict, repr=False)  # sql's names
    # Folders that file paths in `with:` (ocr sources, validate schemas) may point into,
    # besides the pipeline's folder and the working directory.
    file_roots: tuple[Path, ...] = ()
    # Who `flowctl apply` and `rollback` record as having done it, and the branch to
    # record when the checkout is a detached HEAD (as in most CI jobs).
    actor: str | None = None
    git_branch: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        url = env.get("FLOWCTL_DATABASE_URL") or default_database_url()
        secrets_file = env.get("FLOWCTL_SECRETS_FILE")
        prefix = "FLOWCTL_CONN_"
        return cls(
            database_url=url,
            secrets_file=Path(secrets_file) if secrets_file else None,
            environ=env,
            openai_api_key=env.get("OPENAI_API_KEY"),
            connections={k[len(prefix) :]: v for k, v in env.items() if k.startswith(prefix)},
            file_roots=tuple(
                Path(p) for p in env.get("FLOWCTL_FILE_ROOTS", "").split(os.pathsep) if p
            ),
            actor=_first(env, "FLOWCTL_ACTOR", "GITHUB_ACTOR", "GITLAB_USER_LOGIN", "USER")
            or _login_name(),
            git_branch=_first(env, "FLOWCTL_GIT_BRANCH", "CI_COMMIT_BRANCH", "GITHUB_REF_NAME"),
        )

    def with_database(self, url: str) -> Settings:
        return replace(self, database_url=url)

    def secret_environment(self) -> dict[str, str]:
        """FLOWCTL_SECRET_<NAME> variables, by NAME."""
        prefix = "FLOWCTL_SECRET_"
        return {k[len(prefix) :]: v for k, v in self.environ.items() if k.startswith(prefix)}


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[name] for name in names if env.get(name)), None)


def _login_name() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (some containers)
        return None


def default_database_url() -> str:
    return f"sqlite:///{DEFAULT_STATE_DIR / 'flowctl.db'}"
