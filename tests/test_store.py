"""The SQL store on a real SQLite file and a real PostgreSQL server (tests/pg.py): registration,
idempotence, filters (and injection attempts), concurrent readers, schema checks, bad URLs."""

import hashlib
import json
import sqlite3
import threading

import pytest
from sqlalchemy import column, create_engine, inspect, select, table
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.query import FilterError, condition, parse_where
from orchestrator.store import Run, Store, StoreError, database_url, migrate, redact
from studies.spec import StudySpec, dump_spec, expand

runner = CliRunner()
BASE = {
    "data": {"name": "swissroll", "num_samples": 500},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 10},
}


def make_spec(name="s", **over) -> StudySpec:
    return StudySpec.model_validate({"name": name, "base": BASE, "grid": {"network.dropout": [0.0, 0.2, 0.4]}, **over})


@pytest.fixture
def store(store_url) -> Store:
    return Store(store_url)


def register(store: Store, spec: StudySpec) -> list[str]:
    return store.register_study(spec, dump_spec(spec), expand(spec))


def rows_digest(url: str) -> str:
    """A checksum of every row of every table (to prove a failed command changed nothing)."""
    engine = create_engine(url)
    h = hashlib.sha256()
    with engine.connect() as conn:
        for name in sorted(inspect(conn).get_table_names()):
            cols = [c["name"] for c in inspect(conn).get_columns(name)]
            t = table(name, *(column(c) for c in cols))
            for row in conn.execute(select(t).order_by(*t.c)):
                h.update(repr(tuple(row)).encode())
    engine.dispose()
    return h.hexdigest()


def test_register_is_idempotent_and_shares_runs(store):
    spec = make_spec()
    assert len(register(store, spec)) == 3
    assert register(store, spec) == []
    other = make_spec("other", grid={"network.dropout": [0.4, 0.6]})
    assert len(register(store, other)) == 1  # dropout 0.4 already exists
    assert len(store.runs_frame("other")) == 2 and len(store.runs_frame("s")) == 3
    params = store.params_frame(list(store.runs_frame("s")["run_id"]))
    assert sorted(params["network.dropout"]) == [0.0, 0.2, 0.4]


def test_filters_bind_parameters(store):
    register(store, make_spec())
    with store.session() as s:
        def ids(*terms):
            q = select(Run.run_id)
            for t in parse_where(list(terms)):
                q = q.where(condition(s, t))
            return set(s.scalars(q))

        assert len(ids("dropout>=0.2")) == 2
        assert len(ids("network.dropout=0.4")) == 1
        assert len(ids("status=pending", "dropout<0.1")) == 1
        assert len(ids("data.name=swissroll")) == 3
        assert ids("data.name=digits") == set()
        with pytest.raises(FilterError, match="ambiguous"):
            ids("num_samples=500")  # data.num_samples and eval.num_samples
        with pytest.raises(FilterError, match="no such run column"):
            ids("nope=1")


INJECTIONS = [
    "status=completed; DROP TABLE runs",
    "status='x' OR 1=1",
    "dropout=0.4 OR 1=1",
    "label=a'--",
    "run_id=1); DELETE FROM runs; --",
    "status=\"x\"",
    "1=1",
    "dropout>=0.2 UNION SELECT * FROM runs",
]


@pytest.mark.parametrize("where", INJECTIONS)
def test_injection_attempts_are_rejected_and_change_nothing(store_url, where):
    store = Store(store_url)
    register(store, make_spec())
    before = rows_digest(store_url)
    res = runner.invoke(app, ["runs", "list", "--db", store_url, "--where", where])
    assert res.exit_code == 2 and "--where" in res.stderr and res.stderr.strip().count("\n") == 0
    assert rows_digest(store_url) == before


