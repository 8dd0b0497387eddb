"""Mirroring a study into an experiment tracker (MLflow), driven by the store's contents.

A `Tracker` replays what the store holds and skips what the tracker already has, so the same `sync`
serves the live path (the driver syncs changed runs every few seconds from a background thread),
the end of a study, and `ect study sync-tracking NAME` after a tracking server was down. Only the
driver talks to the tracker; workers keep reporting through Tune. A tracker that fails never fails
the study: the live path prints one warning line and keeps going.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from rich.console import Console

from studies.spec import parse_tracking
from trainer.config import ConfigError

from .store import FINISHED, Store, flatten, redact

if TYPE_CHECKING:
    import pandas as pd

Hook = Callable[[str, dict[str, Any]], None]
# MLflow status of a run per store status; the store's own status is also a tag (diverged is FAILED here)
RUN_STATUS = {"completed": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "cancelled": "KILLED",
              "running": "RUNNING", "pending": "SCHEDULED"}
STUDY_STATUS = {"completed": "FINISHED", "incomplete": "FAILED", "cancelled": "KILLED", "running": "RUNNING",
                "pending": "SCHEDULED"}
FACTS = ("images_seen", "normalized_compute", "num_params", "flops_per_sample", "wall_seconds")


@dataclass
class SyncCounts:
    """What one sync uploaded (all zero when the tracker already had everything)."""

    runs_created: int = 0
    params: int = 0
    metric_points: int = 0
    statuses: int = 0
    artifacts: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.runs_created} runs created, {self.params} params, {self.metric_points} metric points, "
                f"{self.statuses} statuses, {len(self.artifacts)} artifacts")


class Tracker(Protocol):
    """An experiment tracker that mirrors the store: `sync` uploads what it lacks, idempotently."""

    uri: str

    def sync(self, store: Store, study: str, run_ids: set[str] | None = None, report: bool = True) -> SyncCounts:
        """Upload the study's runs (only `run_ids` when given); with `report`, the study's figures and report."""


def tracker_for(target: str | None) -> Tracker | None:
    """The tracker a `--track` value or a study's `tracking:` names (None: no tracking); usage errors raise ConfigError."""
    if target is None:
        return None
    try:
        _, uri = parse_tracking(target)  # MLflow is the one tracker so far
    except ValueError as e:
        raise ConfigError(f"--track {e}") from None
    return MlflowTracker(uri)


def metric_name(metric: str, nfe: int, sampler: str) -> str:
    """An evaluation's own metric name: `fd_digits/nfe2` (consistency sampling), `fd_digits/heun35`."""
    return f"{metric}/{'nfe' if sampler == 'consistency' else sampler}{int(nfe)}"


def _ms(when: datetime | str | None) -> int | None:
    """MLflow's epoch milliseconds from a store timestamp (an aware datetime; ISO text in older rows); None for none
    (also pandas' NaT, which a frame holds for a run not started or not finished yet)."""
    if when is None or when != when:
        return None
    return int((when if isinstance(when, datetime) else datetime.fromisoformat(when)).timestamp() * 1000)


def _param_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def desired_points(run: Any, metrics: pd.DataFrame, evals: pd.DataFrame) -> dict[str, dict[int, float]]:
    """Everything a run's tracker entry should show, by metric name and step: training metrics, each
    evaluation under its own name, and the run's facts (compute, parameters) at its last step once finished."""
    points: dict[str, dict[int, float]] = {}
    if len(metrics):
        for row in metrics.melt(id_vars="step", var_name="name").dropna().itertuples():
            points.setdefault(str(row.name), {})[int(row.step)] = float(row.value)
    for row in evals.itertuples():
        points.setdefault(metric_name(row.metric, row.nfe, row.sampler), {})[int(row.step)] = float(row.value)
    if run.status in FINISHED:
        for fact in FACTS:
            value = getattr(run, fact)
            if value is not None and value == value:
                points.setdefault(fact, {})[int(run.step)] = float(value)
    return points


