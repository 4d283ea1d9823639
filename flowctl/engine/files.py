"""File paths from `with:` blocks, confined to the allowed roots.

A pipeline may name files (an `ocr` source, a `validate` schema), but only inside the
folders a user allowed: the pipeline's own folder, the working directory, and the
folders of `FLOWCTL_FILE_ROOTS` (`Settings.file_roots`). A path is checked after `..`
and symlinks are resolved, so neither can lead out of those folders.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from flowctl.config import Settings
from flowctl.errors import ExecutorError


def allowed_roots(settings: Settings, pipeline_dir: Path | None) -> tuple[Path, ...]:
    """The folders files may be read from, resolved, in lookup order, without repeats."""
    candidates: Iterable[Path | None] = (pipeline_dir, Path.cwd(), *settings.file_roots)
    roots: dict[Path, None] = {}
    for root in candidates:
        if root is not None:
            roots.setdefault(Path(root).resolve(), None)
    return tuple(roots)


def resolve_file(path: str, roots: Sequence[Path], *, what: str = "file") -> Path:
    """The real path of the regular file `path`, which must lie under one of `roots`.

    A relative path is looked up in each root in turn. Raises ExecutorError naming the
    path when it escapes the roots, does not exist, or is not a regular file: another
    attempt cannot fix that (`retryable=False`).
    """
    if "\0" in path:
        raise ExecutorError(f"{what} {path!r} is not a valid path", retryable=False)
    given = Path(path)
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    inside: list[Path] = []
    for candidate in candidates:
        try:
            real = candidate.resolve()
            is_file = real.is_file()
        except OSError as error:  # a name too long, a loop of symlinks, ...
            raise ExecutorError(
                f"{what} {path!r} is not a usable path: {error.strerror}", retryable=False
            ) from None
        if not _is_under(real, roots):
            continue
        if is_file:
            return real
        inside.append(real)
    folders = ", ".join(str(root) for root in roots)
    if not inside:
        raise ExecutorError(
            f"{what} {path!r} is outside the allowed folders ({folders}); "
            "add its folder to FLOWCTL_FILE_ROOTS to allow it",
            retryable=False,
        )
    if any(real.exists() for real in inside):
        raise ExecutorError(f"{what} {path!r} is not a regular file", retryable=False)
    raise ExecutorError(f"{what} {path!r} does not exist (looked in {folders})", retryable=False)


def read_file(path: Path, *, max_bytes: int, shown_as: str, what: str = "file") -> bytes:
    """The bytes of `path`, refusing files larger than `max_bytes` before reading them.

    A file over the limit fails for good (`retryable=False`); a read error may not.
    """
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                raise ExecutorError(
                    f"{what} {shown_as!r} is {size:,} bytes, more than the limit of "
                    f"{max_bytes:,} bytes",
                    retryable=False,
                )
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise ExecutorError(f"cannot read {what} {shown_as!r}: {error.strerror}") from None
    if len(data) > max_bytes:  # grew while being read
        raise ExecutorError(
            f"{what} {shown_as!r} is more than the limit of {max_bytes:,} bytes", retryable=False
        )
    return data


def _is_under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)
