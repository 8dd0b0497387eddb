"""Which run may start next: the dependency policy every backend shares (pure: no Ray, no store).

A run is ready once the run it starts from has completed; among ready runs the longest goes first
(with several runs at a time, the last to start is then a short one). A run whose parent ended in
any other way (failed, diverged, cancelled) is blocked, and so are its own descendants, each with
an error naming the parent. Runs already finished before the queue was built are never released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

COMPLETED = "completed"


@dataclass(frozen=True)
class Task:
    """One run to schedule: its id, the run it starts from, a cost for ordering, and its resources."""

    run_id: str
    parent: str | None
    cost: float
    cpus: float = 1.0
    gpus: float = 0.0


class DependencyQueue:
    """Releases tasks as their parents complete; tracks what is waiting, in flight and ended."""

    def __init__(self, tasks: Iterable[Task], outside: Mapping[str, str] | None = None) -> None:
        """`outside`: final statuses of parents that are not tasks here (e.g. completed in an earlier submission)."""
        self.tasks = {t.run_id: t for t in tasks}
        self.status: dict[str, str] = dict(outside or {})
        self.waiting = set(self.tasks)
        self.in_flight: set[str] = set()
        self.blocked: dict[str, str] = {}
        for t in self.tasks.values():
            self.status.pop(t.run_id, None)
        for t in list(self.tasks.values()):
            if t.run_id in self.waiting and t.parent is not None and t.parent not in self.tasks \
                    and self.status.get(t.parent) != COMPLETED:
                self._block(t.run_id, t.parent, self.status.get(t.parent, "missing"))

    def ready(self) -> list[Task]:
        """Waiting tasks whose parent (if any) has completed, longest first (ties by run id, so it is deterministic)."""
        out = [t for rid in self.waiting if (t := self.tasks[rid]).parent is None or self.status.get(t.parent) == COMPLETED]
        return sorted(out, key=lambda t: (-t.cost, t.run_id))

    def take(self, fits: Callable[[Task], bool] = lambda t: True) -> Task | None:
        """Release the longest ready task that `fits` (the backend's free resources), or None."""
        for t in self.ready():
            if fits(t):
                self.waiting.discard(t.run_id)
                self.in_flight.add(t.run_id)
                return t
        return None

    def requeue(self, run_id: str) -> None:
        """Put a released task back to waiting (it was not started here: e.g. another driver trains it)."""
        if run_id not in self.in_flight:
            raise KeyError(f"run {run_id} is not in flight")
        self.in_flight.discard(run_id)
        self.waiting.add(run_id)

    def end(self, run_id: str, status: str) -> dict[str, str]:
        """Record how a released task ended; returns the descendants this blocks, with their errors."""
        self.in_flight.discard(run_id)
        self.waiting.discard(run_id)
        self.status[run_id] = status
        if status == COMPLETED:
            return {}
        before = dict(self.blocked)
        for child in self._children(run_id):
            self._block(child, run_id, status)
        return {k: v for k, v in self.blocked.items() if k not in before}

    def done(self) -> bool:
        """Nothing waits and nothing is in flight: every task has ended or been blocked."""
        return not self.waiting and not self.in_flight

    def _children(self, run_id: str) -> list[str]:
        return [rid for rid in self.waiting if self.tasks[rid].parent == run_id]

    def _block(self, run_id: str, parent: str, parent_status: str) -> None:
        self.waiting.discard(run_id)
        self.blocked[run_id] = f"its pretraining run {parent} is {parent_status}, not completed"
        self.status[run_id] = "failed"
        for child in self._children(run_id):
            self._block(child, run_id, "failed")
