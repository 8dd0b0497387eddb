"""Schema revisions of a store, read and applied with Alembic programmatically (no alembic.ini at run time).

A store's revision is Alembic's `alembic_version`; stores written before migrations have none and
`meta.schema_version` 1, which is revision 0001.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select

from .schema import Base, Meta, SCHEMA_VERSION

MIGRATIONS = Path(__file__).parent / "migrations"
LEGACY = {"1": "0001"}  # meta.schema_version of a store without alembic_version -> its revision


class SchemaError(Exception):
    """The database is not an ECT store this code can use; the message is one line (without the URL)."""


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@lru_cache(maxsize=1)
def _revisions() -> tuple[str, frozenset[str]]:
    script = ScriptDirectory.from_config(_config())
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def head() -> str:
    """The newest revision this code knows."""
    return _revisions()[0]


def known(revision: str) -> bool:
    """Whether this code has the migration `revision` (a store at an unknown one was written by a newer ect)."""
    return revision in _revisions()[1]


def current(conn: Connection) -> str | None:
    """The store's revision; None for an empty database. Reads only."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return None
    if "meta" not in tables:
        raise SchemaError("holds tables that are not an ECT store")
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is not None:
        return revision
    marker = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
    if marker not in LEGACY:
        raise SchemaError(f"store schema version {marker} is not one this ect knows (it reads 1 and Alembic revisions)")
    return LEGACY[marker]


def create(conn: Connection) -> None:
    """Create the head schema in an empty database and record its revision."""
    Base.metadata.create_all(conn)
    conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    command.stamp(_config(conn), "head")


def upgrade(conn: Connection, revision: str) -> None:
    """Upgrade a store at `revision` to head, in the caller's transaction."""
    if MigrationContext.configure(conn).get_current_revision() is None:
        command.stamp(_config(conn), revision)  # a store from before migrations
    command.upgrade(_config(conn), "head")
