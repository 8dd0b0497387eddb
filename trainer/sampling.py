"""Samplers: multistep consistency sampling and EDM's deterministic Heun sampler (the diffusion baseline).

Both draw their noise from an explicit generator, so sampling never disturbs the training RNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import torch

from .config import SamplingConfig
from .precond import Precond


def _randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def check_steps(steps: int, cfg: SamplingConfig) -> None:
    """n-step consistency sampling needs n >= 1 and n - 1 intermediate times."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    if steps - 1 > len(cfg.mid_times):
        raise ValueError(f"{steps}-step sampling needs {steps - 1} mid times, "
                         f"sampling.mid_times has {len(cfg.mid_times)}")


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
    check_steps(steps, cfg)
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


class Sampler(Protocol):
    """A way of drawing samples from a consistency (or diffusion) model, with the parameters that define it."""

    name: str

    @property
    def nfe(self) -> int:
        """Network evaluations per sample."""

    def params(self) -> dict:
        """What, besides the model and the noise, determines the samples (recorded with every evaluation)."""

    def draw(self, net: Precond, shape: tuple[int, ...], generator: torch.Generator, labels: torch.Tensor | None,
             device: torch.device) -> torch.Tensor:
        """Samples of `shape` from `generator`'s noise."""


@dataclass(frozen=True)
class ConsistencySampler:
    """`steps`-step consistency sampling at sigma_max and the first steps - 1 of `cfg.mid_times`."""

    steps: int
    cfg: SamplingConfig
    name: str = "consistency"

    def __post_init__(self) -> None:
        check_steps(self.steps, self.cfg)

    @property
    def nfe(self) -> int:
        return self.steps

    def params(self) -> dict:
        return {"steps": self.steps, "sigma_max": self.cfg.sigma_max, "mid_times": self.cfg.mid_times[: self.steps - 1]}

    def draw(self, net: Precond, shape: tuple[int, ...], generator: torch.Generator, labels: torch.Tensor | None,
             device: torch.device) -> torch.Tensor:
        return consistency_sample(net, shape, self.steps, self.cfg, generator, labels, device)


@dataclass(frozen=True)
class HeunSampler:
    """EDM's deterministic Heun sampler with `cfg.heun_steps` time steps (the diffusion baseline)."""

    cfg: SamplingConfig
    name: str = "heun"

    @property
    def nfe(self) -> int:
        return 2 * self.cfg.heun_steps - 1

    def params(self) -> dict:
        c = self.cfg
        return {"heun_steps": c.heun_steps, "sigma_max": c.sigma_max, "sigma_min": c.heun_sigma_min, "rho": c.rho}

    def draw(self, net: Precond, shape: tuple[int, ...], generator: torch.Generator, labels: torch.Tensor | None,
             device: torch.device) -> torch.Tensor:
        return heun_sample(net, shape, self.cfg, generator, labels, device)


def sampler_for(cfg: SamplingConfig, steps: int = 1, heun: bool = False) -> Sampler:
    """The Heun sampler, or `steps`-step consistency sampling, of a run's `sampling` section."""
    return HeunSampler(cfg) if heun else ConsistencySampler(steps, cfg)


def params_json(sampler: Sampler) -> str:
    """A sampler's parameters as canonical JSON (what the store keys evaluations by)."""
    return json.dumps(sampler.params(), sort_keys=True)


def sample(net: Precond, sampler: Sampler, n: int, sample_shape: tuple[int, ...], generator: torch.Generator,
           device: torch.device | str = "cpu", labels: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """`n` samples and the NFE per sample. A conditional model's class labels are drawn from `generator` (before
    the noise) unless given, so one seed fixes labels and noise alike."""
    device = torch.device(device)
    if labels is None and net.label_dim:
        labels = torch.randint(net.label_dim, (n,), generator=generator, device=generator.device).to(device)
    return sampler.draw(net, (n, *sample_shape), generator, labels, device), sampler.nfe
