"""Shared pieces of the CLI: consoles, the --db / --storage options, opening the store, clean errors."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console

from trainer.checkpoint import CheckpointError
from trainer.config import ConfigError
from trainer.data import DataError
from trainer.metrics import MissingWeightsError

from .diskfull import describe, is_disk_full
from .outputs import OutputError
from .query import FilterError
from .store import Store, StoreError, database_url

err = Console(stderr=True)
out = Console()
USAGE, RUNTIME = 2, 1

DB_OPTION = typer.Option(None, "--db", help="Store: an SQLAlchemy URL or an SQLite file path [default: $ECT_DB, else ./ect.db].")
STORAGE_OPTION = typer.Option(Path("ect-store"), "--storage", help="Root of run directories and checkpoints; on a multi-node cluster, a path every node sees.")


def open_store(db: Optional[str], create: bool = True) -> Store:
    return Store(database_url(db), create=create)


def existing_store(db: Optional[str]) -> Store | None:
    """The store if an SQLite file is there (or any other URL), else None: for commands that write nothing."""
    url = database_url(db)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).expanduser().is_file():
        return None
    return Store(url, create=False)


class DiskFullError(RuntimeError):
    """A write failed for lack of space; the message names the path."""


@contextmanager
def _disk_full_as_error() -> Iterator[None]:
    try:
        yield
    except (DiskFullError, StoreError):
        raise
    except Exception as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(describe(e)) from None


@contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the project's expected errors into one line per problem on stderr and a non-zero exit code."""
    try:
        with _disk_full_as_error():
            yield
    except (ConfigError, FilterError, OutputError) as e:
        err.print(f"[red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE)
    except (DataError, CheckpointError, StoreError, MissingWeightsError, RuntimeError, ValueError) as e:
        err.print(f"[red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(RUNTIME)
