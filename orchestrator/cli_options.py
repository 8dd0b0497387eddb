"""CLI conventions shared by the commands: choices as Enums, the fit options, and output that behaves
in pipes (JSON and CSV as plain stdout; tables neither cut nor wrapped when stdout is not a terminal).

Imports nothing heavy: `ect --help` must not pay for torch, scipy or matplotlib.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

import typer
from rich.console import Console

PIPE_WIDTH = 100_000  # a table wider than any real one: never cut or wrapped


def pipe_console(stderr: bool = False) -> Console:
    """A console for stdout (results) or stderr (notes, errors): the terminal's width on a terminal, no width
    limit in a pipe or file, so tables and lines are neither cut nor wrapped."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)


class FitPoints(str, Enum):
    """What a fit's points are: per-budget means over training seeds, or every seed's run."""

    means = "means"
    seeds = "seeds"


class FitForm(str, Enum):
    loglinear = "loglinear"
    saturating = "saturating"


class Sampler(str, Enum):
    consistency = "consistency"
    heun = "heun"


# The GPU-hour estimate of `ect study plan` (and the scheduling benchmark): FLOPs / (peak x utilisation).
PEAK_TFLOPS = 312.0  # one A100's dense BF16/FP16 tensor-core peak, TFLOP/s
UTILIZATION = 0.15  # the share of that peak a training run sustains: the paper's 1-GPU-hour recipe trains
# 8000 x 128 CIFAR-10 images on DDPM++ (1.74e17 FLOPs as `ect study plan` counts them) in one A100 hour: 0.155


def gpu_hours(flops: float, peak_tflops: float = PEAK_TFLOPS, utilization: float = UTILIZATION) -> float:
    """GPU-hours that `flops` of training take at `utilization` of a GPU's peak TFLOP/s."""
    return flops / (peak_tflops * 1e12 * utilization) / 3600


POINTS_OPTION = typer.Option(
    FitPoints.means, "--points",
    help="Fit the per-budget means over training seeds (every budget weighs the same) or every seed's run.")


def points_note(points: str, n_points: int, n_runs: int) -> str:
    """'fit on 6 per-budget means of 12 runs' / 'fit on 12 runs (every seed a point)'."""
    if points == FitPoints.means.value:
        return f"fit on {n_points} per-budget means of {n_runs} runs"
    return f"fit on {n_runs} runs (every seed a point)"


def print_json(payload: Any) -> None:
    """JSON as plain stdout (no console markup, colour or wrapping), one document and a newline."""
    sys.stdout.write(json.dumps(payload, default=_plain) + "\n")


def print_csv(text: str) -> None:
    """CSV text as plain stdout."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _plain(value: Any) -> Any:
    """JSON for numpy scalars, enums, timestamps (ISO 8601) and paths."""
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
