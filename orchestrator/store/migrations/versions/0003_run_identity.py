"""Runs keyed by what determines their weights: run ids recomputed, former ids kept as aliases.

Revision ID: 0003
Revises: 0002

Until 0002 a run id hashed the whole config (evaluation, device, GPU options and paths included). Each
run's id is recomputed from its stored `config_json` and the new id of the run it starts from
(`depends_on`, parents first), and every table that names it is re-pointed. Runs that now share an id
(they differed only in such settings) are merged into one: the most advanced (completed first, then
most steps) keeps its row, parameters and metrics; the study memberships and evaluations of the
others move to it where they do not collide. Every former id is recorded in `run_aliases`, so the
driver finds a run directory still named by it (`<storage>/runs/<former id>`) and renames it.
A config that no longer validates keeps its id (it could not be resumed by this code either).

Evaluations gain the sampler's parameters (canonical JSON) and the sampling seed, filled from each run's
config (its `sampling` section and `eval.seed` produced the rows), and are keyed by everything that
defines one: run, step, metric, extractor, sampler and parameters, sample count, seed.
"""

import json

import sqlalchemy as sa
from alembic import op
from pydantic import ValidationError

from studies.spec import run_id_of
from trainer.config import TrainConfig

EVALUATION_KEY = ("run_id", "step", "metric", "extractor", "sampler", "sampler_params", "num_samples", "seed")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATUS_RANK = {"completed": 0, "diverged": 1, "running": 2, "failed": 3, "cancelled": 4, "pending": 5}


def _new_ids(rows: list) -> dict[str, str]:
    """Old id -> new id, parents before children (a child's id hashes its parent's new id)."""
    by_id = {r.run_id: r for r in rows}
    out: dict[str, str] = {}

    def new(rid: str, seen: tuple = ()) -> str:
        if rid not in by_id or rid in seen:  # a dangling or cyclic parent keeps its id
            return rid
        if rid not in out:
            row = by_id[rid]
            parent = new(row.depends_on, seen + (rid,)) if row.depends_on else None
            try:
                out[rid] = run_id_of(TrainConfig.model_validate(json.loads(row.config_json)), parent)
            except (ValidationError, ValueError):
                out[rid] = rid
        return out[rid]

    for rid in by_id:
        new(rid)
    return out


def _keeper(group: list) -> object:
    return min(group, key=lambda r: (STATUS_RANK.get(r.status, 9), -(r.step or 0), r.run_id))


def _move(bind: sa.Connection, meta: sa.MetaData, table: str, key: list[str], old: str, new: str) -> None:
    """Re-point `table`'s rows from run `old` to `new`, dropping those that would collide on `key`."""
    t = meta.tables[table]
    n = t.alias("n")
    taken = sa.select(sa.literal(1)).select_from(n).where(*(n.c[k] == t.c[k] for k in key), n.c.run_id == new)
    bind.execute(sa.delete(t).where(t.c.run_id == old, sa.exists(taken)))
    bind.execute(sa.update(t).where(t.c.run_id == old).values(run_id=new))


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "run_aliases",
        sa.Column("old_id", sa.String(32), primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
    )
    op.create_index("ix_run_aliases_run_id", "run_aliases", ["run_id"])
    meta = sa.MetaData()
    meta.reflect(bind, only=["runs", "study_runs", "run_params", "metrics", "evaluations", "run_aliases", "meta"])
    runs = meta.tables["runs"]
    rows = bind.execute(sa.select(runs.c.run_id, runs.c.config_json, runs.c.depends_on, runs.c.status,
                                  runs.c.step)).all()
    mapping = _new_ids(rows)
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(mapping[r.run_id], []).append(r)
    for new, group in groups.items():
        keep = _keeper(group)
        if keep.run_id != new:  # the new row first, so that references can move to it
            row = bind.execute(sa.select(runs).where(runs.c.run_id == keep.run_id)).mappings().one()
            bind.execute(sa.insert(runs).values({**row, "run_id": new}))
        for r in sorted(group, key=lambda r: r is not keep):  # the keeper's rows first: they win collisions
            if r.run_id == new:
                continue
            _move(bind, meta, "study_runs", ["study"], r.run_id, new)
            _move(bind, meta, "evaluations", ["step", "nfe", "metric", "sampler"], r.run_id, new)
            for table, key in (("run_params", ["key"]), ("metrics", ["step", "name"])):
                if r is keep:
                    _move(bind, meta, table, key, r.run_id, new)
                else:
                    bind.execute(sa.delete(meta.tables[table]).where(meta.tables[table].c.run_id == r.run_id))
            bind.execute(sa.update(runs).where(runs.c.depends_on == r.run_id).values(depends_on=new))
            bind.execute(sa.delete(runs).where(runs.c.run_id == r.run_id))
            bind.execute(sa.insert(meta.tables["run_aliases"]).values(old_id=r.run_id, run_id=new))
    _evaluation_parameters(bind)
    m = meta.tables["meta"]
    bind.execute(sa.update(m).where(m.c.key == "schema_version").values(value="3"))


def _sampler_params(config_json: str, sampler: str, nfe: int) -> tuple[str, int]:
    """(parameters as canonical JSON, seed) of an evaluation written by a run with this config ("{}" if unknown)."""
    from trainer.sampling import params_json, sampler_for  # torch: only when migrating, not whenever a store opens

    try:
        cfg = TrainConfig.model_validate(json.loads(config_json))
        params = params_json(sampler_for(cfg.sampling, nfe, heun=sampler == "heun"))
    except (ValidationError, ValueError):
        return "{}", 0
    return params, cfg.eval.seed


def _evaluation_parameters(bind: sa.Connection) -> None:
    old_key = next(u["name"] for u in sa.inspect(bind).get_unique_constraints("evaluations"))
    with op.batch_alter_table("evaluations", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}) as batch:
        batch.add_column(sa.Column("sampler_params", sa.String(512), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("seed", sa.BigInteger, nullable=False, server_default="0"))
        batch.drop_constraint(old_key or "uq_evaluations_run_id", type_="unique")
    ev = sa.table("evaluations", sa.column("id"), sa.column("run_id"), sa.column("sampler"), sa.column("nfe"),
                  sa.column("sampler_params"), sa.column("seed"))
    runs = sa.table("runs", sa.column("run_id"), sa.column("config_json"))
    rows = bind.execute(sa.select(ev.c.id, ev.c.sampler, ev.c.nfe, runs.c.config_json)
                        .join(runs, runs.c.run_id == ev.c.run_id)).all()
    for row in rows:
        params, seed = _sampler_params(row.config_json, row.sampler, row.nfe)
        bind.execute(sa.update(ev).where(ev.c.id == row.id).values(sampler_params=params, seed=seed))
    with op.batch_alter_table("evaluations") as batch:
        batch.create_unique_constraint("uq_evaluations_key", list(EVALUATION_KEY))


def downgrade() -> None:
    raise NotImplementedError("0003 is not reversible: export with `ect runs export` and start a new store")
