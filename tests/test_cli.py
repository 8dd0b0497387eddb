"""The `ect` CLI end to end: train, resume, sample (files written and opened), clean errors."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()


def write_config(tmp_path: Path, cfg: dict, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


ROLL = {
    "data": {"name": "swissroll", "num_samples": 1000},
    "network": {"arch": "mlp", "hidden": 32, "depth": 1},
    "ect": {"mode": "pretraining"},
    "schedule": {"batch_size": 64, "iterations": 20, "log_interval": 5},
}
DIGITS = {
    "data": {"name": "digits"},
    "network": {"arch": "songunet", "model_channels": 8, "channel_mult": [1, 2], "conditional": True},
    "schedule": {"batch_size": 8, "iterations": 6, "log_interval": 2},
}


def test_train_json_then_resume_is_a_no_op(tmp_path):
    cfg = write_config(tmp_path, ROLL)
    res = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["status"] == "completed" and summary["step"] == 20 and summary["train_flops"] > 0
    again = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout[again.stdout.index("{"):])["images_seen"] == 20 * 64


def test_sample_scatter_and_grid(tmp_path):
    roll = write_config(tmp_path, ROLL, "roll.yaml")
    assert runner.invoke(app, ["train", str(roll), "--out", str(tmp_path / "roll")]).exit_code == 0
    res = runner.invoke(app, ["sample", str(tmp_path / "roll" / "checkpoint.pt"), "--steps", "2",
                              "--num", "300", "--out", str(tmp_path / "roll.png")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "roll.png") as im:
        assert im.size[0] > 100
    digits = write_config(tmp_path, DIGITS, "digits.yaml")
    assert runner.invoke(app, ["train", str(digits), "--out", str(tmp_path / "dig")]).exit_code == 0
    for extra, name in ((["--steps", "1"], "one.png"), (["--heun"], "heun.png"), (["--class", "3"], "three.png")):
        res = runner.invoke(app, ["sample", str(tmp_path / "dig" / "checkpoint.pt"), "--num", "16",
                                  "--out", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
        with Image.open(tmp_path / name) as im:
            assert im.mode == "L" and im.size == ((4 * 9 - 1) * 8,) * 2  # 4x4 grid of 8x8 with 1-px gaps, scaled 8x
    assert "NFE 35" in runner.invoke(app, ["sample", str(tmp_path / "dig" / "checkpoint.pt"), "--heun", "--num",
                                           "4", "--out", str(tmp_path / "h.png")]).stdout


@pytest.mark.parametrize(
    "cfg,code,needle",
    [
        ({**ROLL, "ect": {"q": 1}}, 2, "ect.q"),
        ({**ROLL, "schedulee": {}}, 2, "schedulee: unknown field"),
        ({**DIGITS, "data": {"name": "cifar10", "path": "/nonexistent/cifar"}}, 1, "/nonexistent/cifar"),
        ({**DIGITS, "init": "/nonexistent/w.pt"}, 1, "/nonexistent/w.pt"),
        ({**DIGITS, "device": "cuda:7"}, 1, "cuda:7"),
    ],
)
def test_train_errors_are_one_line(tmp_path, cfg, code, needle):
    path = write_config(tmp_path, cfg)
    res = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == code, res.output
    assert needle in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_sample_errors(tmp_path):
    res = runner.invoke(app, ["sample", str(tmp_path / "missing.pt")])
    assert res.exit_code == 1 and "missing.pt: file not found" in res.stderr
    roll = write_config(tmp_path, ROLL)
    runner.invoke(app, ["train", str(roll), "--out", str(tmp_path / "r")])
    res = runner.invoke(app, ["sample", str(tmp_path / "r" / "checkpoint.pt"), "--steps", "3"])
    assert res.exit_code == 1 and "needs 2 mid times" in res.stderr


def test_help_documents_every_option():
    for cmd in ("train", "sample"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0
        assert "--out" in res.stdout
