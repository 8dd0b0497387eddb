"""`ect db ...`: the store's schema."""

from __future__ import annotations

from typing import Optional

import typer

from .common import DB_OPTION, clean_errors, open_store, out

app = typer.Typer(help="The store's schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_cmd(db: Optional[str] = DB_OPTION) -> None:
    """Upgrade a store written by an older ect to this ect's schema, in place (any writing command also does)."""
    from .store import redact
    from .store.migrate import head

    with clean_errors():
        store = open_store(db, create=False)
    before = f"upgraded from revision {store.migrated_from} to" if store.migrated_from else "already at revision"
    out.print(f"{redact(store.url)}: {before} {head()}", highlight=False)
