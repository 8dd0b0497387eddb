"""Running a study's runs as Ray Tune trials, with a driver-side callback that writes the store.

Each trial is one `trainer.train()` call in its own run directory under the storage root; a
restarted trial resumes from that directory's checkpoint. Our content-hash run id is the key
everywhere (Ray's trial ids change when a trial is restarted). Workers never open the database:
they `tune.report` what the trainer reports, and the driver's `StoreCallback` writes it.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .store import Store, now

# Tune's report keys we add; everything else in a result dict is Tune's own bookkeeping.
KIND = "ect_kind"


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join a cluster at `address` (or $RAY_ADDRESS), else start a one-node Ray kept on loopback."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune console boxes: the driver draws its own table
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    # A local head must never listen on the network (ShadowRay, CVE-2023-48022): this keeps Ray 2.60 on 127.0.0.1.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False, log_to_driver=False)


# --------------------------------------------------------------------------- worker side


class TuneReporter:
    """The trainer's Reporter inside a Ray trial: forwards everything to the driver via tune.report."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def _send(self, kind: str, **values: Any) -> None:
        from ray import tune

        tune.report({KIND: kind, "run_id": self.run_id, "node": socket.gethostname(), **values})

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._send("metrics", step=step, values=dict(values))

    def evaluation(self, step: int, nfe: int, metric: str, value: float, extractor: str, num_samples: int,
                   sampler: str = "consistency", sampler_params: str = "{}", seed: int = 0) -> None:
        self._send("evaluation", step=step, nfe=nfe, metric=metric, value=value, extractor=extractor,
                   num_samples=num_samples, sampler=sampler, sampler_params=sampler_params, seed=seed)

    def checkpoint(self, step: int, path: Path) -> None:
        self._send("checkpoint", step=step, path=str(path))


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: train one run (resuming from its run directory) and report the outcome."""
    import torch

    from trainer.config import TrainConfig
    from trainer.loop import train

    job = config["job"]
    torch.set_num_threads(max(1, int(job["cpus"])))
    cfg = TrainConfig.from_json(job["config"])
    if job.get("init"):
        cfg = cfg.model_copy(update={"init": Path(job["init"])})
    reporter = TuneReporter(job["run_id"])
    start = time.perf_counter()
    result = train(cfg, Path(job["run_dir"]), reporter)
    reporter._send(
        "final", status=result.status, step=result.step, message=result.message,
        images_seen=result.images_seen, train_flops=result.train_flops,
        flops_per_sample=result.flops_per_sample, normalized_compute=result.normalized_compute,
        num_params=result.num_params,
        checkpoint=str(result.checkpoint) if result.checkpoint else None,
        wall_seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- driver side


@dataclass
class Job:
    """What a trial needs: plain data only (it is shipped to a worker)."""

    run_id: str
    label: str
    config: str  # TrainConfig JSON
    run_dir: str
    init: str | None
    cpus: float
    gpus: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_jobs(jobs: list[Job], store: Store, storage: Path, name: str, max_failures: int,
             on_change: Callable[[str, dict[str, Any]], None] | None = None) -> None:
    """Run `jobs` as Tune trials (one per job) and block until all have ended."""
    from ray import tune

    from .tune_callback import StoreCallback

    if not jobs:
        return
    resources = {"cpu": jobs[0].cpus, "gpu": jobs[0].gpus}
    tuner = tune.Tuner(
        tune.with_resources(run_trial, resources),
        param_space={"job": tune.grid_search([j.as_dict() for j in jobs])},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str((storage / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[StoreCallback(store, on_change)],
            verbose=0,
        ),
    )
    tuner.fit()
