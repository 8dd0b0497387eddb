"""Exponential moving averages of the network: classic (fixed beta, optional warm-up) and EDM2's power function.

EMA copies are kept in eval mode with gradients off: they are what gets sampled and evaluated.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .config import ClassicEMAConfig, PowerEMAConfig


def classic_beta(beta: float, step: int, warmup: bool) -> float:
    """beta_i = min(beta, (1 + i) / (10 + i)) with warm-up, else beta (i = number of updates done before)."""
    return min(beta, (1 + step) / (10 + step)) if warmup else beta


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """Exponent gamma of the power-function EMA with relative std sigma_rel (EDM2, Eq. 3 / Alg. 2).

    Solves sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), i.e.
    gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s) = 0 with s = sigma_rel^-2.
    """
    s = float(sigma_rel) ** -2
    return float(np.roots([1.0, 7.0, 16.0 - s, 12.0 - s]).real.max())


def power_beta(gamma: float, step: int) -> float:
    """beta_t = (1 - 1/t)^(gamma + 1) after the t-th update (t >= 1); t = 1 copies the network."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


class EMA:
    """A set of named EMA models of one network."""

    def __init__(self, net: nn.Module, cfg: ClassicEMAConfig | PowerEMAConfig):
        self.cfg = cfg
        self.names = [f"ema{cfg.beta:g}"] if isinstance(cfg, ClassicEMAConfig) else [
            f"power{s:g}" for s in cfg.sigma_rels
        ]
        self.gammas = [] if isinstance(cfg, ClassicEMAConfig) else [sigma_rel_to_gamma(s) for s in cfg.sigma_rels]
        self.models: dict[str, nn.Module] = {}
        for name in self.names:
            m = copy.deepcopy(net).eval()
            m.requires_grad_(False)
            self.models[name] = m

    def betas(self, step: int) -> list[float]:
        """The rate of each EMA for the update that follows training step `step` (0-based)."""
        if isinstance(self.cfg, ClassicEMAConfig):
            return [classic_beta(self.cfg.beta, step, self.cfg.warmup)]
        return [power_beta(g, step + 1) for g in self.gammas]

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """ema <- beta * ema + (1 - beta) * net, for parameters and floating buffers."""
        for beta, m in zip(self.betas(step), self.models.values()):
            for p_ema, p_net in zip(m.parameters(), net.parameters()):
                p_ema.lerp_(p_net.detach(), 1.0 - beta)
            for b_ema, b_net in zip(m.buffers(), net.buffers()):
                if b_ema.is_floating_point():
                    b_ema.copy_(b_net)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: m.state_dict() for name, m in self.models.items()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        missing = set(self.names) - set(state)
        if missing:
            raise KeyError(f"checkpoint has no EMA named {sorted(missing)} (it has {sorted(state)})")
        for name, m in self.models.items():
            m.load_state_dict(state[name])

    def first(self) -> nn.Module:
        return self.models[self.names[0]]
