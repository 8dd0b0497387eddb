"""A study's progress as plain lines (stdout not a terminal): one line per status change, a summary every
30 s with runs done, current runs' steps, elapsed time and the estimate of the time left."""

import io

from rich.console import Console

from orchestrator.console import PlainRuns
from orchestrator.store import Store
from orchestrator.study_runner import register
from studies.spec import StudySpec

BASE = {"data": {"name": "swissroll", "num_samples": 1000}, "network": {"arch": "mlp", "hidden": 16, "depth": 1},
        "schedule": {"batch_size": 32, "iterations": 100, "log_interval": 10}}


def test_plain_lines_and_a_summary_every_30_seconds_with_the_estimate(tmp_path):
    spec = StudySpec.model_validate({"name": "p", "base": BASE, "grid": {"ect.q": [2, 4]}})
    store = Store(f"sqlite:///{tmp_path / 'ect.db'}")
    runs, _ = register(store, spec)
    a, b = (r.run_id for r in runs)
    now = [0.0]
    buf = io.StringIO()
    view = PlainRuns(store, runs, Console(file=buf, width=60), clock=lambda: now[0])
    with view:
        view.update(a, {"status": "running", "attempts": 1})
        view.update(a, {"step": 10, "loss": 0.5})  # no status change: no line
        now[0] = 29.0
        view.tick()  # under 30 s since the last summary: nothing
        view.update(a, {"step": 50})
        now[0] = 40.0
        view.tick()
        view.update(a, {"status": "completed", "step": 100})
        view.update(b, {"status": "running", "attempts": 1})
        now[0] = 50.0
        view.update(b, {"status": "failed", "error": "Traceback ...\nValueError: bad input"})
    lines = buf.getvalue().splitlines()
    label_a, label_b = runs[0].label, runs[1].label
    assert [ln.split(" ", 1)[1] for ln in lines] == [
        "study: 0/2 runs done; running: none; elapsed 0s; estimated time left unknown",
        f"run {label_a} ({a[:8]}): running at step 0/100 (attempt 1)",
        # 50 steps x 32 images in 40 s = 40 img/s; 150 steps x 32 images left -> 120 s
        f"study: 0/2 runs done; running: {label_a} 50/100; elapsed 40s; estimated time left 2m00s",
        f"run {label_a} ({a[:8]}): completed at step 100/100",
        f"run {label_b} ({b[:8]}): running at step 0/100 (attempt 1)",
        f"run {label_b} ({b[:8]}): failed at step 0/100: ValueError: bad input",
        "study: 2/2 runs done; running: none; elapsed 50s; estimated time left 0s",
    ]


def test_status_shows_a_running_run_whose_driver_stopped_beating_as_stale(tmp_path):
    import json
    from datetime import datetime, timedelta, timezone

    from typer.testing import CliRunner

    from orchestrator.cli import app

    spec = StudySpec.model_validate({"name": "st", "base": BASE, "grid": {"ect.q": [2, 4]}})
    store = Store(f"sqlite:///{tmp_path / 'ect.db'}")
    runs, _ = register(store, spec)
    beat = datetime.now(timezone.utc)
    store.update_run(runs[0].run_id, status="running", heartbeat_at=beat - timedelta(minutes=5))  # driver SIGKILLed
    store.update_run(runs[1].run_id, status="running", heartbeat_at=beat)  # a live driver
    res = CliRunner().invoke(app, ["study", "status", "st", "--db", str(tmp_path / "ect.db"), "--json"])
    assert res.exit_code == 0, res.output
    shown = {r["run_id"]: r["status"] for r in json.loads(res.stdout)["runs"]}
    stale = (beat - timedelta(minutes=5)).isoformat(timespec="seconds")
    assert shown == {runs[0].run_id: f"stale (heartbeat {stale})", runs[1].run_id: "running"}
