"""Studies mirrored into a real `mlflow server` (started here on 127.0.0.1, SQLite backend, stopped by its
process group), tracking that is down, bad --track values, no Tune TensorBoard files, and trial names."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

import synthetic_store
from orchestrator.cli import app
from orchestrator.ray_backend import Job, trial_name
from orchestrator.store import Store, database_url, flatten
from orchestrator.tracking import LiveTracking, tracker_for

runner = CliRunner()
BASE = {
    "data": {"name": "swissroll", "num_samples": 1000},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 12, "log_interval": 4, "checkpoint_interval": 12},
    "eval": {"metric": "swd", "nfe": [1, 2], "num_samples": 100},
}
VARIANTS = [{"label": "q2", "overrides": {"ect.q": 2}}, {"label": "q4-heun", "overrides": {"ect.q": 4, "eval.heun": True}}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 in its own process group, with its SQLite store and artifacts in `root`."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        mlflow = Path(sys.executable).with_name("mlflow")
        self.log = open(root / "server.log", "w")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def ready(self, limit: float = 600) -> str:
        """Wait until /health answers (database migrations take a while on a loaded machine)."""
        import urllib.request

        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, Path(self.log.name).read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as r:
                    if r.status == 200:
                        return self.uri
            except OSError:
                time.sleep(1)
        raise AssertionError(f"mlflow server not up after {limit} s: {Path(self.log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)  # our own group (start_new_session): the server and its workers
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(60)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow"))  # starts while the first study trains
    yield srv
    srv.stop()


def write_study(tmp_path: Path, name: str, **extra) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "kind": "ablation", "base": BASE, "variants": VARIANTS, **extra}))
    return path


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def mlflow_runs(uri: str, study: str) -> tuple[object, dict]:
    """(the study's parent run, its nested runs by ECT run id) in the experiment named after the study."""
    c = client(uri)
    exp = c.get_experiment_by_name(study)
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("ect.role") == "study"]
    assert len(parents) == 1 and parents[0].info.run_name == study
    children = {r.data.tags["ect.run_id"]: r for r in runs if "ect.run_id" in r.data.tags}
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children.values())
    assert len(runs) == 1 + len(children)
    return parents[0], children


def assert_mirrors_store(uri: str, db: str, study: str) -> None:
    """Every run, every config key, the loss history by step and every evaluation under its own name."""
    store = Store(database_url(db))
    runs = store.runs_frame(study)
    parent, children = mlflow_runs(uri, study)
    assert set(children) == set(runs["run_id"])
    c = client(uri)
    for run in runs.itertuples():
        child = children[run.run_id]
        assert child.info.run_name == run.label and child.info.status == "FINISHED"
        config = flatten(json.loads(store.run(run.run_id).config_json))
        assert child.data.params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
        history = c.get_metric_history(child.info.run_id, "loss")
        assert sorted(m.step for m in history) == [4, 8, 12]
        stored = store.metrics_frame(run.run_id).set_index("step")["loss"]
        assert {m.step: m.value for m in history} == pytest.approx(stored.to_dict())
        evals = store.evaluations_frame(study)
        for e in evals[evals["run_id"] == run.run_id].itertuples():
            name = f"swd/{'nfe' if e.sampler == 'consistency' else 'heun'}{e.nfe}"
            assert [(m.step, m.value) for m in c.get_metric_history(child.info.run_id, name)] == [(12, pytest.approx(e.value))]
        assert child.data.metrics["num_params"] == run.num_params
    assert "swd/heun35" in children[runs.loc[runs["label"] == "q4-heun", "run_id"].iloc[0]].data.metrics
    artifacts = {f.path for f in c.list_artifacts(parent.info.run_id)}
    assert {"report.json", "runs.csv", "mapping_schedule.png", "mapping_schedule.pdf"} <= artifacts
    report = json.loads(Path(c.download_artifacts(parent.info.run_id, "report.json")).read_text())
    assert report["study"] == study and {r["label"] for r in report["runs"]} == {"q2", "q4-heun"}


@pytest.mark.slow
@pytest.mark.xdist_group("mlflow-server")  # one worker runs the three, so the module starts one server
def test_tracking_down_does_not_touch_the_study_and_sync_uploads_it_later(tmp_path, server, ray_session,
                                                                          one_run_at_a_time):
    db, storage = str(tmp_path / "ect.db"), str(tmp_path / "store")
    spec = write_study(tmp_path, "track-later", resources=one_run_at_a_time)
    down = f"mlflow:http://127.0.0.1:{free_port()}"  # nothing listens there
    res = runner.invoke(app, ["study", "run", str(spec), "--db", db, "--storage", storage, "--track", down])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "sync-tracking track-later" in warnings[0], res.stderr
    assert (Store(database_url(db)).runs_frame("track-later")["status"] == "completed").all()

    uri = server.ready()
    sync = runner.invoke(app, ["study", "sync-tracking", "track-later", "--db", db, "--track", f"mlflow:{uri}"])
    assert sync.exit_code == 0, sync.output
    assert "3 runs created" in sync.stdout  # the parent and two runs
    assert_mirrors_store(uri, db, "track-later")
    again = runner.invoke(app, ["study", "sync-tracking", "track-later", "--db", db, "--track", f"mlflow:{uri}"])
    assert again.exit_code == 0, again.output
    assert "0 runs created, 0 params, 0 metric points, 0 statuses, 0 artifacts" in again.stdout
    assert_mirrors_store(uri, db, "track-later")  # nothing doubled


