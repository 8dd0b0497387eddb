"""A store holding the README's main study (the mini compute-scaling preset, its real run ids and configs) as if
it had run, written through the Store API in a second instead of trained in minutes.

Run facts follow the trainer's own rules (images = iterations x batch, FLOPs from the network's measured
forward FLOPs, compute in multiples of 12.8 M images); FDs follow known power laws FD = K * C^alpha per NFE,
times a fixed factor per training seed, near the README's measured values; training metrics are logged every
`log_interval` steps. No checkpoints are written (sample grids need trained models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from orchestrator.store import Store, database_url
from orchestrator.study_runner import register
from studies.spec import StudySpec, load_study
from trainer.config import TrainConfig
from trainer.flops import TUNING_BUDGET_IMAGES, step_flops
from trainer.loop import network_cost

PRESET = Path(__file__).resolve().parents[1] / "studies" / "presets" / "mini" / "compute_scaling.yaml"
LAWS = {1: (0.557, -0.571), 2: (1.52, -0.353)}  # NFE -> (K, alpha) of FD = K * C^alpha
SEED_FACTOR = {0: 1.0, 1: 1.08, 2: 0.93}
PRETRAINED = {(35, "heun"): 3.42, (1, "consistency"): 626.7, (2, "consistency"): 91.0}
EXTRACTOR, SAMPLES = "digits-cnn-v1", 2000


def expected_fd(nfe: int, compute: float, seed: int) -> float:
    k, alpha = LAWS[nfe]
    return k * compute ** alpha * SEED_FACTOR[seed]


def build(db_path: Path) -> tuple[Store, StudySpec]:
    """Register the preset in a new SQLite store at `db_path` and fill in every run as completed."""
    return build_study(db_path, load_study(PRESET), lambda cfg, nfe, compute: expected_fd(nfe, compute, cfg.seed))


def build_study(db_path: Path, spec: StudySpec, fd: Callable[[TrainConfig, int, float], float]
                ) -> tuple[Store, StudySpec]:
    """Register `spec` in the SQLite store at `db_path` and fill in every run as completed, each tuning run's
    FD at NFE 1 and 2 given by `fd(config, nfe, normalised compute)`; the pretraining gets `PRETRAINED`."""
    store = Store(database_url(str(db_path)))
    runs, _ = register(store, spec)
    for r in runs:
        cfg, tune = r.config, r.role != "pretrain"
        fps, num_params = network_cost(cfg)
        iters, batch = cfg.schedule.iterations, cfg.schedule.batch_size
        images = iters * batch
        for step in range(cfg.schedule.log_interval, iters + 1, cfg.schedule.log_interval):
            store.add_metrics(r.run_id, step, {"loss": 40.0 / (1 + step / 50), "lr": cfg.optim.lr,
                                               "train_flops": float(step_flops(step * batch, fps, tune))})
        compute = images / TUNING_BUDGET_IMAGES
        if tune:
            values = {(nfe, "consistency"): fd(cfg, nfe, compute) for nfe in LAWS}
        else:
            values = PRETRAINED
        for (nfe, sampler), value in values.items():
            store.add_evaluation(r.run_id, step=iters, nfe=nfe, metric="fd_digits", value=value,
                                 extractor=EXTRACTOR, num_samples=SAMPLES, sampler=sampler)
        store.update_run(r.run_id, status="completed", attempts=1, step=iters, images_seen=images,
                         train_flops=float(step_flops(images, fps, tune)), flops_per_sample=float(fps),
                         normalized_compute=compute, num_params=num_params,
                         wall_seconds=iters * 0.15, started_at="2026-12-01T10:00:00+00:00",
                         finished_at="2026-12-01T10:05:00+00:00")
    store.set_study_status(spec.name, "completed")
    return store, spec
