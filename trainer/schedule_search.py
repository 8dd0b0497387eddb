"""Searching the intermediate time of 2-step consistency sampling (t_mid): the paper fixes it per dataset, but
a model trained with another weighting or budget may want another one.

The search is a bounded golden-section search on log t; it measures on its own noise set (a seed other than
the reported one), and the tuned sampler records the search that produced it with its parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .precond import Precond
from .sampling import ConsistencySampler

GOLDEN = (math.sqrt(5) - 1) / 2


def golden_section(f: Callable[[float], float], lo: float, hi: float, iterations: int) -> dict[float, float]:
    """Every point golden-section search tries when minimising f on [lo, hi], with its value (one f call each)."""
    tried: dict[float, float] = {}

    def value(x: float) -> float:
        if x not in tried:
            tried[x] = f(x)
        return tried[x]

    a, b = lo, hi
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = value(c), value(d)
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = value(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = value(d)
    return tried


def search_mid_time(measure: Callable[[float], float], lo: float, hi: float, iterations: int,
                    start: float) -> tuple[float, float]:
    """(t_mid, value): the best of a golden-section search on log t over [lo, hi] and of `start` (the default),
    so the tuned time is never worse than the default on the search's own noise."""
    tried = {math.exp(u): v for u, v in golden_section(lambda u: measure(math.exp(u)), math.log(lo), math.log(hi),
                                                       iterations).items()}
    tried.setdefault(start, measure(start))
    best = min(tried, key=tried.get)
    return best, tried[best]


@dataclass(frozen=True)
class TunedSampler:
    """2-step consistency sampling at a searched t_mid; its parameters include the search that chose it."""

    inner: ConsistencySampler
    search: dict = field(hash=False)
    name: str = "consistency"

    @property
    def nfe(self) -> int:
        return self.inner.nfe

    def params(self) -> dict:
        return {**self.inner.params(), "tuned_on": self.search}

    def draw(self, net: Precond, shape: tuple[int, ...], generator: torch.Generator, labels: torch.Tensor | None,
             device: torch.device) -> torch.Tensor:
        return self.inner.draw(net, shape, generator, labels, device)
