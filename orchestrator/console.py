"""Terminal output for `ect train`: a rich progress bar fed by the trainer's Reporter calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


class LiveRuns:
    """A live table of a study's runs: status, step, loss, images/s and ETA, redrawn as reports arrive."""

    def __init__(self, store: Any, runs: list[Any], console: Console):
        from rich.live import Live

        self.rows: dict[str, dict[str, Any]] = {}
        for r in runs:
            rec = store.run(r.run_id)
            self.rows[r.run_id] = {"label": r.label, "status": rec.status, "step": rec.step,
                                   "total": r.config.schedule.iterations, "batch": r.config.schedule.batch_size}
        self.live = Live(self._table(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "LiveRuns":
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self._table())
        self.live.stop()

    def update(self, run_id: str, info: dict[str, Any]) -> None:
        self.rows[run_id].update(info)
        self.live.update(self._table())

    def _table(self) -> Table:
        table = Table(title="runs")
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
