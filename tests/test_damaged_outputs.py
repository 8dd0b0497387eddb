"""Outputs that are never half-written, and damaged checkpoints that do not block a report (issue 18, item 4).

A finished digits compute-scaling study (three budgets, real training and FD evaluation, written into a
real SQLite store in-process the way the Tune callback writes it: no Ray needed for reading commands).
Then: `study verify`, a truncated checkpoint (listed as damaged with its path and left out of the sample
grids, not failing the report), `report --out` / `figures regenerate` / `figures paper` that either write
everything or nothing, and `runs export` targets.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import Store, database_url, now
from orchestrator.study_runner import register, run_dir
from studies.spec import StudySpec, expand
from trainer.loop import train

from test_bad_inputs import assert_clean_failure, rows_digest

# one worker runs the module, so the trained study of `finished` (seconds of training and FD) is built once
pytestmark = pytest.mark.xdist_group("damaged-study")
runner = CliRunner()
DIGITS = {
    "data": {"name": "digits"},
    "network": {"arch": "songunet", "model_channels": 8, "channel_mult": [1, 2]},
    "schedule": {"batch_size": 16, "iterations": 2, "log_interval": 2},
    "eval": {"metric": "fd_digits", "nfe": [1, 2], "num_samples": 200, "batch_size": 200},
}


class StoreReporter:
    """The trainer's reports written straight into the store (what StoreCallback does for Ray trials)."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.store.add_metrics(self.run_id, step, values)

    def evaluation(self, step: int, nfe: int, metric: str, value: float, extractor: str, num_samples: int,
                   sampler: str = "consistency", sampler_params: str = "{}", seed: int = 0) -> None:
        self.store.add_evaluation(self.run_id, step=step, nfe=nfe, metric=metric, value=value, extractor=extractor,
                                  num_samples=num_samples, sampler=sampler, sampler_params=sampler_params, seed=seed)

    def checkpoint(self, step: int, path: Path) -> None:
        self.store.update_run(self.run_id, checkpoint=str(path))


@dataclass
class Finished:
    db: Path
    checkpoints: dict[str, Path]  # label -> checkpoint


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    root = tmp_path_factory.mktemp("damaged")
    base = {**DIGITS, "eval": {**DIGITS["eval"], "cache_dir": str(root / "cache")}}
    spec = StudySpec.model_validate({"name": "dmg", "kind": "compute_scaling", "base": base,
                                     "grid": {"schedule.iterations": [2, 4, 6]}})
    db = root / "ect.db"
    store = Store(database_url(str(db)))
    register(store, spec)
    checkpoints = {}
    for r in expand(spec):
        store.update_run(r.run_id, status="running", attempts=1, started_at=now())
        res = train(r.config, run_dir(root / "storage", r.run_id), StoreReporter(store, r.run_id))
        store.update_run(r.run_id, status=res.status, step=res.step, images_seen=res.images_seen,
                         train_flops=res.train_flops, flops_per_sample=res.flops_per_sample,
                         normalized_compute=res.normalized_compute, num_params=res.num_params,
                         checkpoint=str(res.checkpoint), finished_at=now())
        checkpoints[r.label] = res.checkpoint
    store.engine.dispose()
    return Finished(db, checkpoints)


@pytest.fixture
def truncated(finished: Finished):
    """The smallest budget's checkpoint cut to its first 2000 bytes (restored afterwards)."""
    path = finished.checkpoints["iterations=2"]
    original = path.read_bytes()
    path.write_bytes(original[:2000])
    yield path
    path.write_bytes(original)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_verify_intact_study(finished: Finished):
    res = invoke("study", "verify", "dmg", "--db", finished.db)
    assert res.exit_code == 0, res.output
    assert "3 checkpoints checked, 0 damaged" in res.stdout


def test_verify_names_a_truncated_checkpoint(finished: Finished, truncated: Path):
    before = rows_digest(finished.db)
    res = invoke("study", "verify", "dmg", "--db", finished.db)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(truncated) in lines[0] and "not a loadable" in lines[0], res.stderr
    assert "1 damaged" in res.stdout
    assert rows_digest(finished.db) == before


def test_verify_compares_the_step_with_the_store(finished: Finished, tmp_path: Path):
    small, large = finished.checkpoints["iterations=2"], finished.checkpoints["iterations=4"]
    original = small.read_bytes()
    shutil.copyfile(large, small)  # loads fine, but holds step 4 where the store says 2
    try:
        res = invoke("study", "verify", "dmg", "--db", finished.db)
    finally:
        small.write_bytes(original)
    assert res.exit_code == 1 and "holds step 4, the store says 2" in res.stderr, res.output


