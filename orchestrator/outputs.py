"""Outputs that are never half-written: every command that writes a file or a directory of files
(`study report --out`, `figures regenerate`, `figures paper`, `runs export`) writes into a temporary
file or directory beside the target and moves the result into place only when all of it was written.

A failure at any point (a damaged checkpoint, a full disk, Ctrl-C) leaves the target as it was. An
unusable target (a directory where a file is wanted, a file where a directory is wanted, a parent
path that is a file, an existing file without `force`) is refused before anything is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class OutputError(ValueError):
    """An output target that cannot be written; the message names it (a usage error, exit 2)."""


def _existing_ancestor(target: Path) -> Path:
    """The nearest existing ancestor of `target`, which must be a directory (the temp goes there)."""
    for parent in target.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{target}: {parent} is not a directory")
            return parent
    raise OutputError(f"{target}: no existing parent directory")  # unreachable: / exists


def check_file_target(target: Path, force: bool = False) -> Path:
    """The directory where the temp file goes; refuses a directory, a bad parent or (without force) an existing file."""
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target}: is a directory; give a file path")
    anchor = _existing_ancestor(target)
    if target.exists() and not force:
        raise OutputError(f"{target}: exists; use --force to overwrite it")
    return anchor


def check_dir_target(target: Path) -> Path:
    """The directory where the temp directory goes; refuses a target that exists and is not a directory."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target}: exists and is not a directory")
    return _existing_ancestor(target)


def _temp_error(target: Path, e: OSError) -> OutputError:
    return OutputError(f"{target}: cannot write beside it ({e.strerror or e})")


@contextmanager
def atomic_file(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target` (parents created), else it is removed."""
    target = Path(target)
    anchor = check_file_target(target, force)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=anchor)
    except OSError as e:
        raise _temp_error(target, e) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temp directory beside `target`; on success its files move into `target` (created with
    its parents; other files already there are kept, same-named ones replaced), else it is removed."""
    target = Path(target)
    anchor = check_dir_target(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name or 'out'}.", suffix=".tmp", dir=anchor))
    except OSError as e:
        raise _temp_error(target, e) from None
    try:
        yield tmp
        _move_contents(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_contents(src: Path, target: Path) -> None:
    """Move every file under `src` to the same place under `target`; conflicts are checked before any move."""
    files = sorted(p for p in src.rglob("*") if not p.is_dir())
    for f in files:
        dest = target / f.relative_to(src)
        if dest.is_dir():
            raise OutputError(f"{dest}: is a directory; cannot replace it with a file")
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        dest = target / f.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)


def moved(paths: list[Path], tmp: Path, target: Path) -> list[Path]:
    """Where files written under `tmp` ended up under `target`."""
    return [Path(target) / Path(p).relative_to(tmp) for p in paths]