class MlflowTracker:
    """One MLflow experiment per study (named after it): a parent run for the study, one nested run per
    ECT run (tag `ect.run_id`), every resolved config key as a param, metrics by training step, and the
    study's figures and report.json as the parent's artifacts."""

    def __init__(self, uri: str | None) -> None:
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ConfigError("--track mlflow: MLflow is not installed here (pip install 'ect-scaling[mlflow]')") from None
        # a tracker that is down must not slow the study: fail fast, the next sync retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no line per run on the study's console
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri or self.client.tracking_uri
        self._lock = threading.Lock()  # one sync at a time (live thread, final sync)

    def sync(self, store: Store, study: str, run_ids: set[str] | None = None, report: bool = True) -> SyncCounts:
        with self._lock:
            counts = SyncCounts()
            record = store.study(study)
            exp = self._experiment(study)
            existing = self._existing(exp, study)
            parent = existing.pop("", None) or self._create(
                exp, study, study, None, {"ect.role": "study", "ect.kind": record.kind}, _ms(record.created_at), counts)
            runs = store.runs_frame(study).drop_duplicates("run_id")
            if run_ids is not None:
                runs = runs[runs["run_id"].isin(run_ids)]
            evals = store.evaluations_frame(study)
            for run in runs.itertuples():
                child = existing.get(run.run_id) or self._create(
                    exp, study, run.label, parent.info.run_id, {"ect.run_id": run.run_id, "ect.role": run.role},
                    _ms(run.started_at if run.started_at == run.started_at else run.created_at), counts)
                self._sync_run(store, child, run, evals[evals["run_id"] == run.run_id], counts)
            self._status(parent, STUDY_STATUS.get(record.status, "RUNNING"), None, counts)
            if report and record.status in ("completed", "incomplete"):
                self._report(store, study, parent, counts)
            return counts

    def _experiment(self, study: str) -> str:
        exp = self.client.get_experiment_by_name(study)
        return exp.experiment_id if exp is not None else self.client.create_experiment(study, tags={"ect.study": study})

    def _existing(self, exp: str, study: str) -> dict[str, Any]:
        """The experiment's runs of this study by ECT run id ('' for the study's parent run)."""
        out, token = {}, None
        while True:
            page = self.client.search_runs([exp], f"tags.`ect.study` = '{study}'", max_results=1000, page_token=token)
            for r in page:
                out[r.data.tags.get("ect.run_id", "")] = r
            token = page.token
            if not token:
                return out

    def _create(self, exp: str, study: str, name: str, parent: str | None, tags: dict[str, str], start: int | None,
                counts: SyncCounts) -> Any:
        tags = {"ect.study": study, **tags, **({"mlflow.parentRunId": parent} if parent else {})}
        counts.runs_created += 1
        return self.client.create_run(exp, start_time=start, tags=tags, run_name=name)

    def _sync_run(self, store: Store, child: Any, run: Any, evals: pd.DataFrame, counts: SyncCounts) -> None:
        from mlflow.entities import Metric, Param

        rid = child.info.run_id
        have = child.data.params
        config = flatten(json.loads(store.run(run.run_id).config_json))
        params = [Param(k, _param_value(v)) for k, v in config.items() if k not in have]
        points = desired_points(run, store.metrics_frame(run.run_id), evals)
        now = int(datetime.now().timestamp() * 1000)
        metrics = []
        for name, by_step in points.items():
            logged = {m.step for m in self.client.get_metric_history(rid, name)} if name in child.data.metrics else set()
            metrics += [Metric(name, value, now, step) for step, value in sorted(by_step.items()) if step not in logged]
        if params or metrics:
            self.client.log_batch(rid, metrics=metrics, params=params)
        counts.params += len(params)
        counts.metric_points += len(metrics)
        if child.data.tags.get("ect.status") != run.status:
            self.client.set_tag(rid, "ect.status", run.status)
        self._status(child, RUN_STATUS[run.status], _ms(run.finished_at), counts)

    def _status(self, mlflow_run: Any, status: str, end: int | None, counts: SyncCounts) -> None:
        if mlflow_run.info.status == status:
            return
        if status in ("RUNNING", "SCHEDULED"):
            self.client.update_run(mlflow_run.info.run_id, status=status)
        else:
            self.client.set_terminated(mlflow_run.info.run_id, status=status, end_time=end)
        counts.statuses += 1

    def _report(self, store: Store, study: str, parent: Any, counts: SyncCounts) -> None:
        """The study's figures, report.json and runs.csv (`ect study report --out`), uploaded when the study's
        results changed since the last upload (a digest of every run's status, step and evaluations)."""
        from .cli_study import write_report

        digest = _results_digest(store, study)
        if parent.data.tags.get("ect.report_digest") == digest:
            return
        with tempfile.TemporaryDirectory(prefix="ect-report-") as tmp:
            try:
                written = write_report(store, study, Path(tmp))
            except ValueError:  # nothing evaluated yet (every run failed): no report to upload
                return
            self.client.log_artifacts(parent.info.run_id, tmp)
        self.client.set_tag(parent.info.run_id, "ect.report_digest", digest)
        counts.artifacts += [p.name for p in written]


