"""The store's tables (the head of the Alembic migrations in `migrations/versions/`).

Counts are 64-bit (an EDM2 pretraining sees more than 2^31 images), timestamps are timezone-aware
UTC, and the name / label lengths are the ones `studies.spec` checks when a spec is validated.
Changing a table here needs a new migration (`migrations/README`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from studies.spec import MAX_LABEL_LENGTH, MAX_NAME_LENGTH

SCHEMA_VERSION = 4  # the `meta` table's marker: stores written before Alembic hold 1, and older ects refuse 2 and up
OWNER_LENGTH = 128
ROW_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only an INTEGER primary key


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column holds)."""
    return datetime.now(timezone.utc)


def registered_at() -> datetime:
    """Creation time to the second: listings order by it, then by label, so runs registered together sort by label."""
    return utcnow().replace(microsecond=0)


class UTCDateTime(TypeDecorator):
    """An aware UTC datetime on every backend; SQLite keeps no zone, so it stores UTC and reads back aware.

    Accepts aware datetimes and ISO 8601 strings (without an offset: UTC, e.g. `--where started_at>2026-01-01`);
    a naive datetime is refused (a bug in the caller, whose zone is unknown).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
            value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"timestamp {value!r}: expected a timezone-aware datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Study(Base):
    __tablename__ = "studies"
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    spec_yaml: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=registered_at)
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    job_address: Mapped[str | None] = mapped_column(Text, nullable=True)


class StudyRun(Base):
    """Membership: a run (content-hash id) may belong to several studies."""

    __tablename__ = "study_runs"
    study: Mapped[str] = mapped_column(ForeignKey("studies.name"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    label: Mapped[str] = mapped_column(String(MAX_LABEL_LENGTH))


class Run(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(MAX_LABEL_LENGTH))
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(BigInteger, default=0)
    node: Mapped[str | None] = mapped_column(String(128), nullable=True)
    config_json: Mapped[str] = mapped_column(Text)
    depends_on: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=registered_at)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    total_steps: Mapped[int] = mapped_column(BigInteger, default=0)
    num_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    flops_per_sample: Mapped[float | None] = mapped_column(Float, nullable=True)
    images_seen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    train_flops: Mapped[float | None] = mapped_column(Float, nullable=True)
    normalized_compute: Mapped[float | None] = mapped_column(Float, nullable=True)
    init_chain_flops: Mapped[float | None] = mapped_column(Float, nullable=True)  # the runs it starts from (0: none)
    total_flops: Mapped[float | None] = mapped_column(Float, nullable=True)  # train_flops + init_chain_flops
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(OWNER_LENGTH), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error_file: Mapped[str | None] = mapped_column(Text, nullable=True)


class RunAlias(Base):
    """A run's former id (migration 0003 re-keyed runs by what determines their weights); its run directory may
    still carry that id until a driver adopts it."""

    __tablename__ = "run_aliases"
    old_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)


class RunParam(Base):
    """The run's resolved config flattened to dotted keys, for filtering."""

    __tablename__ = "run_params"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    value_num: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class MetricRow(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    step: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("run_id", "step", "name"),)


# One evaluation: a run's checkpoint at a step, scored by a metric (extractor) on samples of a sampler with its
# parameters, a sample count and a seed; the NFE follows from the sampler and its parameters.
EVALUATION_KEY = ("run_id", "step", "metric", "extractor", "sampler", "sampler_params", "num_samples", "seed")


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    step: Mapped[int] = mapped_column(BigInteger)
    nfe: Mapped[int] = mapped_column(BigInteger)
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    extractor: Mapped[str] = mapped_column(String(64))
    num_samples: Mapped[int] = mapped_column(BigInteger)
    sampler: Mapped[str] = mapped_column(String(32), default="consistency")
    sampler_params: Mapped[str] = mapped_column(String(512), default="{}")  # canonical JSON: steps, times, ...
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    sampling_flops: Mapped[float | None] = mapped_column(Float, nullable=True)  # per image: NFE x forward FLOPs
    __table_args__ = (UniqueConstraint(*EVALUATION_KEY, name="uq_evaluations_key"),)


METRIC_KEY = ("run_id", "step", "name")
