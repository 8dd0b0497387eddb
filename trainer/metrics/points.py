"""Distribution distances between point clouds [N, D], used directly on 2-D data (no feature extractor)."""

from __future__ import annotations

import math

import torch

_ROW_BLOCK = 2048


def _check_clouds(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected [N, D] and [M, D] point clouds, got {tuple(a.shape)} and {tuple(b.shape)}")


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two point clouds [N, D] and [M, D].

    Each random unit direction gives a 1-D W1 distance, computed on a common grid of quantiles;
    the result is their mean. Zero for identical clouds; for a shift by a vector v it equals the
    mean |<u, v>| over directions (2|v|/pi for D = 2 as num_projections grows).
    """
    _check_clouds(a, b)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], num_projections, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa = (a.double().cpu() @ dirs).sort(dim=0).values
    pb = (b.double().cpu() @ dirs).sort(dim=0).values
    n = max(len(pa), len(pb))
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qa = torch.quantile(pa, q, dim=0, interpolation="linear") if len(pa) != n else pa
    qb = torch.quantile(pb, q, dim=0, interpolation="linear") if len(pb) != n else pb
    value = (qa - qb).abs().mean().item()
    return value if math.isfinite(value) else float("inf")


def _mean_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs (a_i, b_j), in row blocks to bound memory."""
    total = 0.0
    for start in range(0, a.shape[0], _ROW_BLOCK):
        total += torch.cdist(a[start : start + _ROW_BLOCK], b).sum().item()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between point clouds [N, D] and [M, D].

    Székely & Rizzo's E-statistic in its V-statistic form (all pairs, including i = j), so it is
    exactly 0 for identical clouds and never negative. In 1-D it is the square of
    `scipy.stats.energy_distance`. Computed in float64 on the CPU.
    """
    _check_clouds(a, b)
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    value = 2.0 * _mean_distance(a, b) - _mean_distance(a, a) - _mean_distance(b, b)
    return max(value, 0.0) if math.isfinite(value) else float("inf")
