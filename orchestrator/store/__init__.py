"""The SQL store of studies, runs, their parameters, metric time series and evaluations.

SQLite file by default (`./ect.db`, or `--db` / `ECT_DB` with any SQLAlchemy URL), WAL mode and a
busy timeout; PostgreSQL (`ect-scaling[postgres]`) for a store that many drivers share. Every write
is one transaction (on SQLite it takes the write lock first), so a failure leaves no partial rows
and two writers never interleave; metric and evaluation writes are upserts, and a run is claimed
by one driver at a time. A store opened for writing is migrated to this code's schema (Alembic); one
opened read-only is never changed. Database errors surface as one-line `StoreError`s.
"""

from __future__ import annotations

import importlib
import json
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from sqlalchemy import case, create_engine, event, func, or_, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..diskfull import disk_full_message, is_disk_full
from ..store_names import DEFAULT_DB, FINISHED, STALE_SECONDS, STATUSES, database_url
from . import migrate
from .schema import (
    EVALUATION_KEY,
    METRIC_KEY,
    OWNER_LENGTH,
    SCHEMA_VERSION,
    Base,
    Evaluation,
    Meta,
    MetricRow,
    Run,
    RunAlias,
    RunParam,
    Study,
    StudyRun,
    utcnow,
)

if TYPE_CHECKING:
    import pandas as pd

MIGRATE_LOCK, REGISTER_LOCK = 0xEC7_0001, 0xEC7_0002  # PostgreSQL advisory lock keys
BUSY_TIMEOUT_S = 30  # how long an SQLite connection waits for another's lock
MIN_PREFIX = 4  # a run id prefix shorter than this names a run only by listing it among its matches
MAX_LISTED = 10  # runs an ambiguous prefix lists

__all__ = [
    "DEFAULT_DB", "FINISHED", "SCHEMA_VERSION", "STATUSES", "Base", "Claim", "Evaluation", "Meta", "MetricRow",
    "NoStoreError", "Run", "RunAlias", "RunParam", "STALE_SECONDS", "Store", "StoreError", "Study", "StudyRun", "database_url", "flatten", "now",
    "redact",
]


class StoreError(RuntimeError):
    """A database that cannot be used, or a failed database operation; the message is one line."""


class NoStoreError(StoreError):
    """No ECT store at this URL yet (a missing SQLite file or an empty database)."""


def now() -> datetime:
    """The current time, timezone-aware UTC: what the store's timestamp columns take and return."""
    return utcnow()


@dataclass(frozen=True)
class Claim:
    """Who trains a run: its owner and the owner's last heartbeat (age on the database's clock)."""

    run_id: str
    owner: str | None
    heartbeat_at: datetime | None
    age_seconds: float | None

    def stale(self, stale_after: float) -> bool:
        """Owned, but the owner has not been heard of for more than `stale_after` seconds."""
        return self.owner is not None and (self.age_seconds is None or self.age_seconds > stale_after)


def redact(url: str) -> str:
    """A database URL safe to print: the password, if any, is masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)  # mask a password even where parsing fails


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'ect': {'q': 2}} -> {'ect.q': 2}; lists are kept as JSON values."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _reason(e: BaseException) -> str:
    """The first line of a database error's own message."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _make_engine(url: str, create: bool, foreign_keys: bool = True) -> Engine:
    """An engine for `url`; SQLite gets a busy timeout and explicit transactions (BEGIN IMMEDIATE for writes)."""
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        _ = parsed.port  # a malformed port only fails when read
    except (ArgumentError, ValueError, TypeError):
        raise StoreError(f"{redact(url)}: not a database URL (--db; expected e.g. sqlite:///ect.db)") from None
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
        if parsed.username or parsed.password or parsed.host:
            raise StoreError(f"{redact(url)}: an SQLite URL has no user, password or host (sqlite:///PATH)")
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database).expanduser().resolve()
            if not path.parent.is_dir():
                raise StoreError(f"{redact(url)}: directory {path.parent} does not exist")
            if path.is_dir():
                raise StoreError(f"{redact(url)}: cannot be used as a database (it is a directory)")
            if not create and not path.is_file():
                raise NoStoreError(f"{redact(url)}: no ECT store here (file {path} does not exist)")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver of ect-scaling[postgres]
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as e:
        hint = "; pip install 'ect-scaling[postgres]'" if backend == "postgresql" else ""
        raise StoreError(f"{redact(url)}: no database driver for it here ({type(e).__name__}: {e}{hint})") from None
    except (ArgumentError, ValueError, TypeError) as e:
        raise StoreError(f"{redact(url)}: not a usable database URL ({type(e).__name__})") from None
    if backend == "sqlite":
        _sqlite_transactions(engine, foreign_keys)
    return engine


