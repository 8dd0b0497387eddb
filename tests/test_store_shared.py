"""A store that many drivers share, on SQLite and a real PostgreSQL server: Alembic migrations (today's
stores upgrade in place, newer ones are refused, read-only opens change nothing), paper-scale values,
atomic run claims, idempotent metric / evaluation writes under racing writers, one-line errors."""

import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, create_engine, inspect, table, text
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import NoStoreError, Store, StoreError, migrate, now
from orchestrator.store.schema import Base
from studies.spec import MAX_LABEL_LENGTH, StudySpec, dump_spec, expand, load_study

runner = CliRunner()
FIXTURE = Path(__file__).parent / "data" / "store_schema1.sql"  # written by the store code before migrations
BASE = {
    "data": {"name": "swissroll", "num_samples": 500},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 10},
}


def make_spec(name: str = "s", n: int = 3) -> StudySpec:
    return StudySpec.model_validate({"name": name, "base": BASE, "seeds": list(range(n))})


def registered(url: str, n: int = 3) -> tuple[Store, list[str]]:
    store = Store(url)
    spec = make_spec(n=n)
    runs = expand(spec)
    store.register_study(spec, dump_spec(spec), runs)
    return store, [r.run_id for r in runs]


def upgrade_to(url: str, revision: str) -> None:
    """Apply the migrations up to `revision` only (an older store, as the code of that time left it)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), revision)
    engine.dispose()


def todays_store(url: str) -> None:
    """A store as the code before migrations wrote it: the fixture's schema and rows, no alembic_version."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.executescript(FIXTURE.read_text())
        con.close()
        return
    upgrade_to(url, "0001")
    source = sqlite3.connect(":memory:")
    source.executescript(FIXTURE.read_text())
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        for name in ("studies", "runs", "study_runs", "run_params", "metrics", "evaluations"):
            cur = source.execute(f"SELECT * FROM {name}")  # noqa: S608 - fixed table names
            cols = [d[0] for d in cur.description]
            target = table(name, *(column(c) for c in cols))
            conn.execute(target.insert(), [dict(zip(cols, row)) for row in cur])
        for name in ("metrics", "evaluations"):  # rows copied with their ids: move the sequences past them
            conn.execute(text(f"SELECT setval('{name}_id_seq', (SELECT max(id) FROM {name}))"))
    engine.dispose()
    source.close()


def schema_of(url: str) -> dict:
    """Tables with their columns (name, type, nullability), keys, unique constraints and indexes."""
    engine = create_engine(url)
    insp = inspect(engine)
    out = {}
    for t in insp.get_table_names():
        if t == "alembic_version":
            continue
        out[t] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
            "pk": insp.get_pk_constraint(t)["constrained_columns"],
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(t)),
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(t)),
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"]) for f in insp.get_foreign_keys(t)),
        }
    engine.dispose()
    return out


# --------------------------------------------------------------------------- migrations


def test_baseline_revision_is_the_schema_before_migrations(tmp_path):
    todays_store(f"sqlite:///{tmp_path / 'today.db'}")
    upgrade_to(f"sqlite:///{tmp_path / 'baseline.db'}", "0001")
    assert schema_of(f"sqlite:///{tmp_path / 'baseline.db'}") == schema_of(f"sqlite:///{tmp_path / 'today.db'}")


def test_migrations_end_at_the_models(store_url):
    """Upgrading a pre-migration store reaches exactly schema.py's tables (what a new store gets)."""
    todays_store(store_url)
    Store(store_url, create=False)
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_todays_store_upgrades_in_place_and_keeps_its_rows(store_url):
    todays_store(store_url)
    with pytest.raises(StoreError, match="revision 0001 is older .* `ect db upgrade"):
        Store(store_url, create=False, readonly=True)
    store = Store(store_url, create=False)
    assert store.migrated_from == "0001"
    runs = store.runs_frame("legacy").set_index("status")
    done = store.run(runs.loc["completed", "run_id"])
    assert done.started_at == datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)
    assert (done.finished_at - done.started_at).total_seconds() == 330
    assert done.created_at.tzinfo is not None and done.images_seen == 320 and done.owner is None
    assert store.metrics_frame(done.run_id)["loss"].tolist() == [0.5, 0.25]
    assert store.evaluations_frame("legacy")["value"].tolist() == [3.5]
    store.add_metrics(done.run_id, 2**40, {"loss": 0.125})  # new rows after the upgrade (sequences and all)
    store.add_evaluation(done.run_id, step=2**40, nfe=2, metric="fd", value=1.0, extractor="raw", num_samples=100)
    assert len(store.metrics_frame(done.run_id)) == 3 and len(store.evaluations_frame("legacy")) == 2
    res = runner.invoke(app, ["db", "upgrade", "--db", store_url])
    assert res.exit_code == 0 and f"already at revision {migrate.head()}" in res.stdout


