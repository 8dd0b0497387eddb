"""Cost of the Fréchet distance on FID-sized features: our eigh route against the scipy.linalg.sqrtm route.

Two synthetic feature sets of `--n` samples x `--dim` dimensions (default 50k x 2048, the FID
setting; non-negative and correlated like Inception pool3 features) are compared two ways, side
by side in one run:

- eigh: `trainer.metrics` (StreamingStats in float64 batches, then `frechet_distance`:
  two symmetric eigendecompositions);
- sqrtm: pytorch-fid / dgm-eval (`np.mean` + `np.cov(rowvar=False)`, then
  `scipy.linalg.sqrtm(sigma1 @ sigma2)`, real part, trace).

For each it prints the time for the statistics of both sets, for the FD step alone (statistics
given) and for both together, then the two FD values.

    python benchmarks/fd.py                 # 50k x 2048
    python benchmarks/fd.py --n 10000 --dim 512
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import scipy
import scipy.linalg
import torch

from machine import describe, summary_fields
from trainer.metrics import StreamingStats, frechet_distance

BATCH = 1000


def synthetic_features(n: int, dim: int, seed: int, shift: float) -> np.ndarray:
    """ReLU of a low-rank mixture plus noise: float32 [n, dim], correlated, mostly positive."""
    g = torch.Generator().manual_seed(seed)
    rank = min(256, dim)
    mixing = torch.randn(rank, dim, generator=torch.Generator().manual_seed(1234)) / rank**0.5
    z = torch.randn(n, rank, generator=g)
    noise = 0.3 * torch.randn(n, dim, generator=g)
    return torch.relu(z @ mixing + noise + 0.5 + shift).numpy()


def stats_eigh(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    acc = StreamingStats(features.shape[1])
    for start in range(0, features.shape[0], BATCH):
        acc.update(torch.from_numpy(features[start : start + BATCH]))
    stats = acc.finalize()
    return stats.mu, stats.sigma


def stats_numpy(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid's `calculate_activation_statistics` on float64 activations."""
    act = features.astype(np.float64)
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def fd_sqrtm(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """pytorch-fid's `calculate_frechet_distance` (without its singular-product fallback)."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_route(stats_fn: Callable, fd_fn: Callable, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(seconds for the statistics of both sets, seconds for the FD step, FD value)."""
    t_stats, (s1, s2) = timed(lambda: (stats_fn(a), stats_fn(b)))
    t_fd, value = timed(lambda: fd_fn(*s1, *s2))
    return t_stats, t_fd, float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="samples per feature set")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"{describe()}; {torch.get_num_threads()} threads, "
          f"numpy {np.__version__}, scipy {scipy.__version__}")
    a = synthetic_features(args.n, args.dim, args.seed, 0.0)
    b = synthetic_features(args.n, args.dim, args.seed + 1, 0.05)
    print(f"features: 2 sets of {args.n} x {args.dim} float32")

    routes = {
        "eigh  (trainer.metrics)": (stats_eigh, frechet_distance),
        "sqrtm (pytorch-fid)": (stats_numpy, fd_sqrtm),
    }
    print(f"{'route':<26}{'stats [s]':>10}{'FD step [s]':>13}{'stats + FD [s]':>16}{'FD':>16}")
    values = []
    for name, (stats_fn, fd_fn) in routes.items():
        t_stats, t_fd, value = run_route(stats_fn, fd_fn, a, b)
        values.append(value)
        print(f"{name:<26}{t_stats:>10.2f}{t_fd:>13.2f}{t_stats + t_fd:>16.2f}{value:>16.6f}")
    rel = abs(values[0] - values[1]) / max(abs(values[1]), 1e-300)
    print(f"FD eigh = {values[0]:.9f}, FD sqrtm = {values[1]:.9f}, relative difference {rel:.2e}")
    print(f"summary: {summary_fields()} fd_eigh={values[0]:.9f} fd_sqrtm={values[1]:.9f} rel_diff={rel:.2e}")


if __name__ == "__main__":
    main()