def test_runs_cli_json_csv_and_sort(store_url):
    db = store_url
    register(Store(db), make_spec())
    res = runner.invoke(app, ["runs", "list", "--db", str(db), "--where", "dropout>0", "--json", "--sort", "-dropout"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 2 and all(r["status"] == "pending" for r in rows)
    csv = runner.invoke(app, ["runs", "list", "--db", str(db), "--csv"]).stdout.splitlines()
    assert csv[0].startswith("run_id,label") and len(csv) == 4
    show = runner.invoke(app, ["runs", "show", rows[0]["run_id"][:6], "--db", str(db), "--json"])
    assert show.exit_code == 0 and json.loads(show.stdout)["config"]["network"]["dropout"] == 0.4


def test_two_readers_during_writes(store_url):
    url = store_url
    writer = Store(url)
    register(writer, make_spec())
    run_id = writer.runs_frame("s")["run_id"][0]
    errors, reads = [], [0, 0]

    def read(i):
        reader = Store(url, create=False)
        try:
            for _ in range(40):
                df = reader.runs_frame("s")
                assert len(df) == 3
                reader.metrics_frame(run_id)
                reads[i] += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for step in range(1, 200):
        writer.add_metrics(run_id, step, {"loss": 1.0 / step})
    for t in threads:
        t.join()
    assert not errors and reads == [40, 40]
    assert len(writer.metrics_frame(run_id)) == 199


def test_failed_write_leaves_no_partial_rows(store):
    register(store, make_spec())
    run_id = store.runs_frame("s")["run_id"][0]
    with pytest.raises(ValueError):
        store.add_metrics(run_id, 5, {"loss": 1.0, "bad": "not a number"})
    with pytest.raises(StoreError, match="no run with id 'nope'"):
        store.add_metrics("nope", 5, {"loss": 1.0})
    assert len(store.metrics_frame(run_id)) == 0 and len(store.metrics_frame("nope")) == 0


def test_schema_version_and_foreign_files(tmp_path):
    db = tmp_path / "ect.db"
    Store(database_url(str(db)))
    con = sqlite3.connect(db)
    con.execute("drop table alembic_version")
    con.execute("update meta set value='0' where key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="store schema version 0 is not one this ect knows"):
        Store(database_url(str(db)))
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a database" * 100)
    with pytest.raises(StoreError, match="cannot be used as a database"):
        Store(database_url(str(text)))
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("create table x (a int)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not an ECT store"):
        Store(database_url(str(other)))
    with pytest.raises(StoreError, match="no ECT store here"):
        Store(database_url(str(tmp_path / "fresh.db")), create=False)


def test_head_revision_is_alembics_and_stores_are_stamped_with_it(tmp_path):
    """`migrate.HEAD` (what a store is opened against without importing Alembic) is the head Alembic finds in
    migrations/versions, and a new store records it; a revision table with two rows is refused in one line."""
    assert migrate.HEAD == migrate.revisions()[0] and migrate.known(migrate.HEAD)
    db = tmp_path / "ect.db"
    Store(database_url(str(db)))
    con = sqlite3.connect(db)
    assert con.execute("select version_num from alembic_version").fetchall() == [(migrate.HEAD,)]
    con.execute("insert into alembic_version values ('0001')")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="several schema revisions"):
        Store(database_url(str(db)), readonly=True)


def test_urls_with_passwords_are_redacted():
    assert redact("postgresql://alice:s3cret@db.example/ect") == "postgresql://alice:***@db.example/ect"
    assert "s3cret" not in redact("postgresql://alice:s3cret@db/ect")
    for url in ("postgresql+nodriver://alice:s3cret@localhost/ect", "postgresql://alice:s3cret@127.0.0.1:1/ect"):
        res = runner.invoke(app, ["study", "list", "--db", url])
        assert res.exit_code == 1 and "s3cret" not in res.output and "***" in res.stderr, res.output


def test_unknown_study_and_run(store_url):
    db = store_url
    Store(db)
    res = runner.invoke(app, ["study", "status", "nope", "--db", str(db)])
    assert res.exit_code == 1 and "no study named 'nope'" in res.stderr
    res = runner.invoke(app, ["runs", "show", "abcdef", "--db", str(db)])
    assert res.exit_code == 1 and "no run with id 'abcdef'" in res.stderr
