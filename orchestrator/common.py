"""Shared pieces of the CLI: consoles, the --db / --storage options, opening the store, clean errors."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from sqlalchemy.exc import SQLAlchemyError

from trainer.config import ConfigError

from .cli_options import pipe_console
from .query import FilterError
from .store import DEFAULT_DB, Store, StoreError, database_url, redact

err = pipe_console(stderr=True)
out = pipe_console()
USAGE, RUNTIME = 2, 1

DB_OPTION = typer.Option(None, "--db", envvar="ECT_DB", show_default=DEFAULT_DB,
                         help="Store: an SQLAlchemy URL or an SQLite file path.")
STORAGE_OPTION = typer.Option(Path("ect-store"), "--storage", help="Root of run directories and checkpoints; on a multi-node cluster, a path every node sees.")

# Runtime errors of modules that import torch: looked up only if their module is loaded (an exception
# of a class can only exist once its module has been imported), so the CLI need not import torch.
_RUNTIME_ERRORS = (("trainer.data", "DataError"), ("trainer.checkpoint", "CheckpointError"),
                   ("trainer.metrics.extractors", "MissingWeightsError"))
_database: list[str] = []  # the URL of the store opened last, for error messages


def open_store(db: Optional[str], create: bool = True) -> Store:
    url = database_url(db)
    _database[:] = [url]
    return Store(url, create=create)


def existing_store(db: Optional[str]) -> Store | None:
    """The store if an SQLite file is there (or any other URL), else None: for commands that write nothing."""
    url = database_url(db)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).expanduser().is_file():
        return None
    _database[:] = [url]
    return Store(url, create=False)


def _loaded_runtime_errors() -> tuple[type[BaseException], ...]:
    found = (getattr(sys.modules.get(module), name, None) for module, name in _RUNTIME_ERRORS)
    return tuple(cls for cls in found if isinstance(cls, type))


def database_error(e: SQLAlchemyError) -> str:
    """One line for a database error: the database (password masked) and the driver's first line."""
    where = redact(_database[0]) if _database else "the store"
    detail = str(getattr(e, "orig", None) or e).strip().splitlines()
    return f"database {where}: {type(e).__name__}: {detail[0] if detail else ''}"


def _fail(message: object, code: int) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the project's expected errors into one line per problem on stderr and a non-zero exit code."""
    try:
        yield
    except (ConfigError, FilterError) as e:
        raise _fail(e, USAGE)
    except SQLAlchemyError as e:
        raise _fail(database_error(e), RUNTIME)
    except (StoreError, RuntimeError, ValueError) as e:
        raise _fail(e, RUNTIME)
    except Exception as e:
        if isinstance(e, _loaded_runtime_errors()):
            raise _fail(e, RUNTIME)
        raise
