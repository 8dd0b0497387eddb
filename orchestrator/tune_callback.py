"""The driver-side Tune callback that writes every trial's reports into the store.

Kept in its own module (imported only when a study runs) so Tune pickles it by reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ray import tune

from .ray_backend import KIND
from .store import Store, now


class StoreCallback(tune.Callback):
    """Maps Tune's trial events to store rows, keyed by our run id."""

    def __init__(self, store: Store, on_change: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.store, self.on_change = store, on_change

    def __getstate__(self) -> dict:
        # Tune pickles its run config for experiment restore; a live database handle does not pickle.
        return {}

    def _changed(self, run_id: str, info: dict[str, Any]) -> None:
        if self.on_change is not None:
            self.on_change(run_id, info)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Called for the first start and for every restart after a failure: one attempt each."""
        rid = _run_id(trial)
        attempts = self.store.run(rid).attempts + 1
        self.store.update_run(rid, status="running", attempts=attempts, started_at=now(), error=None)
        self._changed(rid, {"status": "running", "attempts": attempts})

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
        elif kind == "final":
            keys = ("step", "images_seen", "train_flops", "flops_per_sample", "normalized_compute",
                    "num_params", "checkpoint", "wall_seconds")
            self.store.update_run(rid, status=result["status"], finished_at=now(), node=result["node"],
                                  error=result["message"] or None, **{k: result[k] for k in keys})
            self._changed(rid, {"status": result["status"], "step": result["step"]})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = _run_id(trial)
        self.store.update_run(rid, status="failed", finished_at=now(), error=_error_text(trial))
        self._changed(rid, {"status": "failed"})


def _run_id(trial: Any) -> str:
    return trial.config["job"]["run_id"]


def _error_text(trial: Any) -> str:
    """The last line of the trial's traceback (the exception), or a generic message."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:2000]
    return "trial failed (no error text from Ray)"
