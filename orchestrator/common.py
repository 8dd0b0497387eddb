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

from .query import FilterError
from .store import NoStoreError, Store, StoreError, database_url

err = Console(stderr=True)
out = Console()
USAGE, RUNTIME = 2, 1
# The project's expected errors: usage errors (exit 2) and runtime errors (exit 1); the notebook API raises both as ApiError.
USAGE_ERRORS = (ConfigError, FilterError)
RUNTIME_ERRORS = (DataError, CheckpointError, StoreError, MissingWeightsError, RuntimeError, ValueError)

DB_OPTION = typer.Option(None, "--db", help="Store: an SQLAlchemy URL or an SQLite file path [default: $ECT_DB, else ./ect.db].")
TRACK_OPTION = typer.Option(None, "--track", help="Mirror the study into MLflow: mlflow (then $MLFLOW_TRACKING_URI) or mlflow:URI [default: the study's tracking:].")
DASHBOARD_OPTION = typer.Option(False, "--dashboard", help="Start the local Ray head with its dashboard, on 127.0.0.1 only.")
STORAGE_OPTION = typer.Option(Path("ect-store"), "--storage", help="Root of run directories and checkpoints; on a multi-node cluster, a path every node sees.")


def open_store(db: Optional[str], create: bool = True, readonly: bool = False) -> Store:
    """The store at --db; `readonly` for commands that write nothing (never created, migrated or changed)."""
    return Store(database_url(db), create=create, readonly=readonly)


def existing_store(db: Optional[str]) -> Store | None:
    """The store read-only, or None where there is none yet (no SQLite file, an empty database)."""
    try:
        return Store(database_url(db), create=False, readonly=True)
    except NoStoreError:
        return None


@contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the project's expected errors into one line per problem on stderr and a non-zero exit code."""
    try:
        yield
    except USAGE_ERRORS as e:
        err.print(f"[red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE)
    except RUNTIME_ERRORS as e:
        err.print(f"[red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(RUNTIME)
