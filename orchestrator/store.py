"""The SQL store of studies, runs, their parameters, metric time series and evaluations.

SQLite file by default (`./ect.db`, or `--db` / `ECT_DB` with any SQLAlchemy URL), WAL mode and a
busy timeout. Only the driver process writes; Ray workers never open the database. Every write is
one transaction, so a failure leaves no partial rows. SQL is built only through SQLAlchemy.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .diskfull import disk_full_message, is_disk_full

SCHEMA_VERSION = 1
DEFAULT_DB = "sqlite:///ect.db"
STATUSES = ("pending", "running", "completed", "failed", "diverged", "cancelled")
FINISHED = ("completed", "diverged")


class StoreError(RuntimeError):
    """A database that cannot be used; the message is one line."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Study(Base):
    __tablename__ = "studies"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    spec_yaml: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[str] = mapped_column(String(32), default=now)


class StudyRun(Base):
    """Membership: a run (content-hash id) may belong to several studies."""

    __tablename__ = "study_runs"
    study: Mapped[str] = mapped_column(ForeignKey("studies.name"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    label: Mapped[str] = mapped_column(String(128))


class Run(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    node: Mapped[str | None] = mapped_column(String(128), nullable=True)
    config_json: Mapped[str] = mapped_column(Text)
    depends_on: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[str] = mapped_column(String(32), default=now)
    started_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    num_params: Mapped[int | None] = mapped_column(Integer, nullable=True)
    flops_per_sample: Mapped[float | None] = mapped_column(Float, nullable=True)
    images_seen: Mapped[int | None] = mapped_column(Integer, nullable=True)
    train_flops: Mapped[float | None] = mapped_column(Float, nullable=True)
    normalized_compute: Mapped[float | None] = mapped_column(Float, nullable=True)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class RunParam(Base):
    """The run's resolved config flattened to dotted keys, for filtering."""

    __tablename__ = "run_params"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    value_num: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class MetricRow(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("run_id", "step", "name"),)


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    nfe: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    extractor: Mapped[str] = mapped_column(String(64))
    num_samples: Mapped[int] = mapped_column(Integer)
    sampler: Mapped[str] = mapped_column(String(32), default="consistency")
    __table_args__ = (UniqueConstraint("run_id", "step", "nfe", "metric", "sampler"),)


def redact(url: str) -> str:
    """A database URL safe to print: the password, if any, is masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)  # mask a password even where parsing fails


def database_url(db: str | None) -> str:
    """`--db` value, else $ECT_DB, else ./ect.db. A bare path means an SQLite file."""
    value = db or os.environ.get("ECT_DB") or DEFAULT_DB
    return value if "://" in value else f"sqlite:///{value}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'ect': {'q': 2}} -> {'ect.q': 2}; lists are kept as JSON values."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


class Store:
    """Read and write access to one database."""

    def __init__(self, url: str, create: bool = True):
        self.url = url
        self.engine = self._engine(url, create)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self._check_schema(create)

    @staticmethod
    def _engine(url: str, create: bool) -> Engine:
        try:
            parsed = make_url(url)
            backend = parsed.get_backend_name()
            _ = parsed.port  # a malformed port only fails when read
        except (ArgumentError, ValueError, TypeError):
            raise StoreError(f"{redact(url)}: not a database URL (--db; expected e.g. sqlite:///ect.db)") from None
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
            if parsed.username or parsed.password or parsed.host:
                raise StoreError(f"{redact(url)}: an SQLite URL has no user, password or host (sqlite:///PATH)")
            if parsed.database and parsed.database != ":memory:":
                path = Path(parsed.database).expanduser().resolve()
                if not path.parent.is_dir():
                    raise StoreError(f"{redact(url)}: directory {path.parent} does not exist")
                if path.is_dir():
                    raise StoreError(f"{redact(url)}: cannot be used as a database (it is a directory)")
                if not create and not path.is_file():
                    raise StoreError(f"{redact(url)}: no ECT store here (file {path} does not exist)")
        try:
            engine = create_engine(url, **kwargs)
        except (NoSuchModuleError, ImportError) as e:
            raise StoreError(f"{redact(url)}: no database driver for it here ({type(e).__name__}: {e})") from None
        except (ArgumentError, ValueError, TypeError) as e:
            raise StoreError(f"{redact(url)}: not a usable database URL ({type(e).__name__})") from None
        if backend == "sqlite":

            @event.listens_for(engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

        return engine

    def _check_schema(self, create: bool) -> None:
        try:
            with self.engine.begin() as conn:
                tables = set(self.engine.dialect.get_table_names(conn))
                if "meta" not in tables:
                    if tables:
                        raise StoreError(f"{redact(self.url)}: holds tables that are not an ECT store")
                    if not create:
                        raise StoreError(f"{redact(self.url)}: no ECT store here")
                    Base.metadata.create_all(conn)
                    conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                    created = True
                else:
                    created = False
                    row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
        except (DatabaseError, OperationalError) as e:
            reason = str(e.orig).splitlines()[0] if getattr(e, "orig", None) else type(e).__name__
            raise StoreError(f"{redact(self.url)}: cannot be used as a database ({reason})") from None
        if created:
            self._wal()
            return
        if row != str(SCHEMA_VERSION):
            raise StoreError(
                f"{redact(self.url)}: store schema version {row}, this ect expects {SCHEMA_VERSION}; "
                "export with the ect that wrote it or start a new --db"
            )

    def _wal(self) -> None:
        """SQLite stores use write-ahead logging (a persistent property of the file, set once at creation)."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error; a full disk is a one-line StoreError."""
        try:
            with self.Session() as s, s.begin():
                yield s
        except OperationalError as e:
            if is_disk_full(e):
                raise StoreError(disk_full_message(redact(self.url))) from None
            raise

    # ------------------------------------------------------------------ studies and runs

    def register_study(self, spec: Any, spec_yaml: str, runs: list[Any]) -> list[str]:
        """Insert the study and its runs (existing runs are shared, not duplicated); returns new run ids."""
        new = []
        with self.session() as s:
            study = s.get(Study, spec.name)
            if study is None:
                s.add(Study(name=spec.name, kind=spec.kind, description=spec.description, spec_yaml=spec_yaml))
            elif study.spec_yaml != spec_yaml:
                study.spec_yaml, study.kind, study.description = spec_yaml, spec.kind, spec.description
            for r in runs:
                if s.get(Run, r.run_id) is None:
                    cfg = json.loads(r.config.model_dump_json())
                    s.add(Run(run_id=r.run_id, label=r.label, role=r.role, config_json=json.dumps(cfg),
                              depends_on=r.depends_on, total_steps=r.config.schedule.iterations))
                    s.flush()
                    for key, value in flatten(cfg).items():
                        num = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
                        s.add(RunParam(run_id=r.run_id, key=key, value=json.dumps(value), value_num=num))
                    new.append(r.run_id)
                if s.get(StudyRun, (spec.name, r.run_id)) is None:
                    s.add(StudyRun(study=spec.name, run_id=r.run_id, label=r.label))
        return new

    def study(self, name: str) -> Study:
        with self.session() as s:
            study = s.get(Study, name)
        if study is None:
            raise StoreError(f"no study named {name!r} in {redact(self.url)} (see `ect study list`)")
        return study

    def studies(self) -> list[Study]:
        with self.session() as s:
            return list(s.scalars(select(Study).order_by(Study.created_at)))

    def set_study_status(self, name: str, status: str) -> None:
        with self.session() as s:
            s.get(Study, name).status = status

    def run(self, run_id: str) -> Run:
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                matches = list(s.scalars(select(Run).where(Run.run_id.startswith(run_id, autoescape=True)))) if len(run_id) >= 4 else []
                if len(matches) == 1:
                    return matches[0]
                raise StoreError(f"no run with id {run_id!r} in {redact(self.url)}")
            return run

    def cancel_study(self, name: str) -> int:
        """Mark the study's pending and running runs cancelled; returns how many."""
        with self.session() as s:
            runs = s.scalars(select(Run).join(StudyRun, StudyRun.run_id == Run.run_id).where(
                StudyRun.study == name, Run.status.in_(("pending", "running")))).all()
            for run in runs:
                run.status = "cancelled"
            s.get(Study, name).status = "cancelled"
            return len(runs)

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            for k, v in fields.items():
                setattr(run, k, v)

    def add_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        with self.session() as s:
            for name, value in values.items():
                existing = s.scalars(select(MetricRow).where(
                    MetricRow.run_id == run_id, MetricRow.step == step, MetricRow.name == name)).first()
                if existing is None:
                    s.add(MetricRow(run_id=run_id, step=step, name=name, value=float(value)))
                else:
                    existing.value = float(value)
            run = s.get(Run, run_id)
            run.step = max(run.step or 0, step)

    def add_evaluation(self, run_id: str, **row: Any) -> None:
        with self.session() as s:
            existing = s.scalars(select(Evaluation).where(
                Evaluation.run_id == run_id, Evaluation.step == row["step"], Evaluation.nfe == row["nfe"],
                Evaluation.metric == row["metric"], Evaluation.sampler == row.get("sampler", "consistency"))).first()
            if existing is None:
                s.add(Evaluation(run_id=run_id, **row))
            else:
                for k, v in row.items():
                    setattr(existing, k, v)

    # ------------------------------------------------------------------ queries as DataFrames

    def runs_frame(self, study: str | None = None) -> pd.DataFrame:
        with self.session() as s:
            q = select(Run, StudyRun.study, StudyRun.label).join(StudyRun, StudyRun.run_id == Run.run_id)
            if study is not None:
                q = q.where(StudyRun.study == study)
            rows = s.execute(q.order_by(Run.created_at, Run.label)).all()
        cols = [c.name for c in Run.__table__.columns if c.name != "config_json"]
        data = [{**{c: getattr(r, c) for c in cols}, "study": st, "label": lab} for r, st, lab in rows]
        return pd.DataFrame(data, columns=cols + ["study"])

    def params_frame(self, run_ids: list[str]) -> pd.DataFrame:
        """Wide table: one row per run, one column per flattened config key."""
        with self.session() as s:
            rows = s.execute(select(RunParam).where(RunParam.run_id.in_(run_ids))).scalars().all()
        wide: dict[str, dict[str, Any]] = {}
        for p in rows:
            wide.setdefault(p.run_id, {})[p.key] = json.loads(p.value)
        return pd.DataFrame.from_dict(wide, orient="index")

    def evaluations_frame(self, study: str | None = None) -> pd.DataFrame:
        with self.session() as s:
            q = select(Evaluation, StudyRun.study, StudyRun.label).join(StudyRun, StudyRun.run_id == Evaluation.run_id)
            if study is not None:
                q = q.where(StudyRun.study == study)
            rows = s.execute(q).all()
        cols = [c.name for c in Evaluation.__table__.columns if c.name != "id"]
        return pd.DataFrame([{**{c: getattr(e, c) for c in cols}, "study": st, "label": lab} for e, st, lab in rows],
                            columns=cols + ["study", "label"])

    def metrics_frame(self, run_id: str) -> pd.DataFrame:
        with self.session() as s:
            rows = s.scalars(select(MetricRow).where(MetricRow.run_id == run_id).order_by(MetricRow.step)).all()
        long = pd.DataFrame([{"step": m.step, "name": m.name, "value": m.value} for m in rows],
                            columns=["step", "name", "value"])
        return long.pivot_table(index="step", columns="name", values="value").reset_index() if len(long) else long
