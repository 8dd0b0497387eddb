"""The seam between the study driver and whatever runs its jobs (after submitit's Executor).

A backend starts jobs, learns when they end and stops them. Ray Tune pulls work rather than being
pushed it, so the seam is inverted: the driver hands the backend a `Work` (the queue of releasable
jobs plus hooks), and the backend takes a job whenever it has room, reports starts and ends, and
polls the driver every loop tick, stopping every job it runs once `poll` returns a stop reason.
Implementations: `orchestrator.ray_backend.RayBackend` (Tune trials) and `InProcessBackend` below.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .scheduling import DependencyQueue, Task


class JobLike(Protocol):
    """What a backend needs of a job: its run id and its resources."""

    run_id: str
    cpus: float
    gpus: float


Fits = Callable[[float, float], bool]  # (cpus, gpus) -> whether a job of that size fits now


class Work(Protocol):
    """The driver's side, as a backend sees it."""

    def take(self, fits: Fits) -> JobLike | None:
        """The next job to start (the driver has claimed it), or None if none is ready and fits now."""

    def done(self) -> bool:
        """True once nothing waits and nothing runs: the backend may return."""

    def started(self, run_id: str) -> None:
        """A job's attempt has started (called again for each retry)."""

    def ended(self, run_id: str, status: str, info: dict[str, Any]) -> None:
        """A job ended for good: `status` is the run's final status; `info` holds the message, if any."""

    def poll(self) -> str | None:
        """Called every loop tick; returns why to stop every job ('cancelled', 'interrupted'), or None."""


class Backend(Protocol):
    """Runs a study's jobs as `work` releases them; returns when `work.done()` or once `poll` says stop."""

    def run(self, work: Work) -> None: ...


@dataclass
class SimRecord:
    run_id: str
    start: float
    end: float
    status: str
    gpus: float


class InProcessBackend:
    """Runs jobs in this process on a simulated clock, with `cpus` and `gpus` of capacity.

    `execute(job)` runs (or models) a job and returns `(status, duration)`; the job then occupies its
    resources for `duration` simulated seconds. Jobs never overlap in real time, so this backend is
    for unit tests of the scheduling logic and for the scheduling benchmark, not for real studies.
    Any job that fits starts at once, the longest ready first (backfilling smaller ones around it).
    """

    def __init__(self, execute: Callable[[Any], tuple[str, float]], cpus: float, gpus: float = 0.0) -> None:
        self.execute, self.cpus, self.gpus = execute, cpus, gpus
        self.now = 0.0
        self.records: list[SimRecord] = []

    def run(self, work: Work) -> None:
        free = {"cpus": self.cpus, "gpus": self.gpus}
        running: list[tuple[float, int, Any, str]] = []
        seq = itertools.count()

        def fits(cpus: float, gpus: float) -> bool:
            return cpus <= free["cpus"] + 1e-9 and gpus <= free["gpus"] + 1e-9

        while work.poll() is None:
            while (job := work.take(fits)) is not None:
                work.started(job.run_id)
                status, duration = self.execute(job)
                free["cpus"] -= job.cpus
                free["gpus"] -= job.gpus
                heapq.heappush(running, (self.now + duration, next(seq), job, status))
                self.records.append(SimRecord(job.run_id, self.now, self.now + duration, status, job.gpus))
            if not running:
                if work.done():
                    return
                raise RuntimeError(f"jobs wait that can never start here ({self.cpus:g} CPUs, {self.gpus:g} GPUs)")
            if work.poll() is not None:  # a stop while jobs run stops them before they end
                return
            self.now, _, job, status = heapq.heappop(running)
            free["cpus"] += job.cpus
            free["gpus"] += job.gpus
            work.ended(job.run_id, status, {})


class QueueWork:
    """A `Work` over a bare `DependencyQueue` whose tasks are the jobs (no store): for simulations and tests."""

    def __init__(self, queue: DependencyQueue) -> None:
        self.queue = queue

    def take(self, fits: Fits) -> Task | None:
        return self.queue.take(lambda t: fits(t.cpus, t.gpus))

    def done(self) -> bool:
        return self.queue.done()

    def started(self, run_id: str) -> None:
        """Nothing to record."""

    def ended(self, run_id: str, status: str, info: dict[str, Any]) -> None:
        self.queue.end(run_id, status)

    def poll(self) -> str | None:
        return None
