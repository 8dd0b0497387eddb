"""Optimisers and learning-rate schedules of the paper: RAdam with a constant rate (CIFAR-10) and
Adam with EDM2's inverse-square-root decay lr_ref / sqrt(max(iters / t_ref, 1)) (ImageNet 64)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .config import OptimConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    cls = torch.optim.RAdam if cfg.name == "radam" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def learning_rate(cfg: OptimConfig, iteration: int) -> float:
    """Learning rate for the step at 0-based `iteration`."""
    if cfg.decay == "inv_sqrt":
        return cfg.lr / math.sqrt(max(iteration / cfg.t_ref, 1.0))
    return cfg.lr


def set_learning_rate(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
