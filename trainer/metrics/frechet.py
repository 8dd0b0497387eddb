"""Fréchet distance between Gaussians fitted to features (Heusel et al. 2017, "GANs trained by a
two time-scale update rule converge to a local Nash equilibrium").

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

pytorch-fid and dgm-eval evaluate the last trace as tr(sqrtm(S1 S2)) with `scipy.linalg.sqrtm`
(a Schur decomposition of a non-symmetric matrix). S1 S2 is similar to the symmetric PSD matrix
S1^1/2 S2 S1^1/2, so both traces are the sum of the square roots of the same eigenvalues; here they
come from two symmetric eigendecompositions (`numpy.linalg.eigh`), which is faster and never
returns a complex result. Everything is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class GaussianStats:
    """Mean [D], unbiased covariance [D, D] (float64) and sample count of a set of features."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])


class StreamingStats:
    """Accumulates the mean and covariance of features [N, D] fed in batches of any size.

    Sums of x and x x^T are kept in float64 on the device of the first batch, after subtracting
    that batch's mean (a fixed shift: the covariance is unchanged and the sums lose no precision
    to a large common offset). `finalize()` equals `numpy.mean` / `numpy.cov(rowvar=False)`.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor | np.ndarray) -> "StreamingStats":
        """Add a batch of features [B, D]."""
        x = torch.as_tensor(features).detach()
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features [B, {self.dim}], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return self
        x = x.to(torch.float64)
        if self._shift is None:
            self._shift = x.mean(dim=0)
            self._sum = torch.zeros(self.dim, dtype=torch.float64, device=x.device)
            self._outer = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=x.device)
        x = x.to(self._shift.device) - self._shift
        self._sum += x.sum(dim=0)
        self._outer += x.T @ x
        self.n += int(x.shape[0])
        return self

    def finalize(self) -> GaussianStats:
        """The mean and the unbiased (n - 1) covariance of everything seen so far."""
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.n}")
        mean_shifted = self._sum / self.n
        cov = (self._outer - self.n * torch.outer(mean_shifted, mean_shifted)) / (self.n - 1)
        cov = 0.5 * (cov + cov.T)
        mu = (self._shift + mean_shifted).cpu().numpy()
        return GaussianStats(mu=mu, sigma=cov.cpu().numpy(), n=self.n)


def stats_of(features: torch.Tensor | np.ndarray) -> GaussianStats:
    """Mean and unbiased covariance of features [N, D] in one go."""
    x = torch.as_tensor(features)
    if x.ndim != 2:
        raise ValueError(f"expected features [N, D], got {tuple(x.shape)}")
    return StreamingStats(int(x.shape[1])).update(x).finalize()


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; eigenvalues below 0 (round-off) count as 0."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1^1/2 S2 S1^1/2)^1/2), i.e. tr(sqrtm(S1 S2)), from symmetric eigenvalues.

    Eigenvalues below eigvalsh's round-off floor (largest * D * eps, numpy's `matrix_rank`
    tolerance) count as 0: for rank-deficient covariances (fewer samples than dimensions) their
    square roots would otherwise add sqrt(round-off) noise, about 1e-8 each.
    """
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    floor = eigenvalues.max(initial=0.0) * eigenvalues.shape[0] * np.finfo(np.float64).eps
    return float(np.sqrt(eigenvalues[eigenvalues > floor]).sum())


def _as_float64(mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"expected mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
    return mu, 0.5 * (sigma + sigma.T)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017), in float64."""
    mu1, sigma1 = _as_float64(mu1, sigma1)
    mu2, sigma2 = _as_float64(mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape[0]} and {mu2.shape[0]}")
    diff = mu1 - mu2
    covariance_term = np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + covariance_term)


def frechet_distance_stats(a: GaussianStats, b: GaussianStats) -> float:
    """`frechet_distance` of two `GaussianStats`."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
