"""The README's main job, shortened: the mini compute-scaling preset itself, with every iteration count cut
10- to 20-fold and fewer evaluation samples, through real Ray into a real SQLite file, then `ect study report`.

The full study is a benchmark (benchmarks/mini_reproduction.py); this keeps its path from rotting:
same preset file, same commands, same outputs, only smaller numbers.
"""

import json
from pathlib import Path

import yaml
from PIL import Image
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import Store, database_url
from studies.spec import expand, load_study

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "studies" / "presets" / "mini" / "compute_scaling.yaml"
SHRINK = 10  # the preset's smallest budget (10 iterations) becomes 1; the pretraining is cut twice as much
runner = CliRunner()


def shortened_preset(tmp_path: Path) -> tuple[Path, int, dict]:
    """The preset with tuning iterations / SHRINK, pretraining / (2 SHRINK) and 200 evaluation samples; (file, runs, spec)."""
    spec = load_study(PRESET).model_dump(mode="json")
    spec["base"]["eval"]["num_samples"] = 200
    spec["base"]["schedule"]["log_interval"] = 5
    spec["pretrain"]["overrides"]["schedule.iterations"] //= 2 * SHRINK
    for variant in spec["variants"]:
        variant["overrides"]["schedule.iterations"] //= SHRINK
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, len(expand(load_study(path))), spec


def test_main_job_shortened(tmp_path, ray_session):
    path, n_runs, spec = shortened_preset(tmp_path)
    db, storage, out = str(tmp_path / "ect.db"), str(tmp_path / "store"), tmp_path / "report"
    res = runner.invoke(app, ["study", "run", str(path), "--db", db, "--storage", storage])
    assert res.exit_code == 0, res.output
    runs = Store(database_url(db)).runs_frame(spec["name"])
    assert len(runs) == n_runs and (runs["status"] == "completed").all()

    res = runner.invoke(app, ["study", "report", spec["name"], "--db", db, "--out", str(out)])
    assert res.exit_code == 0, res.output
    for needle in ("metric floor", "pretrained baselines", "fits against normalised compute",
                   "ECT vs its pretraining", "2-step better than 1-step"):
        assert needle in res.stdout, needle
    for name in ("compute_scaling", "pareto_train_compute", "metric_vs_iterations", "samples_per_budget",
                 "mapping_schedule"):
        with Image.open(out / f"{name}.png") as im:
            assert min(im.size) > 100, name
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF"), name

    report = json.loads((out / "report.json").read_text())
    assert report["floor"] > 0 and {"fd@1", "fd@2", "fd@heun"} <= report["baselines"].keys()
    assert {(f["nfe"], f["form"]) for f in report["fits"]} == {(n, f) for n in (1, 2)
                                                              for f in ("loglinear", "saturating")}
    multi_seed = [v for v in spec["variants"] if len(v.get("seeds") or spec["seeds"]) > 1]
    if multi_seed:  # the preset's extra seeds reach the report's seed-spread check
        assert {r["nfe"] for r in report["seed_spread"]} == {1, 2}
        assert all(max(r["seeds_smallest"], r["seeds_largest"]) > 1 for r in report["seed_spread"])
    headline = report["headline"]["within_10pct"]
    assert headline["heun"] == report["baselines"]["fd@heun"] and headline["fraction_allowed"] == 0.1
