"""Running a study's runs as Ray Tune trials, with a driver-side callback that writes the store.

Each trial is one `trainer.train()` call in its own run directory under the storage root; a
restarted trial resumes from that directory's checkpoint. Our content-hash run id is the key
everywhere (Ray's trial ids change when a trial is restarted). Workers never open the database:
they `tune.report` what the trainer reports, and the driver's `StoreCallback` writes it.

A run with `workers > 1` is still one trial: the trial launches a Ray Train `TorchTrainer` (DDP,
gloo on CPUs, NCCL on GPUs) whose rank 0 sends its reports through a queue that the trial relays
to Tune. A failed rank fails the trial, and Tune retries it from the run's checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import psutil

from .diskfull import disk_full_message, is_disk_full

if TYPE_CHECKING:  # the driver's side only: a trial unpickles this module and must not pay for SQLAlchemy and Alembic
    from .store import Store

# Tune's report keys we add; everything else in a result dict is Tune's own bookkeeping.
KIND = "ect_kind"
ERROR_FILE = "error.txt"  # the full traceback of a run's last failure, in its run directory
# What the trial of a multi-worker run reserves for itself: it only drives the Train workers, which
# get their CPUs and GPUs in Train's own placement group (a CPU here would not leave room for them).
DRIVER_MEMORY = 256 * 1024**2
START_ATTEMPTS = 3  # starts of a local Ray: on a loaded machine its node can miss Ray's start-up deadline


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None,
             dashboard: bool = False) -> str | None:
    """Join a cluster at `address` (or $RAY_ADDRESS), else start a one-node Ray kept on loopback, with its
    dashboard on 127.0.0.1 if asked; returns the dashboard's URL when this call started one."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune console boxes: the driver draws its own table
    # No Tune CSV/JSON/TensorBoard files: Tune's TensorBoard logger plots against report count and merges every
    # evaluation into one tag, and the store holds everything they would (read by Tuner.fit, in this process).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # ...so Tune's own result table, built from those files when fit() returns, has nothing to read: not worth a warning
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return None
    # A local head must never listen on the network (ShadowRay, CVE-2023-48022): this keeps Ray 2.60 on 127.0.0.1.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Ray starts its workers at nice 15: on a shared machine any other process would starve our trials
    os.environ.setdefault("RAY_worker_niceness", "0")
    # OpenMP threads that sleep instead of spinning at barriers: a 2-thread pretraining step took 17 s (spinning)
    # instead of 0.6 s beside other busy processes; workers inherit this before they import torch
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Ray prestarts one idle worker per CPU for no job in particular; a trial's actor never takes one (it starts a
    # worker of the driver's job), so they only cost a process start each and about 0.8 CPU-s a minute while idle
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    for attempt in range(1, START_ATTEMPTS + 1):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            ctx = ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=dashboard,
                           dashboard_host="127.0.0.1", log_to_driver=False)
            return f"http://{ctx.dashboard_url}" if dashboard and ctx.dashboard_url else None
        except Exception as e:  # Ray 2.60 raises a bare Exception when its node misses a fixed 30 s start-up deadline
            if "timed out during startup" not in str(e) or attempt == START_ATTEMPTS:
                raise
        for child in psutil.Process().children(recursive=True):  # the half-started node of that attempt
            if child.pid not in before:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        time.sleep(5 * 2 ** (attempt - 1))
    return None


# --------------------------------------------------------------------------- worker side


def _tune_report(message: dict[str, Any]) -> None:
    from ray import tune

    tune.report(message)


class TuneReporter:
    """The trainer's Reporter inside a Ray trial: forwards everything to the driver via tune.report
    (or, on rank 0 of a multi-worker run, through `send` to the trial that relays it)."""

    def __init__(self, run_id: str, send: Callable[[dict[str, Any]], None] = _tune_report):
        self.run_id, self.send = run_id, send

    def _send(self, kind: str, **values: Any) -> None:
        self.send({KIND: kind, "run_id": self.run_id, "node": socket.gethostname(), **values})

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
    job = config["job"]
    if job["workers"] == 1:
        _train_job(job, TuneReporter(job["run_id"]))
    else:
        train_distributed(job, _tune_report)


