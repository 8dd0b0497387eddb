"""Distribution distances used during training.

`sliced_wasserstein` compares 2-D point clouds directly (no feature extractor needed).
"""

from __future__ import annotations

import math

import torch


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two point clouds [N, D] and [M, D].

    Each random unit direction gives a 1-D W1 distance, computed on a common grid of quantiles;
    the result is their mean. Zero for identical clouds; for a shift by a vector v it equals the
    mean |<u, v>| over directions (2|v|/pi for D = 2 as num_projections grows).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected [N, D] and [M, D] point clouds, got {tuple(a.shape)} and {tuple(b.shape)}")
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
