"""`ect study evaluate`: stored checkpoints scored with other samplers and sample counts, never retrained, never
twice; every row says how it was made; bad input is refused before anything is written."""

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import Store
from orchestrator.study_runner import register, run_dir
from studies.spec import StudySpec
from trainer.config import SamplingConfig
from trainer.data import load_dataset
from trainer.evaluation import Evaluator
from trainer.loop import load_model, train
from trainer.sampling import ConsistencySampler
from trainer.schedule_search import default_start, golden_section, search_mid_times

runner = CliRunner()
BASE = {
    "data": {"name": "swissroll", "num_samples": 256},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 4},
    "eval": {"metric": "swd", "num_samples": 64},
}


def trained_study(tmp_path: Path, base: dict = BASE, seeds: tuple = (0, 1), train_all: bool = True,
                  evaluate: dict | None = None) -> tuple[str, Path]:
    """A registered study whose runs were trained into their run directories (no evaluation during training)."""
    db, storage = f"sqlite:///{tmp_path / 'ect.db'}", tmp_path / "store"
    store = Store(db)
    spec = StudySpec.model_validate({"name": "s", "base": {**base, "eval": {**base["eval"], "metric": None}},
                                     "seeds": list(seeds), **({"evaluate": evaluate} if evaluate else {})})
    runs, _ = register(store, spec)
    for r in runs[: len(runs) if train_all else 1]:
        result = train(r.config, run_dir(storage, r.run_id))
        store.update_run(r.run_id, status="completed", step=result.step, checkpoint=str(result.checkpoint))
    return db, storage


def evaluate(db: str, storage: Path, *args: str):
    return runner.invoke(app, ["study", "evaluate", "s", "--db", db, "--storage", str(storage), "--device", "cpu",
                               "--json", "--workers", "1", *args])


