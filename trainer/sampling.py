"""Samplers: multistep consistency sampling and EDM's deterministic Heun sampler (the diffusion baseline).

Both draw their noise from an explicit generator, so sampling never disturbs the training RNG.
"""

from __future__ import annotations

import torch

from .config import SamplingConfig
from .precond import Precond


def _randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


@torch.no_grad()
def consistency_sample(
    net: Precond,
    shape: tuple[int, ...],
    steps: int,
    cfg: SamplingConfig,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """x = f(sigma_max z, sigma_max); then for each mid time t: x = f(x + t z', t) (1 NFE per step)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if steps - 1 > len(cfg.mid_times):
        raise ValueError(
            f"{steps}-step sampling needs {steps - 1} mid times, sampling.mid_times has {len(cfg.mid_times)}"
        )
    device = torch.device(device)
    times = [cfg.sigma_max] + list(cfg.mid_times[: steps - 1])
    x = _randn(shape, generator, device) * times[0]
    for i, t in enumerate(times):
        if i > 0:
            x = x + t * _randn(shape, generator, device)
        x = net(x, torch.full((shape[0],), t, device=device), labels, boundary=True).float()
    return x


def heun_times(cfg: SamplingConfig) -> torch.Tensor:
    """EDM's time steps: (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, then 0 (EDM Eq. 5)."""
    n = cfg.heun_steps
    i = torch.arange(n, dtype=torch.float64)
    inv = 1.0 / cfg.rho
    t = (cfg.sigma_max**inv + i / (n - 1) * (cfg.heun_sigma_min**inv - cfg.sigma_max**inv)) ** cfg.rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sample(
    net: Precond,
    shape: tuple[int, ...],
    cfg: SamplingConfig,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """EDM Algorithm 1 with S_churn = 0: 2 * heun_steps - 1 NFE (35 for 18 steps)."""
    device = torch.device(device)
    times = heun_times(cfg).to(device)
    x = _randn(shape, generator, device).double() * times[0]

    def d(x_: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        denoised = net(x_.float(), t.float().expand(shape[0]), labels).double()
        return (x_ - denoised) / t

    for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:])):
        d_cur = d(x, t_cur)
        x_next = x + (t_next - t_cur) * d_cur
        if i < len(times) - 2:  # second-order correction, except on the last step to t = 0
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d(x_next, t_next))
        x = x_next
    return x.float()


def nfe_of(steps: int, heun: bool, cfg: SamplingConfig) -> int:
    """Network evaluations per sample."""
    return 2 * cfg.heun_steps - 1 if heun else steps
