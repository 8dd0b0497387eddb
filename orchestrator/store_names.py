"""The store's vocabulary that the CLI needs before it opens a database: the default URL, the run statuses, when a
run's driver counts as gone. No SQLAlchemy here, so that `ect --help` and option parsing stay light;
`orchestrator.store` re-exports all of it."""

from __future__ import annotations

import os

DEFAULT_DB = "sqlite:///ect.db"
STATUSES = ("pending", "running", "completed", "failed", "diverged", "cancelled", "interrupted")
FINISHED = ("completed", "diverged")
# A driver beats its runs' heartbeats every 2 s; one silent for this long is presumed dead: its runs are shown
# stale and may be claimed by another driver. Generous, so that a driver slowed by a loaded machine keeps its runs.
STALE_SECONDS = 60.0


def database_url(db: str | None) -> str:
    """`--db` value, else $ECT_DB, else ./ect.db. A bare path means an SQLite file."""
    value = db or os.environ.get("ECT_DB") or DEFAULT_DB
    return value if "://" in value else f"sqlite:///{value}"
