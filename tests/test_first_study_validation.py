"""A researcher's first study of their own: validation that resolves what the runs will read (init checkpoints,
data, extractor weights) before anything starts, suggestions for misspelt keys, set-up failures that are not
retried, `runs list` / `runs show` that show results, and a plan that states its assumptions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import synthetic_store
from orchestrator.cli import app
from orchestrator.cli_options import PEAK_TFLOPS, UTILIZATION
from orchestrator.ray_backend import ERROR_FILE, KIND, TuneReporter, _train_job
from orchestrator.validation import with_absolute_inputs
from studies.spec import expand, load_study, varied_keys
from trainer.config import TrainConfig
from trainer.data import DataError
from trainer.loop import SetupError, train

REPO = Path(__file__).resolve().parents[1]
DIGITS_ECT = REPO / "configs" / "mini" / "digits_ect.yaml"  # init: runs/digits_pretrain/checkpoint.pt
ROLL = {"data": {"name": "swissroll", "num_samples": 200}, "network": {"arch": "mlp", "hidden": 16, "depth": 1},
        "schedule": {"batch_size": 16, "iterations": 2, "log_interval": 1}}
runner = CliRunner()


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch):
    """Commands run from an empty directory (relative paths resolve there), with no store or extractor caches."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("ECT_DB", raising=False)
    for var in ("ECT_INCEPTION_WEIGHTS", "ECT_DINOV2_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return cwd


def write(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_error(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


# --------------------------------------------------------------------------- inputs resolved before anything starts


def test_missing_init_checkpoint_is_refused_naming_the_base_file_and_field(tmp_path):
    import ray

    ray_before = ray.is_initialized()
    study = write(tmp_path / "mine.yaml", {"name": "mine", "base": str(DIGITS_ECT), "grid": {"optim.lr": [1e-3, 3e-3]}})
    line = one_error(invoke("study", "validate", study))
    assert f"{DIGITS_ECT}:5: init: runs/digits_pretrain/checkpoint.pt: checkpoint file not found" in line
    assert "pretrain:" in line  # says how a study gets its own init
    db = tmp_path / "ect.db"
    line = one_error(invoke("study", "run", study, "--db", db, "--storage", tmp_path / "store"))
    assert "init: runs/digits_pretrain/checkpoint.pt" in line
    assert not db.exists() and not (tmp_path / "store").exists()  # nothing registered, nothing written
    assert ray.is_initialized() == ray_before  # Ray was not started for a study that cannot run


def test_an_init_from_the_studys_own_pretraining_or_on_disk_is_accepted(tmp_path, empty_cwd):
    own = write(tmp_path / "own.yaml", {"name": "own", "base": str(DIGITS_ECT), "grid": {"optim.lr": [1e-3]},
                                        "pretrain": {"overrides": {"schedule.iterations": 10}}})
    res = invoke("study", "validate", own)
    assert res.exit_code == 0 and "2 runs" in res.stdout, res.output
    plain = write(tmp_path / "plain.yaml", {"name": "plain", "base": str(DIGITS_ECT)})
    ckpt = empty_cwd / "runs" / "digits_pretrain" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"validation checks that it exists; the run reads it")
    assert invoke("study", "validate", plain).exit_code == 0
    # a Ray trial runs in its own directory: the run gets the path validation read, with the same run id
    spec = load_study(plain)
    absolute = with_absolute_inputs(spec)
    assert [r.config.init for r in expand(absolute)] == [ckpt]
    assert [r.run_id for r in expand(absolute)] == [r.run_id for r in expand(spec)]


def test_missing_data_and_extractor_weights_name_the_study_line_and_field(tmp_path):
    study = write(tmp_path / "s.yaml", {
        "name": "s", "base": {**ROLL, "data": {"name": "image_folder", "path": str(tmp_path / "imgs")},
                              "network": {"arch": "songunet"}, "eval": {"metric": "fd_inception"}},
        "variants": [{"label": "a"}, {"label": "b", "overrides": {"data.path": str(tmp_path / "other")}}]})
    res = invoke("study", "validate", study)
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 3, res.stderr  # each problem once, though two runs share the weights problem
    assert any(re.search(f"^error: {re.escape(str(study))}:5: base.data.path: {re.escape(str(tmp_path))}/imgs: "
                         "dataset not found", ln) for ln in lines)
    assert any(f"{study}:" in ln and "variants.1.overrides.data.path" in ln and "other" in ln for ln in lines)
    assert any("base.eval.weights: Inception-v3 (FID) weights not found" in ln for ln in lines)


def test_extractor_weights_from_the_environment_are_found(tmp_path, monkeypatch):
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    monkeypatch.setenv("ECT_INCEPTION_WEIGHTS", str(weights))
    (tmp_path / "imgs").mkdir()
    study = write(tmp_path / "s.yaml", {"name": "s", "base": {
        **ROLL, "data": {"name": "image_folder", "path": str(tmp_path / "imgs")}, "network": {"arch": "songunet"},
        "eval": {"metric": "fd_inception"}}})
    res = invoke("study", "validate", study)
    assert res.exit_code == 0, res.output


# --------------------------------------------------------------------------- unknown keys: the closest valid one


@pytest.mark.parametrize("tree, needle", [
    ({"base": {**ROLL, "optimizer": {"lr": 0.1}}}, "base.optimizer: unknown field; did you mean base.optim?"),
    ({"base": {**ROLL, "ect": {"qq": 3}}}, "base.ect.qq: unknown field; did you mean base.ect.q?"),
    ({"grid": {"optimizer.lr": [0.1, 0.2]}}, "optimizer.lr: unknown field; did you mean optim.lr?"),
    ({"variants": [{"label": "a", "overrides": {"network.dropoutt": 0.1}}]},
     "variants.0.overrides: network.dropoutt: unknown field; did you mean network.dropout?"),
    ({"resources": {"workerz": 2}}, "resources.workerz: unknown field; did you mean resources.workers?"),
])
def test_unknown_keys_get_the_closest_valid_key(tmp_path, tree, needle):
    study = write(tmp_path / "s.yaml", {"name": "s", "base": ROLL, **tree})
    res = invoke("study", "validate", study)
    assert res.exit_code == 2 and needle in res.stderr, res.stderr


def test_unknown_keys_in_a_base_file_and_a_train_config_name_their_file(tmp_path):
    base = write(tmp_path / "base.yaml", {**ROLL, "optimizer": {"lr": 0.1}})
    study = write(tmp_path / "s.yaml", {"name": "s", "base": "base.yaml"})
    line = one_error(invoke("study", "validate", study))
    assert f"{base}:" in line and "optimizer: unknown field; did you mean optim?" in line
    line = one_error(invoke("train", base, "--out", tmp_path / "run"))
    assert f"{base}: optimizer: unknown field; did you mean optim?" in line


# --------------------------------------------------------------------------- set-up failures are not retried


def _bad_images(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    (images / "000.png").write_text("not a png")
    return images


def test_a_run_that_cannot_set_up_raises_setup_error_with_its_cause(tmp_path):
    cfg = TrainConfig.model_validate({**ROLL, "data": {"name": "image_folder", "path": str(_bad_images(tmp_path))},
                                      "network": {"arch": "songunet"}})
    with pytest.raises(SetupError, match="000.png") as info:
        train(cfg, tmp_path / "run")
    assert isinstance(info.value.__cause__, DataError)
    missing = cfg.model_copy(update={"init": tmp_path / "nope.pt"})
    with pytest.raises(SetupError, match="init: .*nope.pt: checkpoint file not found"):
        train(missing, tmp_path / "run2")


def test_a_trial_that_cannot_set_up_reports_failed_with_its_traceback_file(tmp_path):
    """The trial returns a `final` report with status failed (Tune sees a trial that ended, so it retries nothing)."""
    cfg = TrainConfig.model_validate({**ROLL, "data": {"name": "image_folder", "path": str(_bad_images(tmp_path))},
                                      "network": {"arch": "songunet"}})
    sent: list[dict] = []
    job = {"run_id": "r1", "config": cfg.model_dump_json(), "run_dir": str(tmp_path / "run"), "init": None,
           "workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}
    _train_job(job, TuneReporter("r1", send=sent.append))
    (final,) = [m for m in sent if m[KIND] == "final"]
    assert final["status"] == "failed" and "000.png" in final["message"]
    assert final["error_file"] == str(tmp_path / "run" / ERROR_FILE)
    text = Path(final["error_file"]).read_text()
    assert "Traceback" in text and "DataError" in text and "SetupError" in text


# --------------------------------------------------------------------------- queries that show results


@pytest.fixture(scope="module")
def results_db(tmp_path_factory) -> tuple[str, list[str]]:
    db = tmp_path_factory.mktemp("results") / "ect.db"
    store, spec = synthetic_store.build(db)
    runs = store.runs_frame(spec.name)
    ids = list(runs["run_id"][runs["role"] != "pretrain"]) + list(runs["run_id"][runs["role"] == "pretrain"])
    store.engine.dispose()
    return str(db), ids  # tuning runs first, the pretraining (which also has a Heun evaluation) last


def test_runs_list_shows_varied_keys_and_latest_evaluation_per_nfe(results_db):
    db, ids = results_db
    res = invoke("runs", "list", "--db", db, "--study", "mini-compute-scaling", "--sort", "-fd@2", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == len(ids)
    assert {"schedule.iterations", "seed", "fd_digits@1", "fd_digits@2", "fd_digits@heun"} <= set(rows[0])
    tuned = [r for r in rows if r["role"] == "tune"]
    fd2 = [r["fd_digits@2"] for r in rows]
    assert fd2 == sorted(fd2, reverse=True)  # sorted by the evaluation column, descending
    largest = next(r for r in tuned if r["label"] == "budget-2e5_seed0")
    compute = largest["normalized_compute"]
    assert largest["fd_digits@2"] == pytest.approx(synthetic_store.expected_fd(2, compute, 0))
    table = invoke("runs", "list", "--db", db, "--sort", "-fd@2")
    assert table.exit_code == 0 and "sorted by fd@2 (descending)" in table.stdout
    assert "in store order" in invoke("runs", "list", "--db", db).stdout


def test_runs_list_columns_picks_and_refuses_with_a_suggestion(results_db):
    db, _ = results_db
    res = invoke("runs", "list", "--db", db, "--columns", "label,iterations,fd@1", "--csv")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "label,schedule.iterations,fd_digits@1"
    line = one_error(invoke("runs", "list", "--db", db, "--columns", "label,iteratons"))
    assert "--columns 'iteratons'" in line and "did you mean iterations?" in line


def test_runs_show_prints_the_config_diff_and_every_evaluation(results_db):
    db, ids = results_db
    res = invoke("runs", "show", ids[0], "--db", db, "--json")  # a tuning run: 1- and 2-step evaluations
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["study"] == "mini-compute-scaling"
    assert shown["config_diff"]["schedule.iterations"]["run"] == shown["config"]["schedule"]["iterations"]
    assert shown["config_diff"]["schedule.iterations"]["base"] == 400  # configs/mini/digits_base.yaml
    assert all(v["base"] != v["run"] for v in shown["config_diff"].values())
    assert {e["nfe"] for e in shown["evaluations"]} == {1, 2}
    text = invoke("runs", "show", ids[0], "--db", db).stdout
    assert "differences from study mini-compute-scaling's base" in text and "schedule.iterations" in text


def test_an_ambiguous_prefix_lists_the_runs_it_matches(results_db):
    db, ids = results_db
    prefix = next(i[0] for i in ids if sum(j.startswith(i[0]) for j in ids) > 1)
    n = sum(j.startswith(prefix) for j in ids)
    line = one_error(invoke("runs", "show", prefix, "--db", db), code=1)
    assert f"prefix '{prefix}' matches {n} runs: " in line
    assert all(i in line for i in ids if i.startswith(prefix))


# --------------------------------------------------------------------------- the plan states its assumptions


def test_plan_prints_per_run_gpu_hours_at_a_stated_utilisation(tmp_path):
    study = write(tmp_path / "s.yaml", {"name": "s", "base": ROLL, "grid": {"schedule.iterations": [2, 4]}})
    res = invoke("study", "plan", study, "--json", "--db", tmp_path / "none.db")
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["tflops_peak"] == PEAK_TFLOPS and plan["utilization"] == UTILIZATION
    flops = [r["train_flops"] for r in plan["runs"]]
    assert flops[1] == pytest.approx(2 * flops[0]) and sum(flops) == pytest.approx(plan["train_flops"])
    for r in plan["runs"]:
        assert r["gpu_hours"] == pytest.approx(r["train_flops"] / (PEAK_TFLOPS * 1e12 * UTILIZATION * 3600))
    half = json.loads(invoke("study", "plan", study, "--json", "--utilization", str(UTILIZATION / 2),
                             "--db", tmp_path / "none.db").stdout)
    assert half["gpu_hours"] == pytest.approx(2 * plan["gpu_hours"])
    text = invoke("study", "plan", study, "--db", tmp_path / "none.db").stdout
    assert "gpu_hours" in text and f"{UTILIZATION:.0%} utilisation" in text and "--utilization" in text


def test_varied_keys_are_grid_axes_variant_overrides_and_seeds():
    spec = load_study(REPO / "studies" / "presets" / "mini" / "compute_scaling.yaml")
    assert varied_keys(spec) == ["schedule.iterations", "seed"]
