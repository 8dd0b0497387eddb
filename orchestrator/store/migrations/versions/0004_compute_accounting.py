"""Compute accounting: each run's init chain and total training compute, each evaluation's sampling cost.

Revision ID: 0004
Revises: 0003

`runs.init_chain_flops` is the training FLOPs of the runs a run starts from, transitively (the pretraining
that "32x cheaper" tuning leaves out), and `runs.total_flops` its own plus that; both NULL where a run of the
chain has no count yet. `evaluations.sampling_flops` is the sampling cost per image: NFE x the run's forward
FLOPs per sample. Existing rows are filled from what is stored.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def chain_flops(runs: dict[str, tuple[float | None, str | None]], run_id: str | None) -> float | None:
    """Training FLOPs of `run_id` and of every run it starts from (None where one of them has no count)."""
    total, seen = 0.0, set()
    while run_id is not None and run_id not in seen:
        seen.add(run_id)
        flops, parent = runs.get(run_id, (None, None))
        if flops is None:
            return None
        total, run_id = total + flops, parent
    return total


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("init_chain_flops", sa.Float, nullable=True))
        batch.add_column(sa.Column("total_flops", sa.Float, nullable=True))
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("sampling_flops", sa.Float, nullable=True))
    runs = sa.table("runs", sa.column("run_id"), sa.column("train_flops"), sa.column("depends_on"),
                    sa.column("flops_per_sample"), sa.column("init_chain_flops"), sa.column("total_flops"))
    rows = bind.execute(sa.select(runs.c.run_id, runs.c.train_flops, runs.c.depends_on)).all()
    known = {r.run_id: (r.train_flops, r.depends_on) for r in rows}
    for r in rows:
        chain = chain_flops(known, r.depends_on) if r.depends_on else 0.0
        total = None if chain is None or r.train_flops is None else chain + r.train_flops
        bind.execute(sa.update(runs).where(runs.c.run_id == r.run_id).values(init_chain_flops=chain, total_flops=total))
    ev = sa.table("evaluations", sa.column("run_id"), sa.column("nfe"), sa.column("sampling_flops"))
    per_sample = sa.select(runs.c.flops_per_sample).where(runs.c.run_id == ev.c.run_id).scalar_subquery()
    bind.execute(sa.update(ev).values(sampling_flops=ev.c.nfe * per_sample))
    m = sa.table("meta", sa.column("key"), sa.column("value"))
    bind.execute(sa.update(m).where(m.c.key == "schema_version").values(value="4"))


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("sampling_flops")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("total_flops")
        batch.drop_column("init_chain_flops")
