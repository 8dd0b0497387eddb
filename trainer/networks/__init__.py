"""Network backbones and the registry that builds one from a config's `network` section.

Every backbone is called as `net(x, noise_labels, class_labels=None, augment_labels=None)` and
returns a tensor shaped like `x`. Add an architecture by adding a builder to `NETWORKS`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .edm2 import UNet as EDM2UNet
from .mlp import MLP
from .songunet import SongUNet

__all__ = ["NETWORKS", "build_network", "SongUNet", "EDM2UNet", "MLP", "count_parameters"]

Builder = Callable[[Any, tuple[int, ...], int], torch.nn.Module]


def _square_image(cfg: Any, sample_shape: tuple[int, ...], arch: str) -> tuple[int, int]:
    """(channels, side) of square image data whose side the UNet's levels can halve."""
    if len(sample_shape) != 3:
        raise ValueError(f"network.arch {arch!r} needs image data (C, H, W), got sample shape {sample_shape}")
    channels, height, width = sample_shape
    factor = 2 ** (len(cfg.channel_mult) - 1)
    if height != width or height % factor:
        raise ValueError(
            f"network.channel_mult has {len(cfg.channel_mult)} levels, which needs square images with a side"
            f" divisible by {factor}; got {height}x{width}"
        )
    return channels, height


def _build_songunet(cfg: Any, sample_shape: tuple[int, ...], label_dim: int) -> SongUNet:
    channels, height = _square_image(cfg, sample_shape, "songunet")
    return SongUNet(
        img_resolution=height,
        in_channels=channels,
        out_channels=channels,
        label_dim=label_dim,
        augment_dim=cfg.augment_dim,
        model_channels=cfg.model_channels,
        channel_mult=list(cfg.channel_mult),
        channel_mult_emb=cfg.channel_mult_emb,
        num_blocks=cfg.num_blocks,
        attn_resolutions=list(cfg.attn_resolutions),
        dropout=cfg.dropout,
        label_dropout=cfg.label_dropout,
        channel_mult_noise=cfg.channel_mult_noise,
    )


def _build_edm2(cfg: Any, sample_shape: tuple[int, ...], label_dim: int) -> EDM2UNet:
    channels, height = _square_image(cfg, sample_shape, "edm2")
    return EDM2UNet(
        img_resolution=height,
        img_channels=channels,
        label_dim=label_dim,
        model_channels=cfg.model_channels,
        channel_mult=list(cfg.channel_mult),
        num_blocks=cfg.num_blocks,
        attn_resolutions=list(cfg.attn_resolutions),
        label_balance=cfg.label_balance,
        concat_balance=cfg.concat_balance,
        dropout=cfg.dropout,
        dropout_res=cfg.dropout_res,
    )


def _build_mlp(cfg: Any, sample_shape: tuple[int, ...], label_dim: int) -> MLP:
    if len(sample_shape) != 1:
        raise ValueError(f"network.arch 'mlp' needs point data (D,), got sample shape {sample_shape}")
    return MLP(
        dim=sample_shape[0],
        label_dim=label_dim,
        hidden=cfg.hidden,
        depth=cfg.depth,
        emb_dim=cfg.emb_dim,
        dropout=cfg.dropout,
    )


NETWORKS: dict[str, Builder] = {"songunet": _build_songunet, "edm2": _build_edm2, "mlp": _build_mlp}


def build_network(cfg: Any, *, sample_shape: tuple[int, ...], label_dim: int) -> torch.nn.Module:
    """Build the backbone named by `cfg.arch`.

    `sample_shape` is (C, H, W) for images or (D,) for points. `label_dim` is the dataset's
    number of classes (0 if unlabelled); the network is class-conditional iff `cfg.conditional`.
    """
    if cfg.arch not in NETWORKS:
        raise ValueError(f"network.arch: unknown architecture {cfg.arch!r} (known: {', '.join(NETWORKS)})")
    if cfg.conditional and label_dim <= 0:
        raise ValueError("network.conditional is set but the dataset has no labels")
    return NETWORKS[cfg.arch](cfg, tuple(sample_shape), label_dim if cfg.conditional else 0)


def count_parameters(net: torch.nn.Module) -> int:
    """Number of trainable parameters (buffers such as `resample_filter` excluded)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
