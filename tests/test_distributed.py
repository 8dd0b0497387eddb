"""Data-parallel runs through real Ray Train (TorchTrainer, gloo on this CPU) inside a study's Tune trial.

The reference for every check is the same config trained in this process on one worker, with the
global batch of 64 in two micro-batches of 32: each rank's half is then computed exactly as one of
those micro-batches (same rows, same noise), and DDP's average of two gradients equals the sum of
the two halves (scaled by 1/2, exact in floating point), so the weights agree to the last bit.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import Store, database_url
from studies.spec import StudySpec, expand
from trainer.config import TrainConfig
from trainer.loop import train

runner = CliRunner()
pytestmark = pytest.mark.slow

BASE = {
    "data": {"name": "digits", "resolution": 8},
    "network": {"arch": "songunet", "model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "dropout": 0.0},
    "ect": {"mode": "tuning", "q": 2, "stages": 4},
    "optim": {"name": "adam", "lr": 1e-3},
    "schedule": {"batch_size": 64, "iterations": 20, "log_interval": 5},
    "eval": {"metric": None},
}


def with_schedule(**values: int) -> dict:
    return {**BASE, "schedule": {**BASE["schedule"], **values}}


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest per-tensor max |a - b| / max |b| over the floating-point weights."""
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item()
               for k in b if b[k].is_floating_point())


def reference(base: dict, tmp: Path) -> dict[str, torch.Tensor]:
    """The weights of `base` trained here, on one worker, in micro-batches of 32."""
    cfg = TrainConfig.model_validate({**base, "schedule": {**base["schedule"], "batch_per_device": 32}})
    torch.set_num_threads(1)
    result = train(cfg, tmp / "reference")
    return torch.load(result.checkpoint, weights_only=True)["net"]


def submit(tmp: Path, base: dict, name: str) -> tuple[str, Path, str]:
    """Write a 2-worker study; returns (db, storage, run id)."""
    spec = {"name": name, "base": base, "resources": {"workers": 2, "cpus_per_worker": 1}, "max_failures": 2}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    (run,) = expand(StudySpec.model_validate(spec))
    return str(path), tmp / "store", run.run_id


def run_study(spec: str, db: str, storage: Path):
    return runner.invoke(app, ["study", "run", spec, "--db", db, "--storage", str(storage)])


def _train_workers(raylet_pid: int) -> list[psutil.Process]:
    """The Ray Train rank processes of our own Ray instance (children of its raylet)."""
    procs = psutil.Process(raylet_pid).children(recursive=True)
    found = []
    for p in procs:
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()) or "RayTrainWorker" in p.name():
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_two_workers_reach_the_weights_of_one_even_when_a_rank_is_killed(tmp_path, ray_session):
    """One 2-worker run (a Ray Train start costs about 45 CPU-s, so one run checks both): a rank is killed after the
    first checkpoint, the trial is retried from it, and the weights still equal one worker's to the last bit."""
    import ray._private.worker as ray_worker

    base = with_schedule(iterations=100, log_interval=20, checkpoint_interval=20)
    spec, storage, run_id = submit(tmp_path, base, "ddp-kill")
    db = str(tmp_path / "ect.db")
    ckpt = storage.resolve() / "runs" / run_id / "checkpoint.pt"
    raylet = ray_worker._global_node.all_processes["raylet"][0].process.pid
    killed: list[int] = []

    def kill_a_rank_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ranks = _train_workers(raylet) if ckpt.exists() else []
            if len(ranks) == 2:
                os.kill(ranks[-1].pid, signal.SIGKILL)
                killed.append(ranks[-1].pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_rank_after_the_first_checkpoint, daemon=True)
    killer.start()
    res = run_study(spec, db, storage)
    killer.join(timeout=5)
    assert res.exit_code == 0, res.output
    assert killed, "no rank was killed (the run ended before its first checkpoint was seen)"
    store = Store(database_url(db))
    row = store.runs_frame("ddp-kill").iloc[0]
    assert row["status"] == "completed" and row["attempts"] == 2 and row["step"] == 100
    resumed = store.metrics_frame(run_id)["resumed_from"].dropna()
    assert len(resumed) == 1 and resumed.iloc[0] >= 20 and resumed.iloc[0] % 20 == 0  # from a checkpoint
    assert row["images_seen"] == 100 * 64  # both ranks' images, counted once across the retry
    logged = store.metrics_frame(run_id).dropna(subset=["loss"])
    assert set(logged["step"]) == {20, 40, 60, 80, 100}  # rank 0's reports, relayed by the trial
    weights = torch.load(row["checkpoint"], weights_only=True)["net"]
    diff = max_rel_diff(weights, reference(base, tmp_path))
    assert diff <= 1e-5, diff


def test_gpus_on_a_cluster_without_gpus_are_refused_before_anything_is_registered(tmp_path, ray_session):
    spec = {"name": "ddp-gpu", "base": BASE, "resources": {"workers": 2, "gpus_per_worker": 1}}
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(spec))
    db = str(tmp_path / "ect.db")
    res = run_study(str(path), db, tmp_path / "store")
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == ("error: resources.gpus_per_worker: 1 (run 'base') but the Ray cluster has no GPU")
    assert Store(database_url(db)).studies() == []
    assert not (tmp_path / "store").exists()
