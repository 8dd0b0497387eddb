"""Terminal output: `ect train`'s progress bar, and a study's progress as a live table or as plain log lines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressReporter:
    """Shows iterations, loss and images/s; prints evaluations and checkpoints as they happen."""

    def __init__(self, total: int, console: Console | None = None, description: str = "train"):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task(description, total=total, loss="-", speed="-")
        self.started = False

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def _show(self) -> None:
        """Start drawing at the first report, so set-up errors are not preceded by an empty bar."""
        if not self.started:
            self.progress.start()
            self.started = True

    def metrics(self, step: int, values: dict[str, float]) -> None:
        fields = {}
        if "loss" in values:
            fields["loss"] = f"{values['loss']:.4g}"
        if "images_per_s" in values:
            fields["speed"] = f"{values['images_per_s']:.0f}"
        self._show()
        self.progress.update(self.task, completed=step, **fields)

    def evaluation(self, step: int, nfe: int, metric: str, value: float, extractor: str, num_samples: int,
                   sampler: str = "consistency", sampler_params: str = "{}", seed: int = 0) -> None:
        self._show()
        self.progress.console.print(
            f"step {step}: {metric} at NFE {nfe} ({sampler}) = {value:.4g} ({num_samples} samples, {extractor})"
        )

    def checkpoint(self, step: int, path: Path) -> None:
        self._show()
        self.progress.update(self.task, completed=step)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class StudyProgress:
    """A study's runs as the driver sees them (status, step, loss, speed), with the study's time left.

    The estimate is the images still to train (every unfinished run's remaining steps times its
    batch) divided by the study's throughput in this session: the images trained since the driver
    started (finished runs and running ones alike, counted from the step each run started at) per
    second of wall time. It thus counts runs in parallel and needs no run to have finished; it
    assumes the remaining images cost as much as those trained so far (a tuning image costs about
    a third more than a pretraining one: the target's extra forward pass).
    """

    ENDED = ("completed", "diverged", "failed", "cancelled", "interrupted")

    def __init__(self, store: Any, runs: list[Any], clock: Callable[[], float] = time.monotonic):
        self.clock, self.start = clock, clock()
        self.rows: dict[str, dict[str, Any]] = {}
        for r in runs:
            rec = store.run(r.run_id)
            self.rows[r.run_id] = {"label": r.label, "status": rec.status, "step": rec.step, "step0": rec.step,
                                   "total": r.config.schedule.iterations, "batch": r.config.schedule.batch_size}

    def elapsed(self) -> float:
        return self.clock() - self.start

    def estimate(self) -> float | None:
        """Seconds left, or None before any image has been trained in this session (or within its first second)."""
        trained = sum((r["step"] - r["step0"]) * r["batch"] for r in self.rows.values())
        left = sum((r["total"] - r["step"]) * r["batch"] for r in self.rows.values()
                   if r["status"] not in self.ENDED)
        elapsed = self.elapsed()
        if trained <= 0 or elapsed < 1.0:
            return None
        return left / (trained / elapsed)

    def record(self, run_id: str, info: dict[str, Any]) -> str | None:
        """Update a run's row; returns its new status if the status changed."""
        row = self.rows[run_id]
        changed = "status" in info and info["status"] != row["status"]
        row.update(info)
        if "step" in info and row["status"] == "running":
            row["step0"] = min(row["step0"], row["step"])
        return row["status"] if changed else None

    def summary(self) -> str:
        rows = self.rows.values()
        done = sum(r["status"] in self.ENDED for r in rows)
        running = [f"{r['label']} {r['step']}/{r['total']}" for r in rows if r["status"] == "running"]
        eta = self.estimate()
        return (f"{done}/{len(self.rows)} runs done; running: {', '.join(running) or 'none'}; "
                f"elapsed {_duration(self.elapsed())}; "
                f"estimated time left {_duration(eta) if eta is not None else 'unknown'}")


class PlainRuns(StudyProgress):
    """Plain lines for a log (stdout not a terminal): one per run status change, a summary every `every` s."""

    def __init__(self, store: Any, runs: list[Any], console: Console, every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(store, runs, clock)
        self.console, self.every = console, every
        self.last = self.start

    def __enter__(self) -> "PlainRuns":
        self._print(f"study: {self.summary()}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._print(f"study: {self.summary()}")

    def _print(self, line: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {line}", markup=False, highlight=False, soft_wrap=True)

    def update(self, run_id: str, info: dict[str, Any]) -> None:
        status = self.record(run_id, info)
        row = self.rows[run_id]
        if status is None and info.get("error"):  # Ray's traceback arrives just after the failed status
            self._print(f"run {row['label']} ({run_id[:8]}): {row['status']}: {str(info['error']).splitlines()[-1]}")
        if status is None:
            return
        line = f"run {row['label']} ({run_id[:8]}): {status} at step {row['step']}/{row['total']}"
        if status == "running" and info.get("attempts"):
            line += f" (attempt {info['attempts']})"
        if info.get("error"):
            line += f": {str(info['error']).splitlines()[-1]}"
        self._print(line)

    def tick(self) -> None:
        if self.clock() - self.last >= self.every:
            self.last = self.clock()
            self._print(f"study: {self.summary()}")


class LiveRuns(StudyProgress):
    """A live table of a study's runs: status, step, loss, images/s and ETA, with the study's estimate."""

    def __init__(self, store: Any, runs: list[Any], console: Console):
        from rich.live import Live

        super().__init__(store, runs)
        self.live = Live(self._table(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "LiveRuns":
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self._table())
        self.live.stop()

    def update(self, run_id: str, info: dict[str, Any]) -> None:
        self.record(run_id, info)
        self.live.update(self._table())

    def tick(self) -> None:
        self.live.update(self._table())

    def _table(self) -> Table:
        table = Table(title="runs", caption=self.summary())
        for col in ("label", "status", "step", "loss", "img/s", "ETA"):
            table.add_column(col)
        for row in self.rows.values():
            speed = row.get("images_per_s")
            remaining = (row["total"] - row["step"]) * row["batch"] / speed if speed else None
            table.add_row(
                row["label"], row["status"], f"{row['step']}/{row['total']}",
                f"{row['loss']:.4g}" if "loss" in row else "-",
                f"{speed:.0f}" if speed else "-",
                f"{remaining:.0f}s" if remaining is not None and row["status"] == "running" else "-",
            )
        return table


def study_view(store: Any, runs: list[Any], out: Console, err: Console) -> PlainRuns | LiveRuns:
    """The live table on a terminal, plain lines on stdout otherwise (a log file, a pipe, a Ray Job's log)."""
    return LiveRuns(store, runs, err) if out.is_terminal else PlainRuns(store, runs, out)