@pytest.mark.slow
@pytest.mark.xdist_group("mlflow-server")
def test_a_tracked_study_is_mirrored_live_and_writes_no_tensorboard_files(tmp_path, server, ray_session,
                                                                          one_run_at_a_time):
    uri = server.ready()
    db, storage = str(tmp_path / "ect.db"), tmp_path / "store"
    # the study's own tracking: field
    spec = write_study(tmp_path, "track-live", tracking=f"mlflow:{uri}", resources=one_run_at_a_time)
    res = runner.invoke(app, ["study", "run", str(spec), "--db", db, "--storage", str(storage)])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr and "synced to" in res.stderr
    assert_mirrors_store(uri, db, "track-live")
    # Tune's automatic loggers are off: no event files, no progress.csv / result.json, in any trial directory
    assert (storage / "ray").is_dir()
    written = {p.name for p in storage.rglob("*") if p.is_file()}
    assert not [n for n in written if n.startswith("events.out.tfevents") or n in ("progress.csv", "result.json")]
    # sync-tracking falls back to the study's tracking: and finds nothing missing
    again = runner.invoke(app, ["study", "sync-tracking", "track-live", "--db", db])
    assert again.exit_code == 0 and "0 runs created, 0 params, 0 metric points" in again.stdout, again.output


def finished(uri: str, study: str, run_id: str) -> bool:
    """Whether the MLflow run of ECT run `run_id` exists and is FINISHED (the last step of its sync)."""
    exp = client(uri).get_experiment_by_name(study)
    runs = client(uri).search_runs([exp.experiment_id], f"tags.`ect.run_id` = '{run_id}'") if exp else []
    return any(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
@pytest.mark.xdist_group("mlflow-server")
def test_live_tracking_syncs_changed_runs_from_a_background_thread(tmp_path, server):
    uri = server.ready()
    store, spec = synthetic_store.build(tmp_path / "ect.db")
    console = Console(file=io.StringIO())
    live = LiveTracking(tracker_for(f"mlflow:{uri}"), store, spec.name, console, interval=0.2)
    runs = store.runs_frame(spec.name)
    # a tuning run, whose FD follows the synthetic law (store order puts the pretraining first once registration
    # spans a second, as it can on a loaded machine)
    changed = runs.loc[runs["role"] == "tune", "run_id"].iloc[0]
    live.changed(changed, {"step": 50})
    deadline = time.monotonic() + 300
    while not finished(uri, spec.name, changed):
        assert time.monotonic() < deadline, "the changed run never reached MLflow"
        time.sleep(0.5)
    assert set(mlflow_runs(uri, spec.name)[1]) == {changed}  # only what changed, before the study's end
    assert live.close()  # the end of the study: every run, and the report
    _, children = mlflow_runs(uri, spec.name)
    assert len(children) == 13 and "warning" not in console.file.getvalue()
    run = children[changed]
    assert run.data.metrics["fd_digits/nfe2"] == pytest.approx(
        synthetic_store.expected_fd(2, run.data.metrics["normalized_compute"], 0))


@pytest.mark.parametrize("value, needle", [
    ("wandb:proj", "unknown tracker, expected mlflow or mlflow:URI"),
    ("mlflow:ftp://host/x", "unknown URI scheme, expected one of http, https"),
    ("mlflow:", "unknown tracker"),
])
def test_bad_track_values_are_usage_errors(tmp_path, value, needle):
    spec = write_study(tmp_path, "bad-track")
    res = runner.invoke(app, ["study", "run", str(spec), "--db", str(tmp_path / "ect.db"), "--track", value])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr, res.output
    bad = write_study(tmp_path, "bad-spec", tracking=value)
    res = runner.invoke(app, ["study", "validate", str(bad)])
    assert res.exit_code == 2 and "tracking" in res.stderr and needle in " ".join(res.stderr.split()), res.output


def test_sync_tracking_without_a_target_says_so(tmp_path):
    db = str(tmp_path / "ect.db")
    from orchestrator.study_runner import register
    from studies.spec import load_study

    register(Store(database_url(db)), load_study(write_study(tmp_path, "untracked")))
    res = runner.invoke(app, ["study", "sync-tracking", "untracked", "--db", db])
    assert res.exit_code == 2 and "declares no tracking: give --track mlflow:URI" in res.stderr, res.output


def test_trial_names_are_label_and_run_id_prefix():
    job = Job(run_id="14cfea70cc4533d2", label="budget-2e3_seed0", config="{}", run_dir="/x", init=None, workers=1, cpus_per_worker=1, gpus_per_worker=0)
    assert trial_name(job) == trial_name(job.as_dict()) == "budget-2e3_seed0-14cfea70"