def _train_job(job: dict[str, Any], reporter: TuneReporter) -> None:
    """Train a job's run in this process (one rank of it under Train) and report the outcome."""
    import torch

    from trainer import distributed
    from trainer.config import TrainConfig
    from trainer.loop import SetupError, train

    torch.set_num_threads(max(1, int(job["cpus_per_worker"])))
    cfg = TrainConfig.from_json(job["config"])
    if job.get("init"):
        cfg = cfg.model_copy(update={"init": Path(job["init"])})
    start = time.perf_counter()
    try:
        result = train(cfg, Path(job["run_dir"]), reporter)
    except SetupError as e:  # deterministic: the same inputs fail the same way, so the run fails without a retry
        ranks = distributed.current()
        if ranks.is_main:
            reporter._send("final", status="failed", step=0, message=str(e),
                           error_file=write_traceback(Path(job["run_dir"]), e))
        if ranks.world > 1:
            raise  # ends every rank's training (train_distributed sees the failed final report and does not raise)
        return
    except Exception as e:  # a full disk ends the trial without a retry on the same disk (see diskfull.py)
        if not is_disk_full(e):
            raise
        reporter._send("disk_full", message=disk_full_message(job["run_dir"]))
        return
    if not distributed.current().is_main:  # rank 0 reports the run's outcome
        return
    reporter._send(
        "final", status=result.status, step=result.step, message=result.message,
        images_seen=result.images_seen, train_flops=result.train_flops,
        flops_per_sample=result.flops_per_sample, normalized_compute=result.normalized_compute,
        num_params=result.num_params,
        checkpoint=str(result.checkpoint) if result.checkpoint else None,
        wall_seconds=time.perf_counter() - start, final_loss=result.final_loss,
    )


