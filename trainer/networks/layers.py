"""Building blocks of the DDPM++ backbone, re-implemented after NVlabs EDM.

Reference: T. Karras, M. Aittala, T. Aila, S. Laine, "Elucidating the Design Space of
Diffusion-Based Generative Models" (NeurIPS 2022), code at https://github.com/NVlabs/edm,
file `training/networks.py` (classes `Linear`, `Conv2d`, `GroupNorm`, `AttentionOp`,
`UNetBlock`, `PositionalEmbedding`).

Module names, parameter shapes and buffer names match EDM exactly, so that the
`model.*` part of an EDM checkpoint loads with `load_state_dict(strict=True)`.
Differences that do not affect results: additions are out of place (EDM uses `add_`)
with explicit dtype casts so the output dtype is the same as EDM's, the attention
softmax is differentiated by plain autograd (EDM has a hand-written backward), and only
the non-fused resampling path is implemented (DDPM++ never uses the fused one).
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
from torch.nn.functional import silu

__all__ = ["weight_init", "Linear", "Conv2d", "GroupNorm", "PositionalEmbedding", "attention_weights", "UNetBlock"]


def weight_init(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """EDM's initialiser: a tensor of `shape` drawn from torch's global RNG."""
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f'Invalid init mode "{mode}"')


class Linear(torch.nn.Module):
    """Fully connected layer: `weight` [out, in], optional `bias` [out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init_mode: str = "kaiming_normal",
        init_weight: float = 1.0,
        init_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = torch.nn.Parameter(weight_init([out_features, in_features], **fans) * init_weight)
        if bias:
            self.bias = torch.nn.Parameter(weight_init([out_features], **fans) * init_bias)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.weight.to(x.dtype).t()
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)
        return x


def _resample_filter(taps: Sequence[float]) -> torch.Tensor:
    """The separable 2-D filter [1, 1, k, k] of EDM, normalised to unit sum."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    return torch.outer(f, f).unsqueeze(0).unsqueeze(1) / f.sum().square()


class Conv2d(torch.nn.Module):
    """Convolution with optional 2x up/downsampling by a fixed FIR filter (`resample_filter`).

    `kernel=0` gives a pure resampling layer without weights, as in EDM.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: Sequence[float] = (1, 1),
        init_mode: str = "kaiming_normal",
        init_weight: float = 1.0,
        init_bias: float = 0.0,
    ) -> None:
        if up and down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        shape = [out_channels, in_channels, kernel, kernel]
        if kernel:
            self.weight = torch.nn.Parameter(weight_init(shape, **fans) * init_weight)
        else:
            self.register_parameter("weight", None)
        if kernel and bias:
            self.bias = torch.nn.Parameter(weight_init([out_channels], **fans) * init_bias)
        else:
            self.register_parameter("bias", None)
        self.register_buffer("resample_filter", _resample_filter(resample_filter) if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.up:
            f4 = f.mul(4).tile([self.in_channels, 1, 1, 1])
            x = torch.nn.functional.conv_transpose2d(x, f4, groups=self.in_channels, stride=2, padding=f_pad)
        if self.down:
            fd = f.tile([self.in_channels, 1, 1, 1])
            x = torch.nn.functional.conv2d(x, fd, groups=self.in_channels, stride=2, padding=f_pad)
        if self.weight is not None:
            w = self.weight.to(x.dtype)
            x = torch.nn.functional.conv2d(x, w, padding=w.shape[-1] // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(torch.nn.Module):
    """Group normalisation with `min(num_groups, num_channels // min_channels_per_group)` groups."""

    def __init__(
        self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        if self.num_groups < 1:
            raise ValueError(f"GroupNorm needs at least {min_channels_per_group} channels, got {num_channels}")
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_channels))
        self.bias = torch.nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        return torch.nn.functional.group_norm(x, num_groups=self.num_groups, weight=w, bias=b, eps=self.eps)


class PositionalEmbedding(torch.nn.Module):
    """Sinusoidal embedding [cos | sin] of a vector of scalars (no parameters)."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        freqs = torch.arange(start=0, end=half, dtype=torch.float32, device=x.device)
        freqs = freqs / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax over keys of q·k / sqrt(c), computed in float32 and returned in q's dtype.

    q, k: [N, C, L]; result [N, L_q, L_k] (EDM's `AttentionOp`, with autograd's backward).
    Autocast is disabled locally so the logits and softmax really are float32.
    """
    no_autocast = (
        torch.autocast(device_type=q.device.type, enabled=False)
        if q.device.type in ("cpu", "cuda")
        else contextlib.nullcontext()  # meta tensors (FLOP counting, shape checks) have no autocast
    )
    with no_autocast:
        scale = 1 / math.sqrt(k.shape[1])
        logits = torch.einsum("ncq,nck->nqk", q.to(torch.float32), (k * scale).to(torch.float32))
        return logits.softmax(dim=2).to(q.dtype)


class UNetBlock(torch.nn.Module):
    """EDM's unified residual block with optional 2x resampling and single-layer self-attention.

    Defaults are the DDPM++ settings of `SongUNet` (EDM's own defaults are ADM's).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int = 1,
        dropout: float = 0.0,
        skip_scale: float = math.sqrt(0.5),
        eps: float = 1e-6,
        resample_filter: Sequence[float] = (1, 1),
        resample_proj: bool = True,
        adaptive_scale: bool = False,
        init: dict | None = None,
        init_zero: dict | None = None,
        init_attn: dict | None = None,
    ) -> None:
        super().__init__()
        init = dict(init or {})
        init_zero = dict(init_zero) if init_zero is not None else dict(init_weight=0)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        self.num_heads = num_heads if attention else 0
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale
        resample = dict(up=up, down=down, resample_filter=resample_filter)

        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, **resample, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)

        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, **resample, **init)

        if self.num_heads:
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            qkv_init = init_attn if init_attn is not None else init
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **qkv_init)
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(silu(self.norm0(x)))
        x = self._modulate(x, emb)
        x = self.conv1(torch.nn.functional.dropout(x, p=self.dropout, training=self.training))
        skip = self.skip(orig) if self.skip is not None else orig
        x = (x + skip.to(x.dtype)) * self.skip_scale
        if self.num_heads:
            x = self._attend(x)
        return x

    def _modulate(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Inject the embedding: additive shift (DDPM++) or scale-and-shift (adaptive_scale)."""
        params = self.affine(emb).unsqueeze(2).unsqueeze(3).to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(chunks=2, dim=1)
            return silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        return silu(self.norm1(x + params))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Residual self-attention over the H*W positions, EDM's channel layout of `qkv`."""
        n, c = x.shape[0], x.shape[1]
        qkv = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, -1)
        q, k, v = qkv.unbind(2)
        w = attention_weights(q, k)
        a = torch.einsum("nqk,nck->ncq", w, v.to(w.dtype))
        y = self.proj(a.reshape(*x.shape))
        return (y + x.to(y.dtype)) * self.skip_scale
