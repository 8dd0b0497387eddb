"""The study driver through real Ray: runs start as soon as their own pretraining completes, plain
progress lines when stdout is not a terminal, and a cancel or a signal that stops the trials."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from fault_scenarios import runs as stored_runs
from orchestrator.cli import app
from orchestrator.store import Store, database_url

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
BASE = {
    "data": {"name": "swissroll", "num_samples": 1000},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 30, "log_interval": 10, "checkpoint_interval": 10},
    "eval": {"metric": "swd", "nfe": [1], "num_samples": 100},
}


def write_study(tmp_path: Path, **spec) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def wait_for(condition, limit: float, what: str):
    """Poll `condition` until it returns something truthy; fail naming `what` after `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"waited {limit:.0f} s for {what}")


@pytest.mark.slow
def test_a_tuning_run_starts_before_the_last_pretraining_ends(tmp_path, ray_session, request):
    db, storage = str(tmp_path / "ect.db"), str(tmp_path / "store")
    # passes validation (the folder exists), fails when the trial reads it; a short path: it is in the run's label
    images = Path(tempfile.mkdtemp(prefix="ect-img-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(images, ignore_errors=True))
    (images / "000.png").write_text("not a png")
    spec = write_study(
        tmp_path, name="deps", kind="custom", base=BASE, max_failures=0,
        pretrain={"overrides": {}, "inherit": ["schedule.iterations", "data.name", "data.path", "network.arch",
                                             "eval.metric"]},
        variants=[{"label": "short", "overrides": {"schedule.iterations": 30}},
                  {"label": "long", "overrides": {"schedule.iterations": 800, "schedule.checkpoint_interval": 200,
                                                  "schedule.log_interval": 200}},
                  {"label": "broken", "overrides": {"schedule.iterations": 20, "data.name": "image_folder",
                                                    "data.path": str(images), "network.arch": "songunet",
                                                    "eval.metric": None}}],
    )
    res = runner.invoke(app, ["study", "run", str(spec), "--db", db, "--storage", storage])
    assert res.exit_code == 1, res.output  # the broken pretraining and its tuning run fail
    runs = Store(database_url(db)).runs_frame("deps").set_index("label")
    assert "broken" in runs.index, (list(runs.index), res.output)
    broken = runs[runs["run_id"] == runs.loc["broken", "depends_on"]].iloc[0]
    # a failed run keeps its whole traceback in its run directory; the store keeps the last lines and the path
    assert broken["status"] == "failed" and broken["error_file"] == str(Path(storage).resolve() / "runs" / broken["run_id"] / "error.txt")
    trace = Path(broken["error_file"]).read_text()
    assert 'trainer/data.py", line' in trace and "\x1b" not in trace and "000.png" in broken["error"]
    assert runs.loc["broken", "status"] == "failed" and runs.loc["broken", "attempts"] == 0
    assert f"its pretraining run {broken['run_id']} is failed" in runs.loc["broken", "error"]
    status = runner.invoke(app, ["study", "status", "deps", "--db", db])
    assert f"last lines of its traceback ({broken['error_file']})" in status.stdout, status.output
    runs = runs.drop(index=[broken.name, "broken"])
    assert (runs["status"] == "completed").all() and (runs["attempts"] == 1).all()
    pre_long = runs[runs["run_id"] == runs.loc["long", "depends_on"]].iloc[0]
    pre_short = runs[runs["run_id"] == runs.loc["short", "depends_on"]].iloc[0]
    # ISO timestamps (UTC, seconds) compare as strings; the long pretraining trains for seconds more
    assert runs.loc["short", "started_at"] < pre_long["finished_at"]
    assert runs.loc["short", "started_at"] >= pre_short["finished_at"]
    assert runs.loc["long", "started_at"] >= pre_long["finished_at"]
    # stdout is not a terminal here: plain lines, one per run status change, and the study's summary
    lines = res.stdout.splitlines()
    for label in runs.index:
        assert any(f"run {label} (" in ln and ": completed at step" in ln for ln in lines), label
        assert any(f"run {label} (" in ln and ": running at step" in ln for ln in lines), label
    assert any("run broken (" in ln and "is failed, not completed" in ln for ln in lines), res.stdout
    assert any("study: 6/6 runs done" in ln and "estimated time left" in ln for ln in lines), res.stdout


def driver(tmp_path: Path, *args: str, own_ray: bool = False) -> subprocess.Popen:
    """`ect ARGS` as a foreground driver in its own session: joining this test session's Ray (a local Ray of its own
    costs about 10 CPU-s to start), or with `own_ray` starting one in a private temp dir, as on a laptop."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if own_ray:
        env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ect-ray-", dir="/tmp")
    else:
        import ray

        args = (*args, "--address", ray.get_runtime_context().gcs_address)
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def trial_processes() -> list[psutil.Process]:
    """The Tune trial processes (`ray::ImplicitFunc`) of this test session's Ray: its raylet's children."""
    import ray._private.worker as ray_worker

    raylet = psutil.Process(ray_worker._global_node.all_processes["raylet"][0].process.pid)
    found = []
    for p in raylet.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "ImplicitFunc" in p.name() or "ImplicitFunc" in " ".join(p.cmdline()):
                found.append(p)
    return found


def session_members(sid: int) -> set[int]:
    """PIDs of live processes in session `sid` (field 6 of /proc/PID/stat), zombies excluded."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.add(int(entry.name))
    return pids


def running_with_checkpoint(db: str) -> list[int]:
    """Steps of the runs that are running with a checkpoint (each test's database holds one study). Read with
    sqlite3, not a Store: the tests poll this every 0.2 s, and a Store and its DataFrame cost 40 ms a call."""
    return [r["step"] for r in stored_runs(Path(db)) if r["status"] == "running" and r["checkpoint"]]


# long enough that a cancel or a signal sent once a checkpoint exists always finds the run still training, even on
# an idle fast machine (300 iterations could finish within one of the driver's 2 s polls)
LONG_ITERATIONS = 3000
LONG = {**BASE, "schedule": {"batch_size": 32, "iterations": LONG_ITERATIONS, "log_interval": 100,
                             "checkpoint_interval": 100}}


def stopped_cleanly(proc: subprocess.Popen, stderr: str, on_cluster: bool) -> None:
    """stderr holds no error of ours (a slow local Ray start under load logs "INFO ... RPC error: Deadline
    Exceeded": not ours), the driver's session is gone (with its own Ray, if it had one) and, for a driver joined
    to this session's Ray, no trial is left there."""
    assert "Traceback" not in stderr and not any(ln.startswith("error: ") for ln in stderr.splitlines()), stderr
    wait_for(lambda: not session_members(proc.pid), 60, f"no process left of session {proc.pid}")
    if on_cluster:
        wait_for(lambda: not trial_processes(), 60, "the trial to end on the cluster")


@pytest.mark.slow
def test_ctrl_c_stops_a_driver_and_its_own_ray(tmp_path):
    """Ctrl-C is a laptop's case: the terminal sends SIGINT to the driver's whole process group, and the driver's own
    local Ray must go with it."""
    db, storage = str(tmp_path / "ect.db"), str(tmp_path / "store")
    spec = write_study(tmp_path, name="sig", kind="custom", base=LONG, variants=[{"label": "a", "overrides": {}}])
    proc = driver(tmp_path, "study", "run", str(spec), "--db", db, "--storage", storage, own_ray=True)
    try:
        wait_for(lambda: proc.poll() is not None or running_with_checkpoint(db), 180,
                 "a running run with a checkpoint")
        assert proc.poll() is None, proc.communicate()
        assert len(session_members(proc.pid)) > 1  # the driver and its Ray's processes (GCS, raylet, workers)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "interrupted by SIGINT" in stderr
    stopped_cleanly(proc, stderr, on_cluster=False)
    store = Store(database_url(db))
    run = store.runs_frame("sig").iloc[0]
    assert run["status"] == "interrupted" and store.study("sig").status == "interrupted"
    assert 0 < run["step"] < LONG_ITERATIONS and Path(run["checkpoint"]).is_file()


@pytest.mark.slow
def test_sigterm_then_cancel_each_stop_a_driver_and_resume_continues(tmp_path, ray_session):
    """One run through a study's life on a cluster: `kill` (SIGTERM, a scheduler's preemption) stops the driver and
    its trial; a resuming driver continues from the checkpoint until `ect study cancel` stops it; a last resume
    trains the run to its end. (One study for both stops: each start and each resume costs a trial process.)"""
    db, storage = str(tmp_path / "ect.db"), str(tmp_path / "store")
    spec = write_study(tmp_path, name="stop", kind="custom", base=LONG, variants=[{"label": "a", "overrides": {}}])

    proc = driver(tmp_path, "study", "run", str(spec), "--db", db, "--storage", storage)
    try:
        wait_for(lambda: proc.poll() is not None or running_with_checkpoint(db), 180,
                 "a running run with a checkpoint")
        assert proc.poll() is None, proc.communicate()
        assert trial_processes()
        os.kill(proc.pid, signal.SIGTERM)  # as `kill` sends it: to the driver alone
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted by SIGTERM" in stderr, stderr
    stopped_cleanly(proc, stderr, on_cluster=True)
    store = Store(database_url(db))
    run = store.runs_frame("stop").iloc[0]
    assert run["status"] == "interrupted" and store.study("stop").status == "interrupted"
    assert 0 < run["step"] < LONG_ITERATIONS and Path(run["checkpoint"]).is_file()
    interrupted_at = run["step"]

    proc = driver(tmp_path, "study", "resume", "stop", "--db", db, "--storage", storage)
    try:
        wait_for(lambda: proc.poll() is not None or min(running_with_checkpoint(db), default=0) > interrupted_at,
                 180, "the resumed run training past its checkpoint")
        assert proc.poll() is None, proc.communicate()
        res = runner.invoke(app, ["study", "cancel", "stop", "--db", db])
        assert res.exit_code == 0 and "runs cancelled" in res.stdout, res.output
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1 and "study stop: cancelled" in stderr, stderr
    stopped_cleanly(proc, stderr, on_cluster=True)
    store = Store(database_url(db))
    run = store.runs_frame("stop").iloc[0]
    assert run["status"] == "cancelled" and store.study("stop").status == "cancelled"
    assert interrupted_at < run["step"] < LONG_ITERATIONS and Path(run["checkpoint"]).is_file()
    assert run["attempts"] == 2

    res = runner.invoke(app, ["study", "resume", "stop", "--db", db, "--storage", storage])
    assert res.exit_code == 0, res.output
    run = Store(database_url(db)).runs_frame("stop").iloc[0]
    assert run["status"] == "completed" and run["step"] == LONG_ITERATIONS and run["attempts"] == 3
    resumed = Store(database_url(db)).metrics_frame(run["run_id"])["resumed_from"].dropna()
    assert len(resumed) == 2 and (resumed % 100 == 0).all()  # from a checkpoint each time
    # a finished study, and an unknown one: one line, exit 1
    for name, needle in (("stop", "has finished"), ("nope", "no study named 'nope'")):
        res = runner.invoke(app, ["study", "cancel", name, "--db", db])
        assert res.exit_code == 1 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
