"""Baseline: the schema of stores written before migrations (`meta.schema_version` 1).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("meta", sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text, nullable=False))
    op.create_table(
        "studies",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("spec_yaml", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("node", sa.String(128)),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("depends_on", sa.String(32)),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("started_at", sa.String(32)),
        sa.Column("finished_at", sa.String(32)),
        sa.Column("wall_seconds", sa.Float),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("num_params", sa.Integer),
        sa.Column("flops_per_sample", sa.Float),
        sa.Column("images_seen", sa.Integer),
        sa.Column("train_flops", sa.Float),
        sa.Column("normalized_compute", sa.Float),
        sa.Column("checkpoint", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "study_runs",
        sa.Column("study", sa.String(64), sa.ForeignKey("studies.name"), primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("label", sa.String(128), nullable=False),
    )
    op.create_table(
        "run_params",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("value_num", sa.Float),
    )
    op.create_index("ix_run_params_value_num", "run_params", ["value_num"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.UniqueConstraint("run_id", "step", "name"),
    )
    op.create_index("ix_metrics_run_id", "metrics", ["run_id"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("nfe", sa.Integer, nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("extractor", sa.String(64), nullable=False),
        sa.Column("num_samples", sa.Integer, nullable=False),
        sa.Column("sampler", sa.String(32), nullable=False),
        sa.UniqueConstraint("run_id", "step", "nfe", "metric", "sampler"),
    )
    op.create_index("ix_evaluations_run_id", "evaluations", ["run_id"])
    op.bulk_insert(sa.table("meta", sa.column("key"), sa.column("value")), [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for table in ("evaluations", "metrics", "run_params", "study_runs", "runs", "studies", "meta"):
        op.drop_table(table)
