"""The ECT objective: mapping function r(t, iters), timestep and adaptive weightings, and the loss.

Paper: "Consistency Models Made Easy" (Geng et al.), Sec. 3 and Appendix A. Diffusion pretraining
is the same loss at stage a = 0, where r = 0 and the target is x_0 itself.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .config import ECTConfig
from .networks.edm2 import no_forced_weight_norm
from .precond import Precond


def stage(iteration: int, cfg: ECTConfig, total_iterations: int) -> int:
    """Stage counter a of Eq. (18): a = ceil(n / d) for the n-th step (n = iteration + 1), 0 when pretraining.

    d = ceil(total_iterations / stages), so a runs 1 .. stages over a tuning run; the first tuning
    step is already a = 1 (tuning from a pretrained model skips the a = 0 diffusion stage). Where
    that d would never reach the last stage (runs shorter than about stages^2 iterations), d is the
    longest length that does and the last stage takes the rest: `stage_length`.
    """
    if cfg.mode == "pretraining":
        return 0
    return min(iteration // stage_length(total_iterations, cfg.stages) + 1, cfg.stages)


def stage_length(total_iterations: int, stages: int) -> int:
    """Iterations per stage: ceil(total / stages), shortened where needed so that stage `stages` is reached
    for any run of at least `stages` iterations ((stages - 1) d <= total - 1). The same as ceil(total /
    stages) wherever that already reaches the last stage."""
    d = math.ceil(total_iterations / stages)
    if stages == 1:
        return d
    return max(1, min(d, (total_iterations - 1) // (stages - 1)))


def n_of_t(t: torch.Tensor, k: float, b: float) -> torch.Tensor:
    """n(t) = 1 + k * sigmoid(-b t) (Eq. 18)."""
    return 1 + k * torch.sigmoid(-b * t)


def mapping_r(t: torch.Tensor, a: int, q: float, k: float, b: float) -> torch.Tensor:
    """r = t (1 - n(t) / q^a), clamped at r >= 0 (Eq. 18). At a = 0 this is r = 0 for every t."""
    r = t * (1 - n_of_t(t, k, b) / q**a)
    return r.clamp(min=0.0)


WEIGHTINGS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    # Paper Table 3 (timestep weightings w-bar(t)); r only enters 1/(t - r).
    "uniform": lambda t, r, sd: torch.ones_like(t),
    "inv_t": lambda t, r, sd: 1 / t,
    "inv_delta_t": lambda t, r, sd: 1 / (t - r),
    "inv_t_plus_inv_sigma_data": lambda t, r, sd: 1 / t + 1 / sd,
    "snr": lambda t, r, sd: 1 / t**2,
    "snr_plus_one": lambda t, r, sd: 1 / t**2 + 1,
    "edm": lambda t, r, sd: 1 / t**2 + 1 / sd**2,
    "soft_min_snr": lambda t, r, sd: 1 / (t**2 + sd**2),
}


def adaptive_weight(sq_norm: torch.Tensor, p: float, c: float) -> torch.Tensor:
    """w(Delta) = 1 / (|Delta|^2 + c^2)^p (Eq. 16); p = 1/2 is the pseudo-Huber metric."""
    return (sq_norm + c**2).pow(-p)


def ect_objective(
    sq_norm: torch.Tensor,
    t: torch.Tensor,
    r: torch.Tensor,
    cfg: ECTConfig,
    sigma_data: float,
    l1_norm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample loss w-bar(t) * sg(w(Delta)) * |Delta|^2 / 2.

    Its gradient is w-bar(t) w(Delta) d(|Delta|^2 / 2), which for p = 1/2 equals the gradient of
    w-bar(t) (sqrt(|Delta|^2 + c^2) - c), the pseudo-Huber form of the authors' code (Eq. 20).
    With `adaptive_norm: l1`, w(Delta) = 1/(|Delta|_1 + c)^(2p) (paper Table 4).
    """
    w_t = WEIGHTINGS[cfg.weighting](t, r, sigma_data)
    if cfg.adaptive_norm == "l1":
        w_delta = (l1_norm.detach() + cfg.c).pow(-2 * cfg.p)
    else:
        w_delta = adaptive_weight(sq_norm.detach(), cfg.p, cfg.c)
    return w_t * w_delta * sq_norm / 2


class _SharedRNG:
    """Capture the RNG state before the x_t pass and restore it for the target pass.

    Dropout draws from the global generator of the device, so replaying the same state makes the
    no-grad target pass use exactly the same dropout masks (as the authors' code does).
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.state = torch.cuda.get_rng_state(device) if self.cuda else torch.get_rng_state()

    def replay(self) -> None:
        if self.cuda:
            torch.cuda.set_rng_state(self.state, self.device)
        else:
            torch.set_rng_state(self.state)


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar mean over the batch, to backpropagate
    per_sample: torch.Tensor  # detached [N]
    t: torch.Tensor
    r: torch.Tensor
    stage: int
    target_pass: bool  # whether the no-grad target forward ran (it does not when r = 0 everywhere)


def draw_noise(shape: tuple[int, ...], device: torch.device, cfg: ECTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """t ~ LogNormal(P_mean, P_std) per sample, and one eps shared by x_t and x_r, for a batch of `shape`."""
    t = (torch.randn(shape[0], device=device) * cfg.P_std + cfg.P_mean).exp()
    return t, torch.randn(shape, device=device)


def ect_loss(
    net: Precond,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    a: int,
    cfg: ECTConfig,
    autocast: Callable[[], object] | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LossOutput:
    """One ECT minibatch loss at stage a (Algorithm 1); `noise` = (t, eps) drawn by `draw_noise` if not given."""
    shape = (x0.shape[0],) + (1,) * (x0.ndim - 1)
    t, eps = noise if noise is not None else draw_noise(tuple(x0.shape), x0.device, cfg)
    r = mapping_r(t, a, cfg.q, cfg.k, cfg.b)
    x_t = x0 + t.reshape(shape) * eps
    x_r = x0 + r.reshape(shape) * eps

    ctx = autocast or contextlib.nullcontext
    rng = _SharedRNG(x0.device)
    with ctx():
        f_t = net(x_t, t, labels)
    target_pass = bool((r > 0).any())
    if target_pass:
        rng.replay()
        # EDM2's forced weight normalisation rewrites weights in train mode; the no-grad target pass
        # must not touch the weights that the x_t pass saved for its backward (no-op elsewhere).
        with torch.no_grad(), ctx(), no_forced_weight_norm(net):
            # The online network in train mode (not the EMA); r = 0 rows are replaced by x_0 below,
            # so they are evaluated at t only to keep log(r) finite.
            f_r = net(x_r, torch.where(r > 0, r, t), labels)
        target = torch.where((r > 0).reshape(shape), f_r.to(x0.dtype), x0)
    else:
        target = x0
    delta = f_t.float() - target.float()
    sq_norm = delta.square().flatten(1).sum(1)
    l1 = delta.abs().flatten(1).sum(1) if cfg.adaptive_norm == "l1" else None
    per_sample = ect_objective(sq_norm, t, r, cfg, net.sigma_data, l1)
    return LossOutput(per_sample.mean(), per_sample.detach(), t, r, a, target_pass)
