"""Terminal output for `ect train`: a rich progress bar fed by the trainer's Reporter calls."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
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

    def evaluation(self, step: int, nfe: int, metric: str, value: float, extractor: str, num_samples: int) -> None:
        self._show()
        self.progress.console.print(f"step {step}: {metric} at NFE {nfe} = {value:.4g} ({num_samples} samples)")

    def checkpoint(self, step: int, path: Path) -> None:
        self._show()
        self.progress.update(self.task, completed=step)
