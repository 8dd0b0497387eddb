"""A store that many drivers share: 64-bit counts, timezone-aware timestamps, run claims, job and error links.

Revision ID: 0002
Revises: 0001

Stores written before this revision hold ISO 8601 strings in `created_at` / `started_at` /
`finished_at`; on SQLite they are rewritten in the DateTime storage format first (a batch copy would
otherwise CAST them to a number), on PostgreSQL they are cast with `::timestamptz`.
"""

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMPS = {"studies": ("name", ["created_at"]), "runs": ("run_id", ["created_at", "started_at", "finished_at"])}
COUNTS = {"runs": ["attempts", "step", "total_steps", "num_params", "images_seen"], "metrics": ["step"],
          "evaluations": ["step", "nfe", "num_samples"]}
NEW_COLUMNS = {
    "runs": [sa.Column("owner", sa.String(128)), sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
             sa.Column("error_file", sa.Text)],
    "studies": [sa.Column("job_id", sa.String(128)), sa.Column("job_address", sa.Text)],
}
TZ = sa.DateTime(timezone=True)


def _utc(text: str) -> datetime:
    """An ISO 8601 string as a naive UTC datetime (a string without an offset is taken as UTC)."""
    value = datetime.fromisoformat(text)
    return (value.astimezone(timezone.utc) if value.tzinfo else value).replace(tzinfo=None)


def _rewrite_sqlite_timestamps() -> None:
    bind = op.get_bind()
    for table, (key, columns) in TIMESTAMPS.items():
        for column in columns:
            raw = sa.table(table, sa.column(key), sa.column(column, sa.String))
            rows = bind.execute(sa.select(raw.c[key], raw.c[column]).where(raw.c[column].is_not(None))).all()
            typed = sa.table(table, sa.column(key), sa.column(column, sa.DateTime()))
            for pk, text in rows:
                bind.execute(sa.update(typed).where(typed.c[key] == pk).values({column: _utc(text)}))


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _rewrite_sqlite_timestamps()
    for table in ("studies", "runs", "metrics", "evaluations"):
        stamps = TIMESTAMPS.get(table, (None, []))[1]
        # SQLite: read the timestamp columns as DateTime already, so that the table copy keeps their text as is
        reflect = [sa.Column(c, TZ, nullable=c != "created_at") for c in stamps] if sqlite else []
        with op.batch_alter_table(table, reflect_args=reflect) as batch:
            for column in COUNTS.get(table, []):
                batch.alter_column(column, type_=sa.BigInteger(), existing_type=sa.Integer())
            for column in stamps:
                batch.alter_column(column, type_=TZ, existing_type=sa.String(32),
                                   postgresql_using=f"{column}::timestamptz")
            for column in NEW_COLUMNS.get(table, []):
                batch.add_column(column)
            if not sqlite and table in ("metrics", "evaluations"):
                batch.alter_column("id", type_=sa.BigInteger(), existing_type=sa.Integer())
    if not sqlite:
        op.execute("ALTER SEQUENCE metrics_id_seq AS bigint")
        op.execute("ALTER SEQUENCE evaluations_id_seq AS bigint")
    meta = sa.table("meta", sa.column("key"), sa.column("value"))
    op.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value="2"))


def downgrade() -> None:
    raise NotImplementedError("0002 is not reversible: export with `ect runs export` and start a new store")
