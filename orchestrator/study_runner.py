"""Submitting a study: register its runs in the store, then run what is not finished, each run as soon
as the run it starts from has completed.

A tuning run starts from its pretraining run's checkpoint. Finished runs (completed or diverged) are
never re-run; runs left `running` by a dead driver, failed, cancelled or interrupted runs are run
again and resume from their own checkpoints. The order is `scheduling.DependencyQueue`'s; what runs
the jobs is a `backend.Backend` (Ray Tune for studies, in-process for tests and the benchmark).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from studies.spec import RunSpec, StudySpec, dump_spec, expand

from .backend import Backend, Fits
from .ray_backend import Job
from .scheduling import DependencyQueue, Task
from .store import FINISHED, Store, StoreError, now

OnChange = Callable[[str, dict[str, Any]], None]
POLL_SECONDS = 2.0  # how often a driver reads the store for a cancel (a cancel stops trials within a few s)


def run_dir(storage: Path, run_id: str) -> Path:
    """Each run's directory: `<storage>/runs/<run id>`; run ids are hex digests, so it stays inside."""
    return storage.resolve() / "runs" / run_id


def adopt_run_dir(store: Store, storage: Path, run_id: str) -> Path:
    """The run's directory; one still named by a former id (store migration 0003) is renamed to it, and a stored
    checkpoint path that no longer exists (storage moved or renamed) is pointed at the directory's checkpoint."""
    target = run_dir(storage, run_id)
    run = store.run(run_id)
    if not target.exists():
        own = [Path(run.checkpoint).parent] if run.checkpoint else []
        former = own + [run_dir(storage, old) for old in store.former_ids(run_id)]
        source = next((p for p in former if p.parent == target.parent and p.is_dir()), None)
        if source is not None:
            source.rename(target)
    from trainer.checkpoint import CHECKPOINT_NAME  # torch, imported where a run is adopted, not by `ect --help`

    checkpoint = target / CHECKPOINT_NAME
    if run.checkpoint and run.checkpoint != str(checkpoint) and not Path(run.checkpoint).exists() \
            and checkpoint.is_file():
        store.update_run(run_id, checkpoint=str(checkpoint))
    return target


def register(store: Store, spec: StudySpec) -> tuple[list[RunSpec], list[str]]:
    runs = expand(spec)
    return runs, store.register_study(spec, dump_spec(spec), runs)


def plan(store: Store | None, spec: StudySpec) -> list[dict[str, Any]]:
    """What a submission would do, without writing: each run with its stored status (or 'new')."""
    out = []
    for r in expand(spec):
        try:
            status = store.run(r.run_id).status if store is not None else "new"
        except StoreError:
            status = "new"
        out.append({"run_id": r.run_id, "label": r.label, "role": r.role, "status": status,
                    "iterations": r.config.schedule.iterations, "batch_size": r.config.schedule.batch_size})
    return out


