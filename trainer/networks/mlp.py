"""A residual MLP denoiser backbone for low-dimensional (2-D) point data.

Same call convention as `SongUNet`: `forward(x, noise_labels, class_labels=None, augment_labels=None)`.
The noise embedding is the sinusoidal one of DDPM++ (`PositionalEmbedding`, endpoint=True).
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import silu

from .layers import PositionalEmbedding

__all__ = ["MLP", "ResidualBlock"]


class ResidualBlock(torch.nn.Module):
    """h + fc1 -> (+ per-block embedding) -> SiLU -> dropout -> fc2, with a pre-LayerNorm."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm = torch.nn.LayerNorm(hidden)
        self.fc1 = torch.nn.Linear(hidden, hidden)
        self.emb = torch.nn.Linear(hidden, hidden)
        self.fc2 = torch.nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        y = self.fc1(self.norm(h))
        y = silu(y + self.emb(emb).to(y.dtype))
        y = torch.nn.functional.dropout(y, p=self.dropout, training=self.training)
        y = self.fc2(y)
        return h + y.to(h.dtype)


class MLP(torch.nn.Module):
    """Residual MLP: x [N, dim] -> [N, dim], conditioned on noise_labels [N] and optional one-hot labels."""

    def __init__(
        self,
        dim: int = 2,
        label_dim: int = 0,
        hidden: int = 128,
        depth: int = 3,
        emb_dim: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if emb_dim % 2:
            raise ValueError(f"emb_dim must be even, got {emb_dim}")
        self.dim = dim
        self.label_dim = label_dim
        self.map_noise = PositionalEmbedding(num_channels=emb_dim, endpoint=True)
        self.map_label = torch.nn.Linear(label_dim, emb_dim) if label_dim else None
        self.map_layer = torch.nn.Linear(emb_dim, hidden)
        self.inp = torch.nn.Linear(dim, hidden)
        self.blocks = torch.nn.ModuleList(ResidualBlock(hidden, dropout) for _ in range(depth))
        self.out_norm = torch.nn.LayerNorm(hidden)
        self.out = torch.nn.Linear(hidden, dim)
        with torch.no_grad():  # near-zero output at init, as EDM's init_zero
            self.out.weight.mul_(1e-5)
            self.out.bias.zero_()

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`augment_labels` is accepted for interface compatibility and ignored."""
        emb = self.map_noise(noise_labels)
        if self.map_label is not None:
            if class_labels is None:
                class_labels = torch.zeros([x.shape[0], self.label_dim], device=x.device, dtype=emb.dtype)
            emb = emb + self.map_label(class_labels.to(emb.dtype) * math.sqrt(self.label_dim))
        emb = silu(self.map_layer(emb))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(silu(self.out_norm(h)))