def test_new_samplers_are_added_once_with_their_parameters(tmp_path):
    db, storage = trained_study(tmp_path)
    args = ["--metric", "swd", "--steps", "1,3", "--mid-times", "1.5,0.5", "--heun-steps", "3", "--seed", "1"]
    res = evaluate(db, storage, *args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 6
    frame = Store(db).evaluations_frame("s")
    assert len(frame) == 6 and set(frame["seed"]) == {1} and set(frame["num_samples"]) == {64}
    three = frame[frame["nfe"] == 3]
    assert [json.loads(p) for p in three["sampler_params"]] == [{"steps": 3, "sigma_max": 80.0,
                                                                 "mid_times": [1.5, 0.5]}] * 2
    assert set(frame[frame["sampler"] == "heun"]["nfe"]) == {5}
    # the stored number is that sampler's: measured again directly, with the same noise
    run = three.iloc[0]
    net, cfg, _ = load_model(Path(Store(db).run(run["run_id"]).checkpoint))
    ev = cfg.eval.model_copy(update={"metric": "swd", "num_samples": 64, "seed": 1})
    evaluator = Evaluator(ev, cfg.sampling, load_dataset(cfg.data), "cpu")
    assert evaluator.measure(net, ConsistencySampler(3, SamplingConfig(mid_times=[1.5, 0.5]))) == run["value"]
    assert evaluator.measure(net, ConsistencySampler(3, SamplingConfig(mid_times=[2.0, 0.2]))) != run["value"]
    # the same again: nothing computed; more samples: new rows beside the old ones
    res = evaluate(db, storage, *args)
    assert res.exit_code == 0 and json.loads(res.stdout)["added"] == 0 and len(Store(db).evaluations_frame("s")) == 6
    res = evaluate(db, storage, *args, "--samples", "32", "--steps", "1")
    assert res.exit_code == 0 and json.loads(res.stdout)["added"] == 4
    assert len(Store(db).evaluations_frame("s")) == 10


@pytest.mark.parametrize("args, message", [
    (["--mid-times", "0.5,1.5", "--steps", "3"], "--mid-times: intermediate times [0.5, 1.5] must decrease"),
    (["--mid-times", "100"], "must decrease strictly and lie in (sigma_min, sigma_max) = (0.003, 80)"),
    (["--mid-times", "0.001"], "(0.003, 80)"),
    (["--steps", "0"], "--steps '0': each must be >= 1"),
    (["--steps", "3"], "--steps: 3-step sampling needs 2 mid times"),
    (["--steps", "two"], "--steps 'two': expected comma-separated ints"),
    (["--tune", "2,5"], "--tune '2,5': expected step counts from 2 to 4"),
])
def test_bad_sampler_options_are_usage_errors_and_write_nothing(tmp_path, args, message):
    db, storage = trained_study(tmp_path, seeds=(0,))
    res = evaluate(db, storage, "--metric", "swd", *args)
    assert res.exit_code == 2 and message in res.stderr and res.stderr.strip().count("\n") == 0, res.output
    assert Store(db).evaluations_frame("s").empty


def test_runs_without_a_checkpoint_are_named_and_nothing_is_written(tmp_path):
    db, storage = trained_study(tmp_path, train_all=False)
    pending = Store(db).runs_frame("s").set_index("status").loc["pending"]
    res = evaluate(db, storage, "--metric", "swd")
    assert res.exit_code == 1, res.output
    assert f"no checkpoint for runs base_seed1 ({pending['run_id']}, pending)" in res.stderr
    assert Store(db).evaluations_frame("s").empty
    Store(db).update_run(pending["run_id"], status="running")
    res = evaluate(db, storage, "--metric", "swd")
    assert res.exit_code == 1 and "runs base_seed1 are still running" in res.stderr


def test_missing_extractor_weights_name_the_option_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("ECT_INCEPTION_WEIGHTS", raising=False)
    digits = {"data": {"name": "digits"}, "network": {"arch": "songunet", "model_channels": 8},
              "schedule": {"batch_size": 8, "iterations": 1}, "eval": {"metric": None}}
    db, storage = trained_study(tmp_path, base=digits, seeds=(0,))
    res = evaluate(db, storage, "--metric", "fd_inception", "--weights", str(tmp_path / "nowhere"), "--steps", "1")
    assert res.exit_code == 1 and res.stderr.strip().count("\n") == 0
    assert "--weights" in res.stderr and "ECT_INCEPTION_WEIGHTS" in res.stderr
    assert Store(db).evaluations_frame("s").empty


def test_golden_section_finds_a_known_minimum_and_the_search_never_loses_to_the_default():
    tried = golden_section(lambda x: (x - 0.3) ** 2, 0.0, 1.0, 30)
    assert abs(min(tried, key=tried.get) - 0.3) < 1e-5 and len(tried) == 32
    calls = []

    def measure(t: float) -> float:
        calls.append(t)
        return abs(math.log(t) - math.log(1.5))

    (t,), value = search_mid_times(lambda ts: measure(ts[0]), 0.05, 20.0, 25, start=[0.821])
    assert abs(t - 1.5) < 1e-3 and value == measure(t) and len(calls) == 28 + 1
    times, value = search_mid_times(lambda ts: 0.0 if ts == [0.821] else 1.0, 0.05, 20.0, 4, start=[0.821])
    assert (times, value) == ([0.821], 0.0)


def test_tuned_two_step_evaluations_are_stored_with_their_search_once(tmp_path):
    db, storage = trained_study(tmp_path, seeds=(0,))
    args = ["--metric", "swd", "--steps", "2", "--tune", "2", "--tune-iterations", "3", "--samples", "64"]
    res = evaluate(db, storage, *args)
    assert res.exit_code == 0, res.output
    frame = Store(db).evaluations_frame("s")
    params = [json.loads(p) for p in frame["sampler_params"]]
    default, tuned = sorted(params, key=lambda p: "tuned_on" in p)
    assert default["mid_times"] == [0.821] and 0.05 <= tuned["mid_times"][0] <= 20
    assert tuned["tuned_on"] == {"method": "golden-section on log t", "range": [0.05, 20.0], "iterations": 3,
                                 "seed": 1, "num_samples": 64}
    res = evaluate(db, storage, *args)
    assert res.exit_code == 0 and json.loads(res.stdout)["added"] == 0 and len(Store(db).evaluations_frame("s")) == 2
    res = evaluate(db, storage, *args[:-2], "--tune-range", "0.001,20")
    assert res.exit_code == 2 and "--tune-range: intermediate times" in res.stderr


def test_coordinate_search_recovers_a_known_schedule_and_never_loses_to_the_default():
    optimum = [4.0, 0.9, 0.15]

    def measure(times: list[float]) -> float:  # coupled: the best t2 depends on t1 unless t1 is at its optimum
        assert all(b < a for a, b in zip(times, times[1:])), times  # every tried schedule is decreasing
        u = [math.log(t / o) for t, o in zip(times, optimum)]
        return u[0] ** 2 + u[1] ** 2 + u[2] ** 2 + 0.5 * u[0] * u[1] + 0.5 * u[1] * u[2]

    start = default_start([0.821], 3, 0.05, 20.0)
    assert start[0] > start[1] > start[2] and 0.05 < start[2] and start[0] < 20.0
    times, value = search_mid_times(measure, 0.05, 20.0, 30, start, rounds=6)
    assert all(abs(math.log(t / o)) < 0.02 for t, o in zip(times, optimum)), times
    assert value == measure(times) < 1e-3
    two, _ = search_mid_times(lambda ts: measure([4.0, *ts]), 0.05, 3.9, 30, [2.0, 1.0], rounds=6)
    assert all(abs(math.log(t / o)) < 0.02 for t, o in zip(two, optimum[1:])), two
    # a spike at the default: every other schedule is worse, so the default comes back
    default = [3.0, 1.0, 0.3]
    assert search_mid_times(lambda ts: 0.0 if ts == default else 1.0 + sum(ts), 0.05, 20.0, 5, default) == (default, 0.0)
    assert default_start([3.0, 1.0, 0.3], 2, 0.05, 20.0) == [3.0, 1.0]


@pytest.mark.parametrize("section, message", [
    ({"steps": [0]}, "evaluate.steps.0: Input should be greater than or equal to 1"),
    ({"mid_times": [0.5, 1.5], "steps": [3]}, "evaluate: Value error, mid_times: intermediate times [0.5, 1.5] must "
                                              "decrease strictly"),
    ({"mid_times": [100.0]}, "mid_times: intermediate times [100.0] must decrease strictly and lie in (sigma_min, "
                             "sigma_max) = (0.003, 80)"),
    ({"steps": [1, 4]}, "steps: [4] need 3 mid_times, have 1"),
    ({"tune": [5]}, "evaluate.tune.0: Input should be less than or equal to 4"),
    ({"tune_range": [0.001, 20]}, "tune_range [0.001, 20.0]: expected LOW < HIGH inside (sigma_min, sigma_max)"),
])
def test_bad_evaluate_sections_are_refused_at_validate_time_naming_the_field(tmp_path, section, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": BASE, "evaluate": section}))
    res = runner.invoke(app, ["study", "validate", str(path)])
    assert res.exit_code != 0 and message in res.output and res.output.strip().count("\n") == 0, res.output


def test_the_declared_evaluate_section_is_used_unless_an_option_overrides_it(tmp_path):
    section = {"steps": [1, 3], "mid_times": [1.5, 0.5], "tune": [3], "tune_iterations": 2, "tune_rounds": 1,
               "metric": "swd", "num_samples": 48, "seed": 2}
    db, storage = trained_study(tmp_path, seeds=(0,), evaluate=section)
    res = evaluate(db, storage)
    assert res.exit_code == 0, res.output
    frame = Store(db).evaluations_frame("s")
    assert set(frame["seed"]) == {2} and set(frame["num_samples"]) == {48} and set(frame["metric"]) == {"swd"}
    params = sorted((json.loads(p) for p in frame["sampler_params"]), key=lambda p: (p["steps"], "tuned_on" in p))
    assert [(p["steps"], "tuned_on" in p) for p in params] == [(1, False), (3, False), (3, True)]
    assert params[1]["mid_times"] == [1.5, 0.5]
    tuned = params[2]
    assert tuned["tuned_on"] == {"method": "coordinate search, golden-section on log t", "range": [0.05, 20.0],
                                 "iterations": 2, "rounds": 1, "seed": 3, "num_samples": 48}
    assert 20.0 > tuned["mid_times"][0] > tuned["mid_times"][1] > 0.05
    # options override the section: one new row (1 step, 32 samples, no search)
    res = evaluate(db, storage, "--steps", "1", "--samples", "32", "--tune", "")
    assert res.exit_code == 0 and json.loads(res.stdout)["added"] == 1, res.output


def test_searches_on_fewer_samples_and_two_worker_processes_store_what_one_process_does(tmp_path):
    """--tune-samples: the search measures on its own sample count (recorded), the tuned sampler on --samples; and
    runs measured in two spawned processes give the very values of one process (one CPU thread each)."""
    args = ["--metric", "swd", "--steps", "1,2", "--tune", "2", "--tune-iterations", "2", "--samples", "64",
            "--tune-samples", "24"]
    values = []
    for workers in ("1", "2"):
        (tmp_path / workers).mkdir()
        db, storage = trained_study(tmp_path / workers, seeds=(0, 1))
        res = evaluate(db, storage, *args, "--workers", workers)  # the last --workers given wins
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["added"] == 6
        frame = Store(db).evaluations_frame("s").sort_values(["run_id", "nfe", "sampler_params"])
        assert set(frame["num_samples"]) == {64}
        tuned = [json.loads(p)["tuned_on"] for p in frame["sampler_params"] if "tuned_on" in p]
        assert len(tuned) == 2 and all(t["num_samples"] == 24 and t["seed"] == 1 for t in tuned)
        values.append(list(zip(frame["run_id"], frame["sampler_params"], frame["value"])))
    assert values[0] == values[1]
