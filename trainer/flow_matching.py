"""Flow-matching pretraining with adaptive weighting w(Δ) on the 2-D swiss roll (paper Appendix B, Fig. 6).

The toy experiment of Appendix B: a velocity field v_θ(x_t, t) is trained with the objective
w(Δ) ||v_θ(x_t, t) - (x_1 - x_0)||², where x_t = (1 - t) x_0 + t x_1, t ~ U(0, 1), x_0 is data,
x_1 ~ N(0, I), Δ = v_θ(x_t, t) - (x_1 - x_0) per sample and w(Δ) = 1 / (||Δ||² + c²)^p is
detached (a per-sample gradient scale, not a term to differentiate). p = 0 is plain flow matching;
the paper reports that increasing p towards 1 makes the flow easier to sample in a few Euler steps.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from .data import load_dataset
from .config import DataSeed, SwissRollData
from .networks.mlp import MLP

__all__ = ["FlowToyConfig", "adaptive_weight", "weighted_flow_loss", "flow_matching_loss", "build_flow_model",
           "train_flow", "sample_flow"]

TIME_SCALE = 100.0
"""The network sees noise_labels = TIME_SCALE * t, so the sinusoidal embedding (frequencies 1 .. 1e-4)
resolves t in [0, 1] instead of being almost linear in it."""


class FlowToyConfig(BaseModel):
    """One toy flow-matching run on the swiss roll (Appendix B): data, MLP size, optimiser and w(Δ)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_samples: int = Field(10_000, ge=16, description="swiss-roll training points")
    noise: float = Field(0.3, ge=0.0, description="swiss-roll noise (scikit-learn units, before scaling)")
    hidden: int = Field(128, ge=1, description="MLP width")
    depth: int = Field(3, ge=0, description="residual blocks in the MLP")
    iterations: int = Field(2000, ge=0, description="Adam steps")
    batch_size: int = Field(256, ge=1, description="points per step")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate")
    p: float = Field(0.0, ge=0.0, description="exponent of w(Δ) = 1 / (||Δ||² + c²)^p; 0 = plain flow matching")
    eps: float = Field(1e-6, gt=0.0, description="c² in w(Δ) (the paper's 1e-6)")
    seed: DataSeed = Field(0, description="seed of the data, the initialisation, and the batches")


def adaptive_weight(delta: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """w(Δ) = 1 / (||Δ||² + c²)^p per sample ([N, ...] -> [N]), detached from the graph (Appendix B)."""
    sq = delta.detach().flatten(1).square().sum(dim=1)
    return (sq + eps).pow(-p)


def weighted_flow_loss(pred: torch.Tensor, target: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """mean_i w(Δ_i) ||Δ_i||² with Δ = pred - target; its gradient is w(Δ) times the plain L2 gradient."""
    delta = pred - target
    sq = delta.flatten(1).square().sum(dim=1)
    return (adaptive_weight(delta, p, eps) * sq).mean()


def flow_matching_loss(model: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor,
                       p: float, eps: float = 1e-6) -> torch.Tensor:
    """The Appendix B objective on one batch: data x0 [N, D], noise x1 [N, D], times t [N] in [0, 1]."""
    tt = t.view(-1, *([1] * (x0.ndim - 1)))
    xt = (1.0 - tt) * x0 + tt * x1
    return weighted_flow_loss(model(xt, TIME_SCALE * t), x1 - x0, p, eps)


def build_flow_model(cfg: FlowToyConfig, dim: int = 2) -> MLP:
    """The velocity network v_θ(x, t): the project's residual MLP, with noise_labels = TIME_SCALE * t."""
    return MLP(dim=dim, hidden=cfg.hidden, depth=cfg.depth)


def train_flow(cfg: FlowToyConfig) -> torch.nn.Module:
    """Train v_θ on the swiss roll with Adam and the w(Δ)-weighted flow-matching loss; returns it in eval mode.

    Deterministic given `cfg.seed`: the initialisation runs under a forked global RNG, batches, noise
    and times come from an explicit generator, so the caller's RNG state is left untouched.
    """
    data = load_dataset(SwissRollData(num_samples=cfg.num_samples, noise=cfg.noise, seed=cfg.seed)).x
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_flow_model(cfg, dim=data.shape[1])
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for _ in range(cfg.iterations):
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
        x0 = data[idx]
        x1 = torch.randn(x0.shape, generator=gen)
        t = torch.rand(cfg.batch_size, generator=gen)
        loss = flow_matching_loss(model, x0, x1, t, cfg.p, cfg.eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def sample_flow(model: torch.nn.Module, n: int, steps: int, seed: int = 0, dim: int = 2) -> torch.Tensor:
    """Euler integration of dx/dt = v_θ(x, t) from t = 1 (x ~ N(0, I)) to t = 0 in `steps` uniform steps.

    Returns [n, dim] samples; `steps` network evaluations (NFE). Deterministic given `seed`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    was_training = model.training
    model.eval()
    times = torch.linspace(1.0, 0.0, steps + 1)
    for t_cur, t_next in zip(times[:-1], times[1:]):
        v = model(x, torch.full((n,), TIME_SCALE * float(t_cur)))
        x = x + (t_next - t_cur) * v
    model.train(was_training)
    return x
