"""Secrets for `{{ secrets.NAME }}`: FLOWCTL_SECRET_<NAME> variables and a secrets file.

Values are redacted ("***") from everything flowctl writes: errors, stored inputs and
outputs, logs. The file (FLOWCTL_SECRETS_FILE) is JSON (`{"NAME": "value"}`) or
dotenv-style lines (`NAME=value`, `#` comments).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flowctl.errors import FlowctlError

REDACTED = "***"
_MIN_REDACTED_LENGTH = 3  # shorter values would redact ordinary text


class MissingSecretError(FlowctlError):
    pass


class Secrets(Mapping[str, str]):
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self._redactable = sorted(
            (v for v in self._values.values() if len(v) >= _MIN_REDACTED_LENGTH),
            key=len,
            reverse=True,
        )

    @classmethod
    def load(cls, environment: Mapping[str, str], file: Path | None = None) -> Secrets:
        values = dict(_read_file(file)) if file else {}
        values.update(environment)
        return cls(values)

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise MissingSecretError(
                f"secret {name!r} is not set (set FLOWCTL_SECRET_{name} or add it to the "
                "file named by FLOWCTL_SECRETS_FILE)"
            ) from None

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)})"  # names only, never values

    def redactable(self) -> frozenset[str]:
        """The values `redact` replaces (long enough not to redact ordinary text)."""
        return frozenset(self._redactable)

    def redact(self, value: Any) -> Any:
        """`value` with every secret replaced by "***" (strings inside lists and dicts too)."""
        if not self._redactable:
            return value
        if isinstance(value, str):
            for secret in self._redactable:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {key: self.redact(child) for key, child in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(child) for child in value]
        return value


def _read_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FlowctlError(f"cannot read secrets file {path}: {error.strerror}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise FlowctlError(
                f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}"
            ) from None
        if not isinstance(data, dict):
            raise FlowctlError(f"{path}: expected a JSON object of NAME: value")
        return {str(k): str(v) for k, v in data.items()}
    values = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.removeprefix("export ").partition("=")
        if not sep:
            raise FlowctlError(f"{path}:{number}: expected NAME=value")
        values[name.strip()] = value.strip().strip("'\"")
    return values
