"""CLI conventions shared by the commands: choices as Enums, the fit options, and output that behaves
in pipes (JSON and CSV as plain stdout; tables neither cut nor wrapped when stdout is not a terminal).

Imports nothing heavy: `ect --help` must not pay for torch, scipy or matplotlib.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any

import typer
from rich.console import Console

from trainer.config import ConfigError

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


@dataclass(frozen=True)
class SamplerChoice:
    """Which evaluations a fit, frontier, figure or table uses: a sampler, optionally one NFE, and the default
    intermediate times or the tuned ones (`ect study evaluate --tune`)."""

    name: str = Sampler.consistency.value
    nfe: int | None = None
    tuned: bool = False

    @property
    def schedule(self) -> str:
        return "tuned" if self.tuned else "default"

    def __str__(self) -> str:
        return "-".join([self.name, *([str(self.nfe)] if self.nfe is not None else []), *(["tuned"] if self.tuned else [])])


SAMPLER_FORMS = "consistency, consistency-N, consistency-N-tuned (intermediate times searched), heun or heun-NFE"


def parse_sampler(text: str, option: str = "--sampler") -> SamplerChoice:
    """`consistency`, `consistency-2`, `consistency-2-tuned`, `heun`, `heun-35` -> a SamplerChoice, or one line
    naming the option."""
    name, *rest = text.strip().split("-")
    tuned = bool(rest) and rest[-1] == "tuned"
    rest = rest[:-1] if tuned else rest
    ok = name in {s.value for s in Sampler} and len(rest) <= 1 and all(r.isdigit() and int(r) >= 1 for r in rest)
    if not ok or (tuned and (name != Sampler.consistency.value or not rest)):
        raise ConfigError(f"{option} {text!r}: expected {SAMPLER_FORMS}")
    return SamplerChoice(name, int(rest[0]) if rest else None, tuned)


POINTS_OPTION = typer.Option(
    FitPoints.means, "--points",
    help="Fit the per-budget means over training seeds (every budget weighs the same) or every seed's run.")


def points_note(points: str, n_points: int, n_runs: int) -> str:
    """'fit on 6 per-budget means of 12 runs' / 'fit on 12 runs (every seed a point)'."""
    if points == FitPoints.means.value:
        return f"fit on {n_points} per-budget means of {n_runs} runs"
    return f"fit on {n_runs} runs (every seed a point)"


def json_text(payload: Any, indent: int | None = None) -> str:
    """Strict JSON (RFC 8259) of `payload`: numpy scalars, enums, timestamps and paths made plain, and a
    non-finite number (an unbounded interval's end, a missing value) written as null, as pandas writes it:
    `Infinity` and `NaN` are not JSON, and jq and most parsers outside Python reject them."""
    return json.dumps(_finite(payload), default=_plain, allow_nan=False, indent=indent)


def print_json(payload: Any) -> None:
    """JSON as plain stdout (no console markup, colour or wrapping), one document and a newline."""
    sys.stdout.write(json_text(payload) + "\n")


def print_csv(text: str) -> None:
    """CSV text as plain stdout."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (Python's or numpy's) inside dicts, lists and tuples replaced by None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        value = value.item()  # a numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain(value: Any) -> Any:
    """JSON for numpy scalars, enums, timestamps (ISO 8601) and paths."""
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