def write_traceback(run_dir: Path, error: BaseException) -> str | None:
    """Write an exception's full traceback to `<run dir>/error.txt`; its path, or None if it cannot be written."""
    import traceback

    target = run_dir / ERROR_FILE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(traceback.format_exception(error)))
    except OSError:
        return None
    return str(target)


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One rank of a multi-worker run, inside Ray Train (which set up the process group)."""
    queue = loop_config["queue"]
    _train_job(loop_config["job"], TuneReporter(loop_config["job"]["run_id"], send=queue.put))


def train_distributed(job: dict[str, Any], relay: Callable[[dict[str, Any]], None]) -> None:
    """Run a job on `workers` ranks with Ray Train's TorchTrainer; rank 0's reports go to `relay`
    (tune.report inside a trial) from the calling thread, the last one being the "final" outcome.

    Train retries nothing itself (max_failures 0): a failed rank fails this trial, and Tune's retry
    resumes every rank from the run's one checkpoint.
    """
    from ray import train as ray_train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue

    gpus = float(job["gpus_per_worker"])
    queue = Queue(actor_options={"num_cpus": 0})
    per_worker = {"CPU": float(job["cpus_per_worker"]), **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"job": job, "queue": queue},
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ray_train.ScalingConfig(num_workers=int(job["workers"]), use_gpu=bool(gpus),
                                               resources_per_worker=per_worker),
        run_config=ray_train.RunConfig(
            name=f"{job['run_id']}-{uuid.uuid4().hex[:8]}",
            storage_path=str(Path(job["run_dir"]) / "ray_train"),
            failure_config=ray_train.FailureConfig(max_failures=0),
        ),
    )
    failure: list[BaseException] = []
    done = threading.Event()
    failed_setup: list[dict[str, Any]] = []  # rank 0's "final" report of a run that could not start

    def forward(message: dict[str, Any]) -> None:
        if message.get(KIND) == "final" and message.get("status") == "failed":
            failed_setup.append(message)
        relay(message)

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as e:  # re-raised in the trial's thread below
            failure.append(e)
        finally:
            done.set()

    threading.Thread(target=fit, name="ect-train-fit", daemon=True).start()
    try:
        while True:
            finished = done.is_set()  # read before draining, so no report sent before the end is left behind
            try:
                while True:
                    forward(queue.get(timeout=0.5))
            except Empty:
                pass
            if finished:
                break
    finally:
        queue.shutdown()  # the trial's actor may be reused for the next trial: do not leave queues behind
    if failure and not failed_setup:
        raise failure[0]


# --------------------------------------------------------------------------- driver side


@dataclass
class Job:
    """What a trial needs: plain data only (it is shipped to a worker)."""

    run_id: str
    label: str
    config: str  # TrainConfig JSON
    run_dir: str
    init: str | None
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    @property
    def cpus(self) -> float:
        """CPUs of the whole run, all workers together (the backend's view of its size)."""
        return self.workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def trial_name(job: Job | dict[str, Any]) -> str:
    """A readable Tune trial name (and trial directory): the run's label and run-id prefix, `budget-2e3_seed0-14cfea70`."""
    job = job if isinstance(job, dict) else job.as_dict()
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", job["label"])[:80]  # it is also a directory name: no '/'
    return f"{label}-{job['run_id'][:8]}"


def trial_name_of(trial: Any) -> str:
    """`trial_name` of a Tune trial, for TuneConfig(trial_name_creator=..., trial_dirname_creator=...)."""
    return trial_name(trial.config["job"])


def train_on_local_workers(config_json: str, run_dir: Path, workers: int, reporter: Any) -> dict[str, Any]:
    """`ect train --workers N`: one run on N ranks of a local Ray (one GPU each when there are N GPUs,
    else the CPUs shared out); rank 0's reports go to `reporter`. Returns the run's final report."""
    import torch

    init_ray(None)
    gpus = 1.0 if torch.cuda.device_count() >= workers else 0.0
    job = {"run_id": run_dir.name, "config": config_json, "run_dir": str(run_dir.resolve()), "init": None,
           "workers": workers, "cpus_per_worker": max(1, (os.cpu_count() or 1) // workers), "gpus_per_worker": gpus}
    final: dict[str, Any] = {}

    def relay(message: dict[str, Any]) -> None:
        kind = message[KIND]
        if kind == "metrics":
            reporter.metrics(message["step"], message["values"])
        elif kind == "evaluation":
            reporter.evaluation(*(message[k] for k in ("step", "nfe", "metric", "value", "extractor", "num_samples",
                                                       "sampler")))
        elif kind == "checkpoint":
            reporter.checkpoint(message["step"], Path(message["path"]))
        elif kind == "final":
            final.update(message)

    try:
        train_distributed(job, relay)
    except Exception as e:  # Ray Train's errors carry the rank's traceback: keep its last line
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        raise RuntimeError(f"training on {workers} workers failed: {lines[-1] if lines else type(e).__name__}") from None
    return final


def check_gpus(runs: list[Any], address: str | None, num_cpus: int | None) -> None:
    """Refuse runs that ask for GPUs when the Ray cluster has none, before anything is registered."""
    from trainer.config import ConfigError

    wanting = [r for r in runs if r.resources.gpus_per_worker > 0]
    if not wanting:
        return
    import ray

    init_ray(address, num_cpus=num_cpus)
    if not ray.cluster_resources().get("GPU", 0):
        r = wanting[0]
        raise ConfigError(f"resources.gpus_per_worker: {r.resources.gpus_per_worker:g} (run {r.label!r}) "
                          "but the Ray cluster has no GPU")


def trial_resources(config: dict[str, Any]) -> Any:
    """A trial's placement: the run's CPUs/GPUs for one worker; for several, only the driver's memory
    (Ray Train reserves workers x (cpus_per_worker, gpus_per_worker) for the ranks)."""
    from ray import tune

    job = config["job"]
    if job["workers"] == 1:
        return tune.PlacementGroupFactory([{"CPU": job["cpus_per_worker"], "GPU": job["gpus_per_worker"]}])
    return tune.PlacementGroupFactory([{"memory": DRIVER_MEMORY}])


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
            tune_config=tune.TuneConfig(search_alg=DependencySearcher(work), num_samples=-1, reuse_actors=True,
                                        trial_name_creator=trial_name_of, trial_dirname_creator=trial_name_of),
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