@pytest.mark.slow
def test_damaged_run_does_not_block_the_report(finished: Finished, truncated: Path, tmp_path: Path):
    before = rows_digest(finished.db)
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # files already in the output directory are kept
    res = invoke("study", "report", "dmg", "--db", finished.db, "--out", out)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    assert "damaged" in res.stderr and str(truncated) in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert [d["path"] for d in report["damaged"]] == [str(truncated)]
    assert {"compute_scaling.png", "samples_per_budget.png", "report.json", "runs.csv"} <= set(files_under(out))
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary directory was left"
    figs = invoke("figures", "regenerate", "--study", "dmg", "--db", finished.db, "--out", tmp_path / "figs")
    assert figs.exit_code == 0, figs.output
    assert str(truncated) in figs.stderr and (tmp_path / "figs" / "samples_per_budget.png").is_file()
    assert rows_digest(finished.db) == before


@pytest.mark.slow
def test_a_failing_report_writes_nothing(finished: Finished, tmp_path: Path):
    """A directory where a figure must go stops the report only after the figures before it were drawn:
    nothing of them may reach the output directory."""
    out = tmp_path / "report"
    (out / "compute_scaling.png").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    res = invoke("study", "report", "dmg", "--db", finished.db, "--out", out)
    assert_clean_failure(res, 2, [str(out / "compute_scaling.png"), "is a directory"])
    assert files_under(out) == ["compute_scaling.png", "notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


@pytest.mark.parametrize("cmd", [["figures", "regenerate", "--study", "dmg"], ["study", "report", "dmg"],
                                 ["figures", "paper"]])
def test_output_directory_that_is_a_file(finished: Finished, tmp_path: Path, cmd: list[str]):
    target = tmp_path / "figs"
    target.write_text("a file")
    db = [] if cmd[0] == "figures" and cmd[1] == "paper" else ["--db", finished.db]
    res = invoke(*cmd, *db, "--out", target)
    assert_clean_failure(res, 2, [str(target), "not a directory"])
    assert target.read_text() == "a file" and sorted(p.name for p in tmp_path.iterdir()) == ["figs"]


def test_export_refuses_an_existing_file_unless_forced(finished: Finished, tmp_path: Path):
    target = tmp_path / "runs.csv"
    target.write_text("keep me\n")
    res = invoke("runs", "export", target, "--db", finished.db)
    assert_clean_failure(res, 2, [str(target), "--force"])
    assert target.read_text() == "keep me\n"
    res = invoke("runs", "export", target, "--db", finished.db, "--force")
    assert res.exit_code == 0, res.output
    assert target.read_text().startswith("run_id,") and len(target.read_text().splitlines()) == 1 + 3 * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_export_creates_missing_parents(finished: Finished, tmp_path: Path):
    target = tmp_path / "a" / "b" / "runs.csv"
    res = invoke("runs", "export", target, "--db", finished.db)
    assert res.exit_code == 0, res.output
    assert target.is_file() and files_under(tmp_path) == ["a", "a/b", "a/b/runs.csv"]


def test_store_rows_of_the_finished_study(finished: Finished):
    """The fixture is what the commands above read: three completed runs with FD at NFE 1 and 2."""
    con = sqlite3.connect(finished.db)
    statuses = [s for (s,) in con.execute("select status from runs")]
    evals = con.execute("select count(*) from evaluations where metric = 'fd_digits'").fetchone()[0]
    con.close()
    assert statuses == ["completed"] * 3 and evals == 3 * 2


ROLL = {
    "data": {"name": "swissroll", "num_samples": 1000},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 12, "log_interval": 4, "checkpoint_interval": 6},
    "eval": {"metric": "swd", "nfe": [1, 2], "num_samples": 100},
}


@pytest.mark.slow
def test_resume_trains_a_damaged_run_again(tmp_path: Path, ray_session, one_run_at_a_time: dict):
    """A completed run whose (one, rolling) checkpoint was truncated is trained again from its start by
    `resume` and reproduces its evaluations; the intact run is left alone."""
    import yaml

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "redo", "kind": "ablation", "base": ROLL, "grid": {"ect.q": [2, 4]},
                                    "resources": one_run_at_a_time}))
    db, storage = tmp_path / "ect.db", tmp_path / "store"
    assert invoke("study", "run", spec, "--db", db, "--storage", storage).exit_code == 0
    store = Store(database_url(str(db)))
    runs = store.runs_frame("redo").set_index("label")
    evals = store.evaluations_frame("redo").set_index(["label", "nfe"])["value"]
    ckpt = Path(runs.loc["q=2", "checkpoint"])
    ckpt.write_bytes(ckpt.read_bytes()[:1000])

    res = invoke("study", "resume", "redo", "--db", db, "--storage", storage)
    assert res.exit_code == 0, res.output
    assert str(ckpt) in res.stderr and "training it again" in res.stderr
    after = Store(database_url(str(db))).runs_frame("redo").set_index("label")
    assert list(after["status"]) == ["completed", "completed"]
    assert after.loc["q=2", "attempts"] == 2 and after.loc["q=4", "attempts"] == 1
    assert Path(str(ckpt) + ".damaged").is_file() and after.loc["q=2", "step"] == 12
    again = Store(database_url(str(db))).evaluations_frame("redo").set_index(["label", "nfe"])["value"]
    assert again.sort_index().tolist() == pytest.approx(evals.sort_index().tolist(), rel=1e-9)
    assert invoke("study", "verify", "redo", "--db", db).exit_code == 0
