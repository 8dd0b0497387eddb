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
                   sampler: str = "consistency") -> None:
        self._send("evaluation", step=step, nfe=nfe, metric=metric, value=value, extractor=extractor,
                   num_samples=num_samples, sampler=sampler)

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


def trial_resources(config: dict[str, Any]) -> Any:
    """Each trial's resource request, from its own job (so runs of one study may ask for different sizes)."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    job = config["job"]
    return resource_dict_to_pg_factory({"cpu": job["cpus"], "gpu": job["gpus"]})


class RayBackend:
    """One Tune experiment per submission: a searcher releases each run as the driver's `Work` allows.

    Retries resume from the run directory's checkpoint (`max_failures`); a stop reason from
    `work.poll()` stops every trial (their checkpoints stay in their run directories).
    """

    def __init__(self, store: Store, storage: Path, name: str, max_failures: int,
                 on_change: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.store, self.storage, self.name = store, storage, name
        self.max_failures, self.on_change = max_failures, on_change

    def run(self, work: Any) -> None:
        import ray
        from ray import tune

        from .tune_callback import DependencySearcher, StoreCallback, WorkCallback, WorkStopper

        if work.done():
            return
        # Tune keeps one trial pending at a time for a custom searcher, so trials' actors would start one
        # after another (seconds each on a loaded machine); as many pending trials as CPUs start them
        # together, at the price of fixing the order of runs released at the same time a little earlier.
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, int(ray.cluster_resources().get("CPU", 1)))))
        tuner = tune.Tuner(
            tune.with_resources(run_trial, trial_resources),
            tune_config=tune.TuneConfig(search_alg=DependencySearcher(work), num_samples=-1, reuse_actors=True),
            run_config=tune.RunConfig(
                name=self.name,
                storage_path=str((self.storage / "ray").resolve()),
                failure_config=tune.FailureConfig(max_failures=self.max_failures),
                callbacks=[StoreCallback(self.store, self.on_change), WorkCallback(work)],
                stop=WorkStopper(work),
                verbose=0,
            ),
        )
        tuner.fit()
