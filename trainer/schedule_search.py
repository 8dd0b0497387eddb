"""Searching the intermediate times of n-step consistency sampling (t_mid for 2 steps): the paper fixes them per
dataset, but a model trained with another weighting or budget may want others.

For 2 steps the search is a bounded golden-section search on log t; for 3 and 4 steps a coordinate search of
such searches. It measures on its own noise set (a seed other than the reported one), and the tuned sampler
records the search that produced it with its parameters.
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


def search_mid_times(measure: Callable[[list[float]], float], lo: float, hi: float, iterations: int,
                     start: list[float], rounds: int = 2) -> tuple[list[float], float]:
    """(intermediate times, value) minimising `measure` over decreasing times in [lo, hi]: for one time a
    golden-section search on log t over the whole range; for more, coordinate search (each time in turn by
    golden section between its neighbours, `rounds` sweeps). `start` (the default schedule) is measured too and
    kept unless something beats it, so the result is never worse than the default on the search's own noise."""
    if not start or any(b >= a for a, b in zip(start, start[1:])):
        raise ValueError(f"start {start}: expected one or more strictly decreasing times")
    best, best_value = list(start), measure(list(start))
    for _ in range(rounds if len(start) > 1 else 1):
        for i in range(len(best)):
            upper = hi if i == 0 else best[i - 1]  # golden-section points are interior: the order stays strict
            lower = lo if i == len(best) - 1 else best[i + 1]
            if not lower < upper:
                continue

            def along(u: float) -> float:
                return measure(best[:i] + [math.exp(u)] + best[i + 1:])

            tried = golden_section(along, math.log(lower), math.log(upper), iterations)
            u = min(tried, key=tried.get)
            if tried[u] < best_value:
                best, best_value = best[:i] + [math.exp(u)] + best[i + 1:], tried[u]
    return best, best_value


def default_start(defaults: list[float], n: int, lo: float, hi: float) -> list[float]:
    """The n intermediate times a search starts from: the run's own `sampling.mid_times` where it has n of them
    inside [lo, hi], else n times evenly spaced in log t strictly inside (lo, hi)."""
    own = defaults[:n]
    if len(own) == n and all(lo <= t <= hi for t in own):
        return own
    return [math.exp(math.log(hi) + (i + 1) / (n + 1) * (math.log(lo) - math.log(hi))) for i in range(n)]


@dataclass(frozen=True)
class TunedSampler:
    """n-step consistency sampling at searched intermediate times; its parameters include the search that chose it."""

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
