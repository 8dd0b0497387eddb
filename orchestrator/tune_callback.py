"""The driver-side Tune pieces: the callback that writes every trial's reports into the store, and
the searcher, callback and stopper that connect a Tune experiment to the driver's `Work`.

Kept in its own module (imported only when a study runs) so Tune pickles them by reference. None
of them pickles its state: the store, not Tune's experiment snapshot, is what a resume reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from ray import tune
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from .backend import Work
from .ray_backend import ERROR_FILE, KIND
from .store import Store, now

ERROR_LINES = 6  # how many of its last lines the store keeps


class StoreCallback(tune.Callback):
    """Maps Tune's trial reports and errors to store rows, keyed by our run id (attempts and final
    statuses are the driver's `Work`'s to write)."""

    def __init__(self, store: Store, on_change: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.store, self.on_change = store, on_change

    def __getstate__(self) -> dict:
        # Tune pickles its run config for experiment restore; a live database handle does not pickle.
        return {}

    def _changed(self, run_id: str, info: dict[str, Any]) -> None:
        if self.on_change is not None:
            self.on_change(run_id, info)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        kind, rid = result.get(KIND), _run_id(trial)
        if kind == "metrics":
            self.store.add_metrics(rid, result["step"], result["values"])
            self._changed(rid, {"step": result["step"], **result["values"]})
        elif kind == "evaluation":
            keys = ("step", "nfe", "metric", "value", "extractor", "num_samples", "sampler", "sampler_params", "seed")
            self.store.add_evaluation(rid, **{k: result[k] for k in keys})
        elif kind == "checkpoint":
            self.store.update_run(rid, checkpoint=result["path"], node=result["node"])
        elif kind == "disk_full":  # not retried: the driver's Work marks it failed; it waits for `resume` (and space)
            self.store.update_run(rid, finished_at=now(), error=result["message"])
        elif kind == "final":
            keys = ("step", "images_seen", "train_flops", "flops_per_sample", "normalized_compute",
                    "num_params", "checkpoint", "wall_seconds", "error_file")  # a run that could not start sends fewer
            self.store.update_run(rid, finished_at=now(), node=result["node"],
                                  error=result["message"] or None, **{k: result[k] for k in keys if k in result})
            self._changed(rid, {"step": result["step"]})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = _run_id(trial)
        error, path = keep_traceback(trial)
        self.store.update_run(rid, finished_at=now(), error=error, error_file=path)
        self._changed(rid, {"error": error})


def _run_id(trial: Any) -> str:
    return trial.config["job"]["run_id"]


def keep_traceback(trial: Any) -> tuple[str, str | None]:
    """Copy the trial's full traceback (Ray's error file: the worker, every frame, the exception) into
    `<run dir>/error.txt`; returns (its last lines, that path)."""
    path = getattr(trial, "error_file", None)
    text = Path(path).read_text(errors="replace") if path and Path(path).is_file() else ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Ray colours the worker's name
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "trial failed (no error text from Ray)", None
    target = Path(trial.config["job"]["run_dir"]) / ERROR_FILE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError:
        return "\n".join(lines[-ERROR_LINES:])[-2000:], path  # the run directory is unwritable: point at Ray's copy
    return "\n".join(lines[-ERROR_LINES:])[-2000:], str(target)


class WorkCallback(tune.Callback):
    """Tells the driver when a trial's attempt starts."""

    def __init__(self, work: Work) -> None:
        self.work = work

    def __getstate__(self) -> dict:
        return {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.work.started(_run_id(trial))


class WorkStopper(Stopper):
    """Polls the driver once per Tune loop step; a stop reason stops every trial of the experiment."""

    def __init__(self, work: Work) -> None:
        self.work = work

    def __getstate__(self) -> dict:
        return {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.work.poll() is not None


class DependencySearcher(Searcher):
    """Suggests the driver's next releasable run as a trial; waits (None) while runs wait on their
    parents or on another driver, and says FINISHED once the driver has nothing left or must stop. Tune
    asks again every loop step while fewer trials than its pending limit wait for resources (see
    RayBackend.run); with no trial at all it asks once a second in a loop of its own that calls no
    stopper, so the searcher polls the driver itself."""

    def __init__(self, work: Work) -> None:
        super().__init__()
        self.work = work
        self.trials: dict[str, str] = {}  # Tune trial id -> our run id

    def __getstate__(self) -> dict:
        return {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        stop = self.work.poll()
        job = None if stop else self.work.take(lambda cpus, gpus: True)  # Tune places trials where resources free up
        if job is None:
            return Searcher.FINISHED if stop or self.work.done() else None
        self.trials[trial_id] = job.run_id
        return {"job": job.as_dict()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        run_id = self.trials.pop(trial_id, None)
        if run_id is None:
            return
        if not error and result and result.get(KIND) == "final":
            self.work.ended(run_id, result["status"], {"message": result.get("message")})
        elif not error and result and result.get(KIND) == "disk_full":  # not retried on the still-full disk
            self.work.ended(run_id, "failed", {"message": result["message"]})
        else:
            self.work.ended(run_id, "failed", {"message": None if error else "trial ended without a final report"})

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the store holds each run's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the driver rebuilds its queue from the store."""
