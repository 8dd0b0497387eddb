"""Studies through real Ray (a local 2-CPU instance on loopback) into a real SQLite file."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import Store, database_url

runner = CliRunner()
BASE = {
    "data": {"name": "swissroll", "num_samples": 1000},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 12, "log_interval": 4, "checkpoint_interval": 6},
    "eval": {"metric": "swd", "nfe": [1, 2], "num_samples": 100},
}


def write_study(tmp_path: Path, **spec) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_study_end_to_end_then_resubmission_runs_nothing(tmp_path, ray_session, one_run_at_a_time):
    db, storage = str(tmp_path / "ect.db"), str(tmp_path / "store")
    spec = write_study(tmp_path, name="e2e", kind="ablation", base=BASE, resources=one_run_at_a_time,
                       pretrain={"overrides": {"schedule.iterations": 16}}, grid={"ect.q": [2, 4]})
    res = invoke("study", "run", str(spec), "--db", db, "--storage", storage)
    assert res.exit_code == 0, res.output
    store = Store(database_url(db))
    runs = store.runs_frame("e2e")
    assert sorted(runs["status"]) == ["completed"] * 3 and list(runs["attempts"]) == [1, 1, 1]
    assert all(Path(c).is_file() and Path(c).is_relative_to(Path(storage).resolve()) for c in runs["checkpoint"])
    # the trials ran in workers of the driver's job, and Ray prestarted no idle worker for no job (init_ray): Ray 2.60
    # would have within seconds of its start, and the study took longer
    import ray._private.worker as ray_worker

    workers = [p.name for p in Path(ray_worker._global_node.get_logs_dir_path()).glob("worker-*.out")]
    assert workers and not [w for w in workers if "-ffffffff-" in w], workers
    evals = store.evaluations_frame("e2e")
    # every run evaluated at NFE 1 and 2 at its last step (and at the configured interval: none here)
    assert len(evals) == 3 * 2 and set(evals["metric"]) == {"swd"} and (evals["value"] > 0).all()
    tune = runs[runs["role"] == "tune"]
    assert (tune["step"] == 12).all() and (tune["train_flops"] > 0).all()
    metrics = store.metrics_frame(tune["run_id"].iloc[0])
    assert list(metrics["step"]) == [4, 8, 12] and "loss" in metrics
    again = invoke("study", "run", str(spec), "--db", db, "--storage", storage)
    assert again.exit_code == 0 and "0 new, 0 to run" in again.stdout
    assert list(Store(database_url(db)).runs_frame("e2e")["attempts"]) == [1, 1, 1]
    # the results feed the analysis: figures and the ablation table are written and readable
    figs = invoke("figures", "regenerate", "--study", "e2e", "--out", str(tmp_path / "figs"), "--db", db)
    assert figs.exit_code == 0, figs.output
    table = (tmp_path / "figs" / "ablation.md").read_text()
    assert "q=2 · NFE 1" in table and "q=4 · NFE 2" in table
    assert (tmp_path / "figs" / "mapping_schedule.png").stat().st_size > 1000
    report = invoke("study", "report", "e2e", "--db", db, "--json")
    assert report.exit_code == 0, report.output
    rep = json.loads(report.stdout)
    assert set(rep["baselines"]) == {"swd@1", "swd@2"} and rep["floor"] is None and len(rep["runs"]) == 3
    assert all("at least 3 points" in f["error"] for f in rep["fits"])  # two budgets only: no fit, said so
    pareto = invoke("analyze", "pareto", "--study", "e2e", "--cost", "train_compute", "--y", "swd", "--json", "--db", db)
    assert pareto.exit_code == 0, pareto.output
    assert {r["label"] for r in json.loads(pareto.stdout)} <= {"q=2", "q=4"}


def test_failing_and_diverging_runs_do_not_stop_the_others(tmp_path, ray_session, one_run_at_a_time):
    db, storage = str(tmp_path / "ect.db"), str(tmp_path / "store")
    images = tmp_path / "images"  # exists (validation passes) but holds no image: the run fails while it sets up
    images.mkdir()
    (images / "000.png").write_text("not a png")
    spec = write_study(
        tmp_path, name="faults", kind="custom", base=BASE, max_failures=1, resources=one_run_at_a_time,
        variants=[
            {"label": "good", "overrides": {}},
            {"label": "bad-data", "overrides": {"data.name": "image_folder", "data.path": str(images),
                                                 "network.arch": "songunet", "eval.metric": None}},
            {"label": "diverges", "overrides": {"optim.lr": 1.0e30, "optim.name": "adam",
                                                "schedule.iterations": 200}},
        ],
    )
    res = invoke("study", "run", str(spec), "--db", db, "--storage", storage)
    assert res.exit_code == 1, res.output  # the study is incomplete
    runs = Store(database_url(db)).runs_frame("faults").set_index("label")
    assert runs.loc["good", "status"] == "completed"
    assert runs.loc["bad-data", "status"] == "failed" and "000.png" in runs.loc["bad-data", "error"]
    assert runs.loc["bad-data", "attempts"] == 1  # a data error before the first step: never retried (max_failures: 1)
    traceback = Path(runs.loc["bad-data", "error_file"])
    assert traceback.is_file() and "DataError" in traceback.read_text()
    failed = [ln for ln in res.stderr.splitlines() if ln.startswith("failed: ")]  # one line per failed run
    assert len(failed) == 1 and "bad-data" in failed[0] and str(traceback) in failed[0]
    assert runs.loc["diverges", "status"] == "diverged" and "non-finite" in runs.loc["diverges", "error"]
    status = invoke("study", "status", "faults", "--db", db, "--json")
    assert status.exit_code == 0 and '"incomplete"' in status.stdout
    fit = invoke("analyze", "fit", "--study", "faults", "--x", "train_compute", "--y", "swd", "--db", db)
    assert fit.exit_code == 1 and "left out 2 run(s) not completed" in fit.stderr
    assert "diverges (diverged)" in fit.stderr and "at least 3 points" in fit.stderr