def _results_digest(store: Store, study: str) -> str:
    runs = store.runs_frame(study)[["run_id", "status", "step"]].sort_values("run_id")
    evals = store.evaluations_frame(study)
    text = runs.to_json(orient="records") + evals.sort_values(list(evals.columns[:6])).to_json(orient="records")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LiveTracking:
    """The driver's hook: `changed(run_id, info)` (an `on_change` callback) marks a run; a background thread
    syncs the marked runs every `interval` seconds, and `close()` syncs the whole study with its report.
    A failing tracker prints one warning line for the study and is retried at the next interval."""

    def __init__(self, tracker: Tracker, store: Store, study: str, console: Console, interval: float = 10.0) -> None:
        self.tracker, self.store, self.study, self.console, self.interval = tracker, store, study, console, interval
        self._pending: set[str] = set()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._loop, name="ect-tracking", daemon=True)
        self._thread.start()

    def changed(self, run_id: str, info: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._pending.add(run_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids, self._pending = self._pending, set()
            if ids and not self._sync(ids, report=False):
                with self._lock:
                    self._pending |= ids

    def _sync(self, run_ids: set[str] | None, report: bool) -> bool:
        try:
            self.tracker.sync(self.store, self.study, run_ids, report=report)
        except Exception as e:  # the tracker's failures (network, server errors) must never stop a study
            if not self._warned:
                self._warned = True
                reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                self.console.print(f"[yellow]warning:[/] tracking at {redact(self.tracker.uri)} failed ({reason}); the "
                                   f"study goes on, `ect study sync-tracking {self.study}` uploads it later",
                                   highlight=False, soft_wrap=True)
            return False
        return True

    def close(self) -> bool:
        """Stop the thread and sync the whole study with its report; False if the tracker is down (warned)."""
        self._stop.set()
        self._thread.join()
        return self._sync(None, report=True)


@contextmanager
def live_tracking(tracker: Tracker | None, store: Store, study: str, console: Console) -> Iterator[Hook]:
    """An `on_change` hook that mirrors the study into `tracker` while it runs (a no-op without one)."""
    if tracker is None:
        yield lambda run_id, info: None
        return
    live = LiveTracking(tracker, store, study, console)
    try:
        yield live.changed
    finally:
        if live.close():
            console.print(f"tracking: study {study} synced to {redact(tracker.uri)}", highlight=False, soft_wrap=True)


def fan_out(*hooks: Hook | None) -> Hook:
    """One `on_change` hook that calls each of `hooks` in turn."""
    active = [h for h in hooks if h is not None]

    def hook(run_id: str, info: dict[str, Any]) -> None:
        for h in active:
            h(run_id, info)

    return hook
