"""Model FLOPs and training compute.

Forward FLOPs per sample are measured with `torch.utils.flop_counter` (matmuls and convolutions,
2 FLOPs per multiply-add). A training step costs 3x the forward (forward + backward) per image,
plus one more forward per image for ECT's no-grad target pass when it runs.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .precond import Precond

TUNING_BUDGET_IMAGES = 12.8e6  # the paper's unit of training compute: 12.8 M tuning images (Fig. 4)


def forward_flops_per_sample(net: Precond, sample_shape: tuple[int, ...], device: torch.device) -> int:
    """FLOPs of one forward pass f(x, t) for a single sample, measured without touching the RNG."""
    was_training = net.training
    net.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            x = torch.zeros((1, *sample_shape), device=device)
            t = torch.ones(1, device=device)
            labels = torch.zeros(1, dtype=torch.long, device=device) if net.label_dim else None
            with FlopCounterMode(display=False) as counter:
                net(x, t, labels)
        return int(counter.get_total_flops())
    finally:
        net.train(was_training)


def step_flops(batch_size: int, flops_per_sample: int, target_pass: bool) -> int:
    """Training FLOPs of one step: 3 forward-equivalents per image, plus the target forward."""
    return batch_size * flops_per_sample * (4 if target_pass else 3)