def test_db_upgrade_command_and_readonly_opens_change_nothing(tmp_path):
    db = tmp_path / "old.db"
    todays_store(f"sqlite:///{db}")
    before = db.read_bytes()
    for cmd in (["runs", "list"], ["study", "list"], ["study", "status", "legacy"]):
        res = runner.invoke(app, [*cmd, "--db", str(db)])
        assert res.exit_code == 1 and "ect db upgrade" in res.stderr and res.stderr.strip().count("\n") == 0
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]
    res = runner.invoke(app, ["db", "upgrade", "--db", str(db)])
    assert res.exit_code == 0 and f"upgraded from revision 0001 to {migrate.head()}" in res.stdout
    res = runner.invoke(app, ["study", "status", "legacy", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output


def test_a_store_newer_than_the_code_is_refused(store_url):
    Store(store_url)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="revision 0099 is newer than this ect"):
            Store(store_url, create=False, readonly=readonly)
    res = runner.invoke(app, ["runs", "list", "--db", store_url])
    assert res.exit_code == 1 and "newer than this ect" in res.stderr and res.stderr.strip().count("\n") == 0


def test_two_drivers_opening_a_new_store_at_once(store_url):
    """Both create-or-migrate under the database's write lock: one creates, the other finds it made."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def open_it() -> None:
        barrier.wait()
        try:
            Store(store_url)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    Store(store_url, create=False, readonly=True)


def test_the_switch_to_wal_waits_for_a_driver_holding_the_write_lock(tmp_path, monkeypatch):
    """SQLite refuses a switch to WAL at once, without its busy timeout, while another connection holds the write
    lock, as a second driver opening the same new store does for a moment. Seen under load: the creating driver
    failed with 'database is locked'. The switch waits for the lock instead, and the store ends up in WAL."""
    import orchestrator.store as store_module

    class Clock:  # orchestrator.store's `time`, noting when the switch first waits
        monotonic = staticmethod(time.monotonic)
        waited = threading.Event()

        @staticmethod
        def sleep(seconds: float) -> None:
            Clock.waited.set()
            time.sleep(seconds)

    monkeypatch.setattr(store_module, "time", Clock)
    path = tmp_path / "ect.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")  # a database in rollback-journal mode, as a new store is before the switch
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}")
    errors: list[BaseException] = []

    def switch() -> None:
        try:
            Store._wal(engine)
        except BaseException as e:  # reported below
            errors.append(e)

    worker = threading.Thread(target=switch)
    worker.start()
    deadline = time.monotonic() + 120
    while not (Clock.waited.is_set() or errors) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Clock.waited.is_set() and not errors, errors  # it met the lock and waits rather than failing
    holder.execute("ROLLBACK")
    worker.join(120)
    holder.close()
    engine.dispose()
    assert not worker.is_alive() and not errors, errors
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --------------------------------------------------------------------------- values, plan, spec limits


def test_paper_scale_counts_and_aware_timestamps(store_url):
    store, ids = registered(store_url, n=1)
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    store.update_run(ids[0], images_seen=2**41, num_params=3 * 2**31, attempts=2**33, started_at=started,
                     finished_at="2026-01-02T04:00:00+00:00")
    store.add_metrics(ids[0], 2**40, {"loss": 1.0})
    plain = store_url.replace("postgresql+psycopg://", "postgresql://")  # plain postgresql:// means psycopg 3
    run = Store(plain, readonly=True).run(ids[0])
    assert (run.images_seen, run.num_params, run.attempts, run.step) == (2**41, 3 * 2**31, 2**33, 2**40)
    assert run.started_at == started and run.started_at.tzinfo == timezone.utc
    assert run.finished_at == datetime(2026, 1, 2, 4, tzinfo=timezone.utc)
    assert abs((now() - run.created_at).total_seconds()) < 3600
    with pytest.raises(StoreError, match="timezone-aware"):
        store.update_run(ids[0], started_at=datetime(2026, 1, 1))


def test_job_and_error_file_columns(store_url):
    store, (rid,) = registered(store_url, n=1)
    store.set_study_job("s", "raysubmit_" + "x" * 100, "http://127.0.0.1:8265")
    store.update_run(rid, status="failed", error="ValueError: boom", error_file="/shared/ect/runs/x/error.txt")
    study, run = store.study("s"), store.run(rid)
    assert (study.job_id, study.job_address) == ("raysubmit_" + "x" * 100, "http://127.0.0.1:8265")
    assert run.error_file == "/shared/ect/runs/x/error.txt"
    for write in (lambda: store.set_study_status("nope", "running"), lambda: store.set_study_job("nope", "j", "a"),
                  lambda: store.cancel_study("nope")):
        with pytest.raises(StoreError, match="no study named 'nope'"):
            write()
    with pytest.raises(StoreError, match="opened read-only"):
        Store(store_url, readonly=True).update_run(rid, status="running")


def test_plan_on_an_empty_database_writes_nothing(store_url, tmp_path):
    if store_url.startswith("sqlite"):
        Path(store_url.removeprefix("sqlite:///")).write_bytes(b"")  # an empty SQLite file is an empty database
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "base": BASE, "seeds": [0, 1]}))
    res = runner.invoke(app, ["study", "plan", str(spec), "--db", store_url, "--json"])
    assert res.exit_code == 0, res.output
    assert [r["status"] for r in yaml.safe_load(res.stdout)["runs"]] == ["new", "new"]
    with pytest.raises(NoStoreError):
        Store(store_url, create=False)
    assert inspect(create_engine(store_url)).get_table_names() == []


def test_run_labels_longer_than_the_store_holds_are_refused_when_validating(tmp_path):
    grid = {"precond.sigma_data": [0.123456789012345], "ect.P_mean": [-1.12345678901234], "network.hidden": [16]}
    spec = {"name": "long", "base": BASE, "variants": [{"label": "v" * 64}], "grid": grid}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert [len(r.label) for r in expand(load_study(path))] == [MAX_LABEL_LENGTH]  # the longest the store holds
    path.write_text(yaml.safe_dump({**spec, "seeds": [0, 1]}))  # "_seed0" makes it 6 longer
    res = runner.invoke(app, ["study", "validate", str(path)])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().count("\n") == 0 and str(path) in res.stderr
    assert "_seed0' has 134 characters" in res.stderr and f"at most {MAX_LABEL_LENGTH}" in res.stderr


# --------------------------------------------------------------------------- run claims


def test_claims_follow_owner_and_heartbeat(store_url):
    store, (a, b, c) = registered(store_url)
    assert store.claim_run(a, "driver-1", stale_after=60)
    assert not store.claim_run(a, "driver-2", stale_after=60)  # a live owner keeps it
    assert store.claim_run(a, "driver-1", stale_after=60)  # its owner may claim it again
    assert store.claim_run(b, "driver-2", stale_after=60)
    assert store.heartbeat("driver-1", [a, b, c]) == {a}
    claims = store.claims([a, b, c])
    assert (claims[a].owner, claims[b].owner, claims[c].owner) == ("driver-1", "driver-2", None)
    assert 0 <= claims[a].age_seconds < 60 and not claims[a].stale(60) and claims[c].age_seconds is None
    store.update_run(b, heartbeat_at=now() - timedelta(minutes=5))  # driver-2 went silent
    assert store.claims([b])[b].stale(60)
    assert store.claim_run(b, "driver-1", stale_after=60)  # and its run is taken over
    assert store.heartbeat("driver-2", [b]) == set()  # which driver-2 learns from its next heartbeat
    assert not store.release_run(b, "driver-2") and store.release_run(b, "driver-1")
    assert store.claims([b])[b].owner is None and store.claim_run(b, "driver-2", stale_after=60)
    assert not store.claim_run("nope", "driver-1", stale_after=60)
    with pytest.raises(ValueError, match="claim owner"):
        store.claim_run(a, "x" * 129, stale_after=60)


def race(url: str, work, n: int = 2) -> list:
    """Run `work(store, i)` in n threads at once, each with its own Store (engine, connections); their results."""
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def go(i: int) -> None:
        store = Store(url, create=False)
        barrier.wait()
        try:
            results[i] = work(store, i)
        except BaseException as e:  # reported below
            errors.append(e)
        finally:
            store.engine.dispose()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_two_drivers_racing_for_the_same_runs_never_both_win(store_url):
    _, ids = registered(store_url, n=12)
    won = race(store_url, lambda store, i: [r for r in ids if store.claim_run(r, f"driver-{i}", stale_after=60)])
    assert sorted(won[0] + won[1]) == sorted(ids)  # every run has exactly one winner
    owners = Store(store_url, readonly=True).claims(ids)
    assert all(owners[r].owner == "driver-0" for r in won[0]) and all(owners[r].owner == "driver-1" for r in won[1])


def test_two_takeovers_of_a_stale_run_have_one_winner(store_url):
    store, ids = registered(store_url, n=6)
    for r in ids:
        store.claim_run(r, "dead-driver", stale_after=60)
        store.update_run(r, heartbeat_at=now() - timedelta(hours=1))
    won = race(store_url, lambda s, i: [r for r in ids if s.claim_run(r, f"driver-{i}", stale_after=60)])
    assert sorted(won[0] + won[1]) == sorted(ids)


# --------------------------------------------------------------------------- idempotent writes


def test_two_writers_of_the_same_run_and_steps_neither_crash_nor_duplicate(store_url):
    store, (rid,) = registered(store_url, n=1)

    def write(s: Store, i: int) -> None:
        for step in range(1, 31):
            s.add_metrics(rid, step, {"loss": float(i), "grad_norm": 1.0})
            s.add_evaluation(rid, step=step, nfe=1, metric="fd", value=float(i), extractor="raw", num_samples=10)

    race(store_url, write)
    metrics = store.metrics_frame(rid)
    assert metrics["step"].tolist() == list(range(1, 31)) and set(metrics["loss"]) <= {0.0, 1.0}
    evals = store.evaluations_frame()
    assert len(evals) == 30 and sorted(evals["step"]) == list(range(1, 31)) and set(evals["value"]) <= {0.0, 1.0}
    assert store.run(rid).step == 30
    store.add_metrics(rid, 5, {"loss": 7.0})  # a rewrite replaces; the run's step never goes back
    assert store.metrics_frame(rid).set_index("step").loc[5, "loss"] == 7.0 and store.run(rid).step == 30


# --------------------------------------------------------------------------- errors


def test_database_errors_are_one_line_naming_the_database(store_url, request):
    if store_url.startswith("postgresql"):  # the test server trusts loopback, so any password gets in
        store_url = store_url.replace("ect@", "ect:s3cret@")
    store, (rid,) = registered(store_url, n=1)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE metrics"))
    engine.dispose()
    with pytest.raises(StoreError) as info:
        store.add_metrics(rid, 1, {"loss": 1.0})
    message = str(info.value)
    assert "\n" not in message and "metrics" in message and "s3cret" not in message
    assert message.startswith(store_url.replace(":s3cret@", ":***@") + ": ")
    res = runner.invoke(app, ["runs", "metrics", rid, "--db", store_url])
    assert res.exit_code == 1 and res.stderr.strip().count("\n") == 0 and "s3cret" not in res.output


def test_two_drivers_registering_overlapping_studies_at_once(store_url):
    """Every mini digits study shares one pretraining: both registrations succeed and share the runs."""
    Store(store_url)
    specs = [StudySpec.model_validate({"name": f"study{i}", "base": BASE, "seeds": [0, 1, 2, 3 + i]}) for i in range(2)]

    def register(store: Store, i: int) -> list[str]:
        return store.register_study(specs[i], dump_spec(specs[i]), expand(specs[i]))

    new = race(store_url, register)
    assert len(new[0]) + len(new[1]) == 5  # seeds 0-2 shared, 3 and 4 each once
    store = Store(store_url, readonly=True)
    assert len(store.runs_frame("study0")) == 4 and len(store.runs_frame("study1")) == 4


def test_timestamp_filters(store_url):
    store, ids = registered(store_url, n=2)
    store.update_run(ids[0], started_at=datetime(2026, 1, 2, 12, tzinfo=timezone.utc))
    store.update_run(ids[1], started_at=datetime(2026, 1, 3, 12, tzinfo=timezone.utc))
    res = runner.invoke(app, ["runs", "list", "--db", store_url, "--where", "started_at>2026-01-03", "--json"])
    assert res.exit_code == 0, res.output
    assert [r["run_id"] for r in yaml.safe_load(res.stdout)] == [ids[1]]
    show = runner.invoke(app, ["runs", "show", ids[0], "--db", store_url, "--json"])
    assert show.exit_code == 0 and yaml.safe_load(show.stdout)["started_at"] == "2026-01-02T12:00:00+00:00"