def _sqlite_transactions(engine: Engine, foreign_keys: bool) -> None:
    """Explicit SQLite transactions: a writing one starts with BEGIN IMMEDIATE, taking the write lock up front, so
    two writers wait for each other (busy timeout) rather than one failing to upgrade its read lock mid-way."""

    @event.listens_for(engine, "connect")
    def _connect(conn: Any, _record: Any) -> None:
        conn.isolation_level = None  # the driver leaves BEGIN to us
        cur = conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ect_write") else "BEGIN")


class Store:
    """Read and write access to one database.

    `create`: make an empty database (or a missing SQLite file) a new store. `readonly`: never
    create, migrate or write; a store at an older schema revision is refused with the way to upgrade.
    """

    def __init__(self, url: str, create: bool = True, readonly: bool = False):
        self.url = url
        self.readonly = readonly
        self.migrated_from: str | None = None  # the revision this open upgraded from, if it did
        self.engine = _make_engine(url, create and not readonly)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self._open(create and not readonly)

    def _fail(self, e: BaseException, what: str = "") -> StoreError:
        """A one-line StoreError naming the database (password masked) and the driver's first line;
        a full disk says so."""
        if is_disk_full(e):
            return StoreError(disk_full_message(redact(self.url)))
        reason = _reason(e)
        return StoreError(f"{redact(self.url)}: {what} ({reason})" if what else f"{redact(self.url)}: {reason}")

    def _open(self, create: bool) -> None:
        try:
            with self.engine.connect() as conn:
                revision = migrate.current(conn)
        except migrate.SchemaError as e:
            raise StoreError(f"{redact(self.url)}: {e}") from None
        except SQLAlchemyError as e:
            raise self._fail(e, "cannot be used as a database") from None
        if revision == migrate.head():
            return
        if revision is None and not create:
            raise NoStoreError(f"{redact(self.url)}: no ECT store here")
        if revision is not None and not migrate.known(revision):
            raise StoreError(f"{redact(self.url)}: store schema revision {revision} is newer than this ect "
                             f"(which knows up to {migrate.head()}); use a newer ect-scaling")
        if self.readonly:
            raise StoreError(f"{redact(self.url)}: store schema revision {revision} is older than this ect's "
                             f"{migrate.head()}; upgrade it in place with `ect db upgrade --db URL`")
        self._migrate()

    def _migrate(self) -> None:
        """Create or upgrade the schema under the database's write lock (the revision is read again under it)."""
        engine = _make_engine(self.url, True, foreign_keys=False)  # SQLite batch migrations copy tables
        try:
            with engine.connect().execution_options(ect_write=True) as conn, conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(MIGRATE_LOCK)))
                revision = migrate.current(conn)
                if revision is None:
                    migrate.create(conn)
                elif revision != migrate.head():
                    migrate.upgrade(conn, revision)
                    self.migrated_from = revision
                if conn.dialect.name == "sqlite":
                    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if problems:
                        raise StoreError(f"{redact(self.url)}: migration would break references: {problems[:3]}")
            if revision is None:
                self._wal(engine)
        except migrate.SchemaError as e:
            raise StoreError(f"{redact(self.url)}: {e}") from None
        except (SQLAlchemyError, sqlite3.Error) as e:
            raise self._fail(e, "cannot migrate the store") from None
        finally:
            engine.dispose()

    @staticmethod
    def _wal(engine: Engine) -> None:
        """SQLite stores use write-ahead logging (a persistent property of the file, set once at creation).
        SQLite refuses the switch at once, without waiting its busy timeout, while another connection holds the
        write lock: a second driver opening the new store at the same moment reads its revision under that lock.
        So the switch is tried again until the lock is free, for as long as the busy timeout."""
        if engine.dialect.name != "sqlite":
            return
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        raw = engine.raw_connection()
        try:
            while True:
                try:
                    raw.driver_connection.execute("PRAGMA journal_mode=WAL")
                    return
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                time.sleep(0.05)
        finally:
            raw.close()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error; database errors become StoreError.

        `write`: the transaction writes (on SQLite it takes the write lock at BEGIN, so writers never deadlock).
        """
        if write and self.readonly:
            raise StoreError(f"{redact(self.url)}: opened read-only")
        try:
            with self.Session() as s:
                s.connection(execution_options={"ect_write": write})
                try:
                    yield s
                    s.commit()
                except BaseException:
                    s.rollback()
                    raise
        except SQLAlchemyError as e:
            raise self._fail(e) from None

    def _insert(self) -> Any:
        """The dialect's INSERT with ON CONFLICT (SQLite and PostgreSQL; imported here, so that reading an SQLite
        store does not load the PostgreSQL dialect)."""
        module = {"sqlite": "sqlalchemy.dialects.sqlite", "postgresql": "sqlalchemy.dialects.postgresql"}
        return importlib.import_module(module[self.engine.dialect.name]).insert

    def _serialize(self, s: Session) -> None:
        """Make this check-then-insert transaction the only one of its kind until it ends (two drivers registering
        overlapping studies at once). SQLite's BEGIN IMMEDIATE already does; PostgreSQL takes an advisory lock."""
        if self.engine.dialect.name == "postgresql":
            s.execute(select(func.pg_advisory_xact_lock(REGISTER_LOCK)))

    def _clock(self, s: Session) -> datetime:
        """Now on the database's clock (PostgreSQL's, so drivers on several hosts agree; SQLite is one host)."""
        if self.engine.dialect.name == "postgresql":
            return s.scalar(select(func.now()))
        return utcnow()

    # ------------------------------------------------------------------ studies and runs

    def register_study(self, spec: Any, spec_yaml: str, runs: list[Any]) -> list[str]:
        """Insert the study and its runs (existing runs are shared, not duplicated); returns new run ids."""
        new = []
        with self.session(write=True) as s:
            self._serialize(s)
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
            return self._study(s, name)

    def studies(self) -> list[Study]:
        with self.session() as s:
            return list(s.scalars(select(Study).order_by(Study.created_at)))

    def _study(self, s: Session, name: str) -> Study:
        study = s.get(Study, name)
        if study is None:
            raise StoreError(f"no study named {name!r} in {redact(self.url)} (see `ect study list`)")
        return study

    def set_study_status(self, name: str, status: str) -> None:
        with self.session(write=True) as s:
            self._study(s, name).status = status

    def set_study_job(self, name: str, job_id: str | None, job_address: str | None) -> None:
        """Record the Ray Job that drives a submitted study (None, None: no job)."""
        with self.session(write=True) as s:
            study = self._study(s, name)
            study.job_id, study.job_address = job_id, job_address

    def run(self, run_id: str) -> Run:
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is not None:
                return run
            matches = list(s.scalars(select(Run).where(Run.run_id.startswith(run_id, autoescape=True))
                                     .order_by(Run.run_id).limit(MAX_LISTED + 1))) if run_id else []
            if len(matches) == 1 and len(run_id) >= MIN_PREFIX:
                return matches[0]
            if len(matches) > 1:
                n = s.scalar(select(func.count()).select_from(Run).where(Run.run_id.startswith(run_id, autoescape=True)))
                listed = ", ".join(f"{m.run_id} ({m.label})" for m in matches[:MAX_LISTED])
                raise StoreError(f"prefix {run_id!r} matches {n} runs: {listed}{', ...' if n > MAX_LISTED else ''}")
            hint = (f" (a prefix needs at least {MIN_PREFIX} characters; it is the start of {matches[0].run_id})"
                    if matches else "")
            raise StoreError(f"no run with id {run_id!r} in {redact(self.url)}{hint}")

    def former_ids(self, run_id: str) -> list[str]:
        """The ids a run had before the store re-keyed runs by what determines their weights (migration 0003)."""
        with self.session() as s:
            return list(s.scalars(select(RunAlias.old_id).where(RunAlias.run_id == run_id).order_by(RunAlias.old_id)))

    def cancel_study(self, name: str) -> int:
        """Mark the study's pending and running runs cancelled; returns how many."""
        with self.session(write=True) as s:
            runs = s.scalars(select(Run).join(StudyRun, StudyRun.run_id == Run.run_id).where(
                StudyRun.study == name, Run.status.in_(("pending", "running")))).all()
            for run in runs:
                run.status = "cancelled"
            self._study(s, name).status = "cancelled"
            return len(runs)

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.session(write=True) as s:
            run = s.get(Run, run_id)
            if run is None:
                raise StoreError(f"no run with id {run_id!r} in {redact(self.url)}")
            for k, v in fields.items():
                setattr(run, k, v)
            if "train_flops" in fields:
                self._account(s, run)
            if fields.get("flops_per_sample") is not None:  # evaluations written before the count was known
                s.execute(update(Evaluation).where(Evaluation.run_id == run_id, Evaluation.sampling_flops.is_(None))
                          .values(sampling_flops=Evaluation.nfe * fields["flops_per_sample"]))

    @classmethod
    def _account(cls, s: Session, run: Run, done: frozenset[str] = frozenset()) -> None:
        """A run's init-chain and total training FLOPs from its own and its ancestors' (None where one lacks them),
        and again for the runs that start from it."""
        chain, parent, seen = 0.0, run.depends_on, {run.run_id}
        while parent is not None and chain is not None and parent not in seen:
            seen.add(parent)
            up = s.get(Run, parent)
            chain = None if up is None or up.train_flops is None else chain + up.train_flops
            parent = up.depends_on if up is not None else None
        run.init_chain_flops = chain
        run.total_flops = None if chain is None or run.train_flops is None else chain + run.train_flops
        s.flush()
        for child in s.scalars(select(Run).where(Run.depends_on == run.run_id)).all():
            if child.run_id not in done:
                cls._account(s, child, done | {run.run_id})

    def add_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        """Upsert one step's training metrics (a repeated write of the same step replaces the values)."""
        rows = [{"run_id": run_id, "step": step, "name": name, "value": float(value)} for name, value in values.items()]
        with self.session(write=True) as s:
            done = s.execute(update(Run).where(Run.run_id == run_id)
                             .values(step=case((Run.step < step, step), else_=Run.step)))
            if done.rowcount != 1:
                raise StoreError(f"no run with id {run_id!r} in {redact(self.url)}")
            if rows:
                stmt = self._insert()(MetricRow).values(rows)
                s.execute(stmt.on_conflict_do_update(index_elements=list(METRIC_KEY),
                                                     set_={"value": stmt.excluded.value}))

    def add_evaluation(self, run_id: str, **row: Any) -> None:
        """Upsert one evaluation, keyed by EVALUATION_KEY (run, step, metric, extractor, sampler and its parameters,
        sample count, seed)."""
        # without its sampler's parameters an evaluation is known by its NFE, so that two NFEs never share a key
        values = {"sampler": "consistency", "sampler_params": json.dumps({"nfe": row.get("nfe")}), "seed": 0, **row,
                  "run_id": run_id}
        with self.session(write=True) as s:
            per_sample = s.scalar(select(Run.flops_per_sample).where(Run.run_id == run_id))
            if "sampling_flops" not in row and per_sample is not None and row.get("nfe") is not None:
                values["sampling_flops"] = float(row["nfe"]) * per_sample
            stmt = self._insert()(Evaluation).values(values)
            s.execute(stmt.on_conflict_do_update(
                index_elements=list(EVALUATION_KEY),
                set_={k: stmt.excluded[k] for k in values if k not in EVALUATION_KEY}))

    # ------------------------------------------------------------------ run claims

    def claim_run(self, run_id: str, owner: str, stale_after: float) -> bool:
        """Take the run for `owner` if it is unowned, already `owner`'s, or its owner's heartbeat is older than
        `stale_after` seconds; one conditional UPDATE, so of two drivers racing for a run exactly one wins."""
        if not owner or len(owner) > OWNER_LENGTH:
            raise ValueError(f"claim owner {owner!r}: expected 1 to {OWNER_LENGTH} characters")
        with self.session(write=True) as s:
            t = self._clock(s)
            free = or_(Run.owner.is_(None), Run.owner == owner, Run.heartbeat_at.is_(None),
                       Run.heartbeat_at < t - timedelta(seconds=stale_after))
            done = s.execute(update(Run).where(Run.run_id == run_id, free).values(owner=owner, heartbeat_at=t))
            return done.rowcount == 1

    def heartbeat(self, owner: str, run_ids: list[str]) -> set[str]:
        """Refresh `owner`'s heartbeat on these runs; returns the ids it still owns (a missing one was taken over)."""
        if not run_ids:
            return set()
        with self.session(write=True) as s:
            t = self._clock(s)
            held = s.execute(update(Run).where(Run.run_id.in_(run_ids), Run.owner == owner)
                             .values(heartbeat_at=t).returning(Run.run_id))
            return set(held.scalars())

    def release_run(self, run_id: str, owner: str) -> bool:
        """Give up `owner`'s claim on a run (no-op, False, if someone else owns it now)."""
        with self.session(write=True) as s:
            done = s.execute(update(Run).where(Run.run_id == run_id, Run.owner == owner)
                             .values(owner=None, heartbeat_at=None))
            return done.rowcount == 1

    def claims(self, run_ids: list[str]) -> dict[str, Claim]:
        """Owner and heartbeat age (seconds, on the database's clock) of each run, for status displays."""
        with self.session() as s:
            t = self._clock(s)
            rows = s.execute(select(Run.run_id, Run.owner, Run.heartbeat_at).where(Run.run_id.in_(run_ids))).all()
        return {rid: Claim(rid, owner, beat, (t - beat).total_seconds() if beat is not None else None)
                for rid, owner, beat in rows}

    # ------------------------------------------------------------------ queries as DataFrames

    def runs_frame(self, study: str | None = None) -> pd.DataFrame:
        import pandas as pd

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
        import pandas as pd

        with self.session() as s:
            rows = s.execute(select(RunParam).where(RunParam.run_id.in_(run_ids))).scalars().all()
        wide: dict[str, dict[str, Any]] = {}
        for p in rows:
            wide.setdefault(p.run_id, {})[p.key] = json.loads(p.value)
        return pd.DataFrame.from_dict(wide, orient="index")

    def evaluations_frame(self, study: str | None = None) -> pd.DataFrame:
        import pandas as pd

        with self.session() as s:
            q = select(Evaluation, StudyRun.study, StudyRun.label).join(StudyRun, StudyRun.run_id == Evaluation.run_id)
            if study is not None:
                q = q.where(StudyRun.study == study)
            rows = s.execute(q.order_by(Evaluation.id)).all()  # in the order measured: training's own rows first
        cols = [c.name for c in Evaluation.__table__.columns if c.name != "id"]
        return pd.DataFrame([{**{c: getattr(e, c) for c in cols}, "study": st, "label": lab} for e, st, lab in rows],
                            columns=cols + ["study", "label"])

    def metrics_frame(self, run_id: str) -> pd.DataFrame:
        import pandas as pd

        with self.session() as s:
            rows = s.scalars(select(MetricRow).where(MetricRow.run_id == run_id).order_by(MetricRow.step)).all()
        long = pd.DataFrame([{"step": m.step, "name": m.name, "value": m.value} for m in rows],
                            columns=["step", "name", "value"])
        return long.pivot_table(index="step", columns="name", values="value").reset_index() if len(long) else long
