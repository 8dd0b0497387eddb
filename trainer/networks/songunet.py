"""DDPM++ backbone: a re-implementation of NVlabs EDM's `SongUNet`.

Reference: T. Karras, M. Aittala, T. Aila, S. Laine, "Elucidating the Design Space of
Diffusion-Based Generative Models" (NeurIPS 2022), https://github.com/NVlabs/edm,
`training/networks.py::SongUNet`, itself a re-implementation of DDPM++ from Song et al.,
"Score-Based Generative Modeling through Stochastic Differential Equations" (ICLR 2021).

Only the DDPM++ variant is provided (positional noise embedding, `encoder_type='standard'`,
`decoder_type='standard'`). Submodule names (`map_noise`, `map_label`, `map_augment`,
`map_layer0/1`, `enc`/`dec` with keys `{res}x{res}_conv|_down|_block{i}|_in0|_in1|_up|
_aux_norm|_aux_conv`) and all state-dict keys equal EDM's, so EDM checkpoints load with
`strict=True`. For NCSN++ (Fourier embedding, residual encoder) see EDM itself.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.nn.functional import silu

from .layers import Conv2d, GroupNorm, Linear, PositionalEmbedding, UNetBlock

__all__ = ["SongUNet"]

_INIT = dict(init_mode="xavier_uniform")
_INIT_ZERO = dict(init_mode="xavier_uniform", init_weight=1e-5)
_INIT_ATTN = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))


class SongUNet(torch.nn.Module):
    """EDM's DDPM++ U-Net. `forward(x, noise_labels, class_labels=None, augment_labels=None)` -> like x.

    x: [N, in_channels, R, R]; noise_labels: [N] (EDM's c_noise); class_labels: one-hot
    float [N, label_dim] (None means the all-zero "no label", as EDM's preconditioners pass
    for unconditional evaluation); augment_labels: [N, augment_dim] or None.
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        channel_mult_noise: int = 1,
        resample_filter: Sequence[float] = (1, 1),
    ) -> None:
        super().__init__()
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.augment_dim = augment_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        self._block_kwargs = dict(
            emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
            resample_filter=tuple(resample_filter), resample_proj=True, adaptive_scale=False,
            init=_INIT, init_zero=_INIT_ZERO, init_attn=_INIT_ATTN,
        )  # fmt: skip

        self.map_noise = PositionalEmbedding(num_channels=noise_channels, endpoint=True)
        self.map_label = Linear(label_dim, noise_channels, **_INIT) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **_INIT) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **_INIT)
        self.map_layer1 = Linear(emb_channels, emb_channels, **_INIT)

        self.enc = torch.nn.ModuleDict()
        cout = self._build_encoder(model_channels, channel_mult, num_blocks, attn_resolutions)
        skips = [block.out_channels for block in self.enc.values()]
        self.dec = torch.nn.ModuleDict()
        self._build_decoder(cout, skips, model_channels, channel_mult, num_blocks, attn_resolutions)

    # ------------------------------------------------------------------ construction

    def _block(self, cin: int, cout: int, **kwargs) -> UNetBlock:
        return UNetBlock(in_channels=cin, out_channels=cout, **self._block_kwargs, **kwargs)

    def _build_encoder(
        self, model_channels: int, channel_mult: Sequence[int], num_blocks: int, attn_resolutions: Sequence[int]
    ) -> int:
        """Fill `self.enc` in EDM's order; return the channel count at the bottleneck."""
        cout = self.in_channels
        for level, mult in enumerate(channel_mult):
            res = self.img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, kernel=3, **_INIT)
            else:
                self.enc[f"{res}x{res}_down"] = self._block(cout, cout, down=True)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                attn = res in attn_resolutions
                self.enc[f"{res}x{res}_block{idx}"] = self._block(cin, cout, attention=attn)
        return cout

    def _build_decoder(
        self,
        cout: int,
        skips: list[int],
        model_channels: int,
        channel_mult: Sequence[int],
        num_blocks: int,
        attn_resolutions: Sequence[int],
    ) -> None:
        """Fill `self.dec` in EDM's order, consuming the encoder's skip channel counts."""
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = self.img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = self._block(cout, cout, attention=True)
                self.dec[f"{res}x{res}_in1"] = self._block(cout, cout)
            else:
                self.dec[f"{res}x{res}_up"] = self._block(cout, cout, up=True)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = self._block(cin, cout, attention=attn)
            if level == 0:
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(num_channels=cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, self.out_channels, kernel=3, **_INIT_ZERO)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self._embed(x, noise_labels, class_labels, augment_labels)
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        return self._decode(x, emb, skips)

    def _embed(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None,
        augment_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """The mapping network: noise (+ label, + augment) embedding -> [N, emb_channels]."""
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # [cos|sin] -> [sin|cos]
        if self.map_label is not None:
            emb = emb + self.map_label(self._labels(x, class_labels) * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer0(emb))
        return silu(self.map_layer1(emb))

    def _labels(self, x: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        """Class labels with EDM's per-sample label dropout (global RNG) in training mode."""
        if class_labels is None:
            class_labels = torch.zeros([x.shape[0], self.label_dim], device=x.device, dtype=torch.float32)
        if self.training and self.label_dropout:
            keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
            class_labels = class_labels * keep.to(class_labels.dtype)
        return class_labels

    def _decode(self, x: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        out = tmp = None
        for name, block in self.dec.items():
            if name.endswith("_aux_norm"):
                tmp = block(x)
            elif name.endswith("_aux_conv"):
                tmp = block(silu(tmp))
                out = tmp if out is None else tmp + out
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return out
