"""Schema revisions of a store, read and applied with Alembic programmatically (no alembic.ini at run time).

A store's revision is Alembic's `alembic_version`; stores written before migrations have none and
`meta.schema_version` 1, which is revision 0001. Opening a store at `HEAD` reads that one row with SQLAlchemy:
Alembic (and its migration scripts) is imported only to create, upgrade or check an unknown revision.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, column, inspect, select, table

from .schema import Base, Meta, SCHEMA_VERSION

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0004"  # the newest revision in migrations/versions (tests/test_store.py checks it against Alembic's head)
LEGACY = {"1": "0001"}  # meta.schema_version of a store without alembic_version -> its revision
VERSION_TABLE = table("alembic_version", column("version_num"))  # Alembic's own table of the store's revision


class SchemaError(Exception):
    """The database is not an ECT store this code can use; the message is one line (without the URL)."""


def _config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@lru_cache(maxsize=1)
def revisions() -> tuple[str, frozenset[str]]:
    """(head, every revision) as Alembic reads them from the migration scripts."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def head() -> str:
    """The newest revision this code knows."""
    return HEAD


def known(revision: str) -> bool:
    """Whether this code has the migration `revision` (a store at an unknown one was written by a newer ect)."""
    return revision == HEAD or revision in revisions()[1]


def current(conn: Connection) -> str | None:
    """The store's revision; None for an empty database. Reads only."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return None
    if "meta" not in tables:
        raise SchemaError("holds tables that are not an ECT store")
    revision = _stamped(conn, tables)
    if revision is not None:
        return revision
    marker = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
    if marker not in LEGACY:
        raise SchemaError(f"store schema version {marker} is not one this ect knows (it reads 1 and Alembic revisions)")
    return LEGACY[marker]


def _stamped(conn: Connection, tables: set[str]) -> str | None:
    """The revision Alembic recorded in the store (what its MigrationContext reads); None where there is none."""
    if "alembic_version" not in tables:
        return None
    stamped = list(conn.execute(select(VERSION_TABLE.c.version_num)).scalars())
    if len(stamped) > 1:
        raise SchemaError(f"store has several schema revisions ({', '.join(map(str, stamped))}); expected one")
    return stamped[0] if stamped else None


def create(conn: Connection) -> None:
    """Create the head schema in an empty database and record its revision."""
    from alembic import command

    Base.metadata.create_all(conn)
    conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    command.stamp(_config(conn), "head")


def upgrade(conn: Connection, revision: str) -> None:
    """Upgrade a store at `revision` to head, in the caller's transaction."""
    from alembic import command

    if _stamped(conn, set(inspect(conn).get_table_names())) is None:
        command.stamp(_config(conn), revision)  # a store from before migrations
    command.upgrade(_config(conn), "head")
