"""The `Reporter` protocol: how a training run tells the outside world what happened.

`train()` only calls these methods, so the same run reports to a progress bar (`ect train`),
to Ray and the store (the orchestrator) or to a list (tests) without knowing which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Training metrics after `step` completed iterations (loss, lr, images/s, ...)."""

    def evaluation(self, step: int, nfe: int, metric: str, value: float, extractor: str, num_samples: int,
                   sampler: str = "consistency", sampler_params: str = "{}", seed: int = 0) -> None:
        """One evaluation of the EMA model at `step` with `nfe` network evaluations per sample
        (`sampler`: "consistency" sampling or EDM's "heun" sampler; `sampler_params`: its parameters as
        canonical JSON; `seed`: of the sampling noise)."""

    def checkpoint(self, step: int, path: Path) -> None:
        """A checkpoint holding the state after `step` iterations was written to `path`."""


class NullReporter:
    """Discards everything."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def evaluation(self, step: int, nfe: int, metric: str, value: float, extractor: str, num_samples: int,
                   sampler: str = "consistency", sampler_params: str = "{}", seed: int = 0) -> None:
        pass

    def checkpoint(self, step: int, path: Path) -> None:
        pass


@dataclass
class RecordingReporter:
    """Keeps every report in memory (tests, notebooks)."""

    metric_rows: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metric_rows.append((step, dict(values)))

    def evaluation(self, step: int, nfe: int, metric: str, value: float, extractor: str, num_samples: int,
                   sampler: str = "consistency", sampler_params: str = "{}", seed: int = 0) -> None:
        self.evaluations.append(
            dict(step=step, nfe=nfe, metric=metric, value=value, extractor=extractor, num_samples=num_samples,
                 sampler=sampler, sampler_params=sampler_params, seed=seed)
        )

    def checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, Path(path)))
