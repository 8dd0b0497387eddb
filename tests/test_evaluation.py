"""Evaluation during training and `ect eval`: FD with the built-in digits extractor, the Heun
baseline, JSON output and clear errors for missing extractor weights."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from trainer.config import TrainConfig
from trainer.loop import train
from trainer.reporter import RecordingReporter

runner = CliRunner()
DIGITS = {
    "data": {"name": "digits"},
    "network": {"arch": "songunet", "model_channels": 8, "channel_mult": [1, 2]},
    "schedule": {"batch_size": 16, "iterations": 6, "log_interval": 3, "eval_interval": 3},
    "eval": {"metric": "fd_digits", "nfe": [1, 2], "heun": True, "num_samples": 200, "batch_size": 128},
    "sampling": {"heun_steps": 4},
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ect-cache")


def test_fd_reported_during_training(tmp_path, cache_dir):
    cfg = TrainConfig.model_validate({**DIGITS, "eval": {**DIGITS["eval"], "cache_dir": str(cache_dir)}})
    rep = RecordingReporter()
    train(cfg, tmp_path, rep)
    rows = {(e["step"], e["nfe"], e["sampler"]) for e in rep.evaluations}
    assert rows == {(s, n, sm) for s in (3, 6) for n, sm in ((1, "consistency"), (2, "consistency"), (7, "heun"))}
    assert all(e["extractor"] == "digits" and e["num_samples"] == 200 and e["value"] > 0 for e in rep.evaluations)
    # an untrained 6-step model is far from the data: FD well above the real-vs-real floor (~5)
    assert min(e["value"] for e in rep.evaluations) > 20


def test_eval_cli_json(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("ECT_CACHE_DIR", str(cache_dir))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**DIGITS, "eval": {"metric": None}}))
    assert runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run")]).exit_code == 0
    res = runner.invoke(app, ["eval", str(tmp_path / "run" / "checkpoint.pt"), "--metric", "fd_digits",
                              "--steps", "1,2", "--samples", "150", "--json"])
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout)["results"]
    assert [(r["nfe"], r["metric"], r["num_samples"]) for r in results] == [(1, "fd_digits", 150), (2, "fd_digits", 150)]
    again = runner.invoke(app, ["eval", str(tmp_path / "run" / "checkpoint.pt"), "--metric", "fd_digits",
                                "--steps", "1,2", "--samples", "150", "--json"])
    assert json.loads(again.stdout)["results"] == results  # fixed seed: reproducible


def test_eval_cli_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("ECT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("ECT_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**DIGITS, "eval": {"metric": None}}))
    runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run")])
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    res = runner.invoke(app, ["eval", ckpt, "--metric", "fd_inception"])
    assert res.exit_code == 1 and "ECT_INCEPTION_WEIGHTS" in res.stderr and "--weights" in res.stderr
    assert res.stderr.strip().count("\n") == 0
    res = runner.invoke(app, ["eval", ckpt, "--metric", "fid"])
    assert res.exit_code == 2 and "--metric 'fid'" in res.stderr
    res = runner.invoke(app, ["eval", ckpt, "--metric", "swd"])
    assert res.exit_code == 2 and "2-D point data" in res.stderr
    res = runner.invoke(app, ["eval", ckpt, "--steps", "one"])
    assert res.exit_code == 2 and "--steps" in res.stderr
