"""Shared pieces of the CLI: consoles, the --db / --storage options, opening the store, clean errors."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import typer

from trainer.config import ConfigError

from .cli_options import pipe_console
from .diskfull import describe, is_disk_full
from .outputs import OutputError
from .store_names import DEFAULT_DB, database_url

if TYPE_CHECKING:
    from .store import Store

err = pipe_console(stderr=True)
out = pipe_console()
USAGE, RUNTIME = 2, 1

DB_OPTION = typer.Option(None, "--db", envvar="ECT_DB", show_default=DEFAULT_DB,
                         help="Store: an SQLAlchemy URL or an SQLite file path.")
TRACK_OPTION = typer.Option(None, "--track", show_default="the study's tracking:",
                            help="Mirror the study into MLflow: mlflow (then $MLFLOW_TRACKING_URI) or mlflow:URI.")
DASHBOARD_OPTION = typer.Option(False, "--dashboard", help="Start the local Ray head with its dashboard, on 127.0.0.1 only.")
STORAGE_OPTION = typer.Option(Path("ect-store"), "--storage", help="Root of run directories and checkpoints; on a multi-node cluster, a path every node sees.")

# The store (SQLAlchemy) is imported by the commands that open it, torch by those that train or sample, so that
# `ect --help` stays light. Their errors are looked up only if their module is loaded (an exception of a class
# can only exist once its module has been imported).
_USAGE_ERRORS = (("orchestrator.query", "FilterError"),)
_DATABASE_ERRORS = (("sqlalchemy.exc", "SQLAlchemyError"),)
_STORE_ERRORS = (("orchestrator.store", "StoreError"),)
_RUNTIME_ERRORS = (*_STORE_ERRORS, ("trainer.data", "DataError"), ("trainer.checkpoint", "CheckpointError"),
                   ("trainer.metrics.extractors", "MissingWeightsError"))
_database: list[str] = []  # the URL of the store opened last, for error messages


def open_store(db: Optional[str], create: bool = True, readonly: bool = False) -> Store:
    """The store at --db; `readonly` for commands that write nothing (never created, migrated or changed)."""
    from .store import Store

    url = database_url(db)
    _database[:] = [url]
    return Store(url, create=create, readonly=readonly)


def existing_store(db: Optional[str]) -> Store | None:
    """The store read-only, or None where there is none yet (no SQLite file, an empty database)."""
    from .store import NoStoreError

    try:
        return open_store(db, create=False, readonly=True)
    except NoStoreError:
        return None


def _loaded(classes: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    """Those of the (module, class name) pairs whose module has been imported."""
    found = (getattr(sys.modules.get(module), name, None) for module, name in classes)
    return tuple(cls for cls in found if isinstance(cls, type))


def database_error(e: BaseException) -> str:
    """One line for a database error: the database (password masked) and the driver's first line."""
    from .store import redact

    where = redact(_database[0]) if _database else "the store"
    detail = str(getattr(e, "orig", None) or e).strip().splitlines()
    return f"database {where}: {type(e).__name__}: {detail[0] if detail else ''}"


def error_code(e: BaseException) -> int | None:
    """The exit code of one of the project's expected errors (usage 2, runtime 1); None for anything else.
    The notebook API raises the same set as its ApiError. Click's Exit and Abort derive from RuntimeError but
    are the CLI's own control flow, never an error to report."""
    if isinstance(e, (typer.Exit, typer.Abort)):
        return None
    if isinstance(e, (ConfigError, OutputError, *_loaded(_USAGE_ERRORS))):
        return USAGE
    if isinstance(e, (RuntimeError, ValueError, *_loaded(_DATABASE_ERRORS), *_loaded(_RUNTIME_ERRORS))):
        return RUNTIME
    return None


def error_message(e: BaseException) -> str:
    """The one line the CLI prints for an expected error."""
    return database_error(e) if isinstance(e, _loaded(_DATABASE_ERRORS)) else str(e)


def _fail(message: object, code: int) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


class DiskFullError(RuntimeError):
    """A write failed for lack of space; the message names the path."""


@contextmanager
def _disk_full_as_error() -> Iterator[None]:
    try:
        yield
    except (DiskFullError, *_loaded(_STORE_ERRORS)):
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
    except Exception as e:
        code = error_code(e)
        if code is None:
            raise
        raise _fail(error_message(e), code) from None