class StopRequest:
    """Why a driver must stop its trials: a signal (SIGINT / SIGTERM) or a cancel seen in the store."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.signum: int | None = None

    def set(self, reason: str, signum: int | None = None) -> None:
        if self.reason is None:
            self.reason, self.signum = reason, signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""
        return 128 + (self.signum or 0)

    @contextmanager
    def on_signals(self) -> Iterator["StopRequest"]:
        """SIGINT and SIGTERM ask for a stop; a second one raises KeyboardInterrupt (a forced stop).

        Install after `ray.init` (Ray's driver has its own SIGTERM handler, which exits at once) and
        with Tune's own SIGINT handler off, so that one handler decides what a signal means.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

        def handler(signum: int, _frame: Any) -> None:
            if self.reason is not None:
                raise KeyboardInterrupt
            self.set("interrupted", signum)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class StudyWork:
    """The driver's `Work` for one study: releases its unfinished runs in dependency order, records
    attempts and final statuses in the store, and notices a cancel of the study in the store."""

    def __init__(self, store: Store, spec: StudySpec, runs: list[RunSpec], storage: Path, stop: StopRequest,
                 on_change: OnChange | None = None, on_tick: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.study, self.storage, self.stop = store, spec.name, storage, stop
        self.on_change, self.on_tick, self.clock = on_change, on_tick, clock
        self.specs = {r.run_id: r for r in runs}
        status = {r.run_id: store.run(r.run_id).status for r in runs}
        todo = [r for r in runs if status[r.run_id] not in FINISHED]
        self.queue = DependencyQueue([_task(r) for r in todo], {k: v for k, v in status.items() if v in FINISHED})
        self.last_poll = -POLL_SECONDS
        self._fail(self.queue.blocked)

    def _changed(self, run_id: str, info: dict[str, Any]) -> None:
        if self.on_change is not None:
            self.on_change(run_id, info)

    def _fail(self, blocked: dict[str, str]) -> None:
        for rid, error in blocked.items():
            self.store.update_run(rid, status="failed", error=error, finished_at=now())
            self._changed(rid, {"status": "failed", "error": error})

    def take(self, fits: Fits) -> Job | None:
        """The longest ready run that fits, with the checkpoint of the run it starts from."""
        while self.stop.reason is None and (task := self.queue.take(lambda t: fits(t.cpus, t.gpus))) is not None:
            r = self.specs[task.run_id]
            init = None
            if r.depends_on is not None:
                adopt_run_dir(self.store, self.storage, r.depends_on)
                init = self.store.run(r.depends_on).checkpoint
                if not init:
                    self.ended(r.run_id, "failed", {"message": f"its pretraining run {r.depends_on} has no checkpoint"})
                    continue
            return Job(run_id=r.run_id, label=r.label, config=r.config.model_dump_json(),
                       run_dir=str(adopt_run_dir(self.store, self.storage, r.run_id)), init=init,
                       workers=r.resources.workers, cpus_per_worker=r.resources.cpus_per_worker,
                       gpus_per_worker=r.resources.gpus_per_worker)
        return None

    def done(self) -> bool:
        return self.queue.done()

    def started(self, run_id: str) -> None:
        attempts = self.store.run(run_id).attempts + 1
        self.store.update_run(run_id, status="running", attempts=attempts, started_at=now(), error=None,
                              error_file=None, finished_at=None)
        self._changed(run_id, {"status": "running", "attempts": attempts})

    def ended(self, run_id: str, status: str, info: dict[str, Any]) -> None:
        if status == "failed" and self.stop_reason() is not None:
            status = self.stop.reason  # e.g. a worker that got the terminal's Ctrl-C too: interrupted, not failed
        fields: dict[str, Any] = {"status": status, "finished_at": now()}
        if info.get("message"):
            fields["error"] = info["message"]
        self.store.update_run(run_id, **fields)
        self._changed(run_id, {"status": status, **({"error": info["message"]} if info.get("message") else {})})
        self._fail(self.queue.end(run_id, status))

    def stop_reason(self) -> str | None:
        """Why this driver stops; a signal that arrives because the study was cancelled (`ect study cancel`
        stops a submitted driver's Ray Job, which sends SIGTERM) is a cancel, not an interruption."""
        if self.stop.reason == "interrupted" and self.store.study(self.study).status == "cancelled":
            self.stop.reason = "cancelled"
        return self.stop.reason

    def poll(self) -> str | None:
        """Every POLL_SECONDS: read the study's status (a cancel stops this driver), beat the heartbeat of
        the runs in flight (`ect study status` shows a run whose heartbeat is old as stale) and tick the view."""
        if self.stop.reason is None and self.clock() - self.last_poll >= POLL_SECONDS:
            self.last_poll = self.clock()
            if self.store.study(self.study).status == "cancelled":
                self.stop.set("cancelled")
            beat = datetime.now(timezone.utc)
            for rid in self.queue.in_flight:
                self.store.update_run(rid, heartbeat_at=beat)
            if self.on_tick is not None:
                self.on_tick()
        return self.stop.reason


def _task(r: RunSpec) -> Task:
    # longest first: cost is the images the run trains on
    return Task(r.run_id, r.depends_on, r.config.schedule.iterations * r.config.schedule.batch_size,
                r.resources.cpus, r.resources.gpus)


def execute(store: Store, spec: StudySpec, storage: Path, backend: Backend, stop: StopRequest | None = None,
            on_change: OnChange | None = None, on_tick: Callable[[], None] | None = None) -> dict[str, int]:
    """Run every unfinished run of a registered study; returns a count of runs per final status.

    After a stop (cancel or signal) every run the driver had started is marked with the stop's reason
    (`cancelled` / `interrupted`; both resumable), and so is the study.
    """
    stop = stop or StopRequest()
    runs = expand(spec)
    store.set_study_status(spec.name, "running")
    work = StudyWork(store, spec, runs, storage, stop, on_change, on_tick)
    backend.run(work)
    work.stop_reason()
    for rid in sorted(work.queue.in_flight):
        status = stop.reason or "failed"  # without a stop: a trial that ended without the backend noticing
        store.update_run(rid, status=status, finished_at=now(),
                         **({} if stop.reason else {"error": "trial ended without a final report"}))
        work._changed(rid, {"status": status})
    counts: dict[str, int] = {}
    for r in runs:
        status = store.run(r.run_id).status
        counts[status] = counts.get(status, 0) + 1
    final = stop.reason or ("completed" if set(counts) <= set(FINISHED) else "incomplete")
    store.set_study_status(spec.name, final)
    return counts
