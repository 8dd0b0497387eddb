"""EDM2 backbone: a re-implementation of NVlabs EDM2's magnitude-preserving `UNet`.

Reference: T. Karras, M. Aittala, J. Lehtinen, J. Hellsten, T. Aila, S. Laine, "Analyzing and
Improving the Training Dynamics of Diffusion Models" (CVPR 2024), https://github.com/NVlabs/edm2,
`training/networks_edm2.py` (config G, Fig. 21 of the paper). Equation numbers below are the
paper's appendix equations that the EDM2 code cites.

Module, parameter and buffer names equal EDM2's (`emb_fourier`, `emb_noise`, `emb_label`,
`enc`/`dec` keyed `{res}x{res}_conv|_down|_block{i}|_in0|_in1|_up`, `out_conv`, `out_gain`, and in
each block `emb_gain`, `emb_linear`, `conv_res0/1`, `conv_skip`, `attn_qkv`, `attn_proj`), so
the `unet.*` tensors of an EDM2 checkpoint load with `strict=True`. EDM2's `Precond` also holds a
learned log-variance head (`logvar_fourier`, `logvar_linear`) for its loss weighting; ECT does
not use it and it is not part of this backbone.

Differences from EDM2, none of which changes results:
- `forward(x, noise_labels, class_labels=None, augment_labels=None)` is this project's backbone
  convention; `class_labels=None` means the all-zero label, `augment_labels` must be None.
- dropout acts only in blocks at resolutions <= `dropout_res` (the ECT paper's setting; EDM2
  applies it everywhere, which is `dropout_res=None`), always through
  `torch.nn.functional.dropout` on the global RNG, so ECT can replay the masks;
- forced weight normalisation can be switched off (`no_forced_weight_norm`) for a no-grad pass,
  as the ECT authors' code does for the target pass;
- activation clipping is out of place (EDM2 uses `clip_`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator, Sequence

import torch

__all__ = [
    "normalize",
    "resample",
    "mp_silu",
    "mp_sum",
    "mp_cat",
    "MPFourier",
    "MPConv",
    "Block",
    "UNet",
    "no_forced_weight_norm",
    "EDM2_IMAGENET64",
    "EDM2_PRESETS",
    "edm2_imagenet64",
]

# ---------------------------------------------------------------------------- functions


def normalize(x: torch.Tensor, dim: Sequence[int] | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Scale `x` to unit RMS over `dim` (default: all but the first): x / (eps + |x| / sqrt(n)).

    With the default `dim` a weight [out, ...] gets per-output-channel norm sqrt(fan_in) (up to
    eps), i.e. unit-variance rows (paper Eq. 66 and Appendix B.6). The norm is taken in float32.
    """
    if dim is None:
        dim = list(range(1, x.ndim))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


@functools.lru_cache(maxsize=None)
def _resample_kernel(taps: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The separable 2-D filter [1, 1, k, k], normalised to unit sum (cached per dtype/device)."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = f / f.sum()
    return torch.outer(f, f)[None, None].to(dtype=dtype, device=device)


def resample(x: torch.Tensor, f: Sequence[float] = (1, 1), mode: str = "keep") -> torch.Tensor:
    """2x down- or upsample `x` [N, C, H, W] per channel with the FIR filter `f`, or keep it ('keep')."""
    if mode == "keep":
        return x
    if len(f) % 2:
        raise ValueError(f"resample filter needs an even number of taps, got {list(f)}")
    kernel = _resample_kernel(tuple(float(v) for v in f), x.dtype, x.device)
    pad = (len(f) - 1) // 2
    c = x.shape[1]
    if mode == "down":
        return torch.nn.functional.conv2d(x, kernel.tile([c, 1, 1, 1]), groups=c, stride=2, padding=(pad,))
    if mode == "up":
        weight = (kernel * 4).tile([c, 1, 1, 1])
        return torch.nn.functional.conv_transpose2d(x, weight, groups=c, stride=2, padding=(pad,))
    raise ValueError(f"resample mode must be 'keep', 'down' or 'up', got {mode!r}")


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """Magnitude-preserving SiLU, silu(x) / 0.596 (Eq. 81)."""
    return torch.nn.functional.silu(x) / 0.596


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """Magnitude-preserving weighted sum ((1 - t) a + t b) / sqrt((1 - t)^2 + t^2) (Eq. 88)."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: torch.Tensor, b: torch.Tensor, dim: int = 1, t: float = 0.5) -> torch.Tensor:
    """Magnitude-preserving concatenation along `dim` with balance t (Eq. 103)."""
    na, nb = a.shape[dim], b.shape[dim]
    scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    wa = scale / math.sqrt(na) * (1 - t)
    wb = scale / math.sqrt(nb) * t
    return torch.cat([wa * a, wb * b], dim=dim)


# ---------------------------------------------------------------------------- layers


class MPFourier(torch.nn.Module):
    """Magnitude-preserving Fourier features sqrt(2) cos(2 pi (f x + phi)) (Eq. 75).

    Buffers `freqs` and `phases` (already multiplied by 2 pi) are random and fixed.
    """

    def __init__(self, num_channels: int, bandwidth: float = 1) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.outer(x.to(torch.float32), self.freqs.to(torch.float32))
        y = y + self.phases.to(torch.float32)
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(torch.nn.Module):
    """Magnitude-preserving convolution (`kernel=[k, k]`) or linear layer (`kernel=[]`), no bias.

    The effective weight is normalize(weight) * gain / sqrt(fan_in) (Eq. 47). In training mode
    the stored weight is first overwritten by normalize(weight): forced weight normalisation
    (Eq. 66, Sec. 2.3), unless `force_wn` is False (see `no_forced_weight_norm`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int]) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.force_wn = True
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1) -> torch.Tensor:
        w = self.effective_weight(gain).to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return torch.nn.functional.conv2d(x, w, padding=(w.shape[-1] // 2,))

    def effective_weight(self, gain: float | torch.Tensor = 1) -> torch.Tensor:
        """normalize(weight) * gain / sqrt(fan_in) in float32, forcing weight normalisation first.

        As in EDM2, `w` aliases the parameter when it is float32, so the forward then uses the
        freshly normalised stored weight.
        """
        w = self.weight.to(torch.float32)
        if self.training and self.force_wn:
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = normalize(w)
        return w * (gain / math.sqrt(w[0].numel()))


@contextlib.contextmanager
def no_forced_weight_norm(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block, no `MPConv` under `module` overwrites its stored weight in training mode.

    The forward still uses normalize(weight), so outputs equal those with forcing whenever the
    weights are already normalised (e.g. by the preceding training-mode pass), up to the last-bit
    effect of normalising twice. For ECT's no-grad target pass, as in the authors' code.
    Each MPConv's previous setting is restored on exit.
    """
    convs = [m for m in module.modules() if isinstance(m, MPConv)]
    saved = [m.force_wn for m in convs]
    for m in convs:
        m.force_wn = False
    try:
        yield module
    finally:
        for m, flag in zip(convs, saved):
            m.force_wn = flag


# ---------------------------------------------------------------------------- blocks


class Block(torch.nn.Module):
    """EDM2's encoder ('enc') or decoder ('dec') residual block with optional self-attention (Fig. 21).

    Encoder: resample -> (1x1 `conv_skip` if channels change) -> pixel norm -> residual branch.
    Decoder: resample -> residual branch, with `conv_skip` on the main branch if channels change.
    Residual branch: conv_res0(mp_silu(x)) * (1 + emb_linear(emb) * emb_gain) -> mp_silu ->
    dropout -> conv_res1, merged by mp_sum(t=res_balance); then optional cosine attention over
    heads of `channels_per_head` channels, merged by mp_sum(t=attn_balance); then clipping.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        flavor: str = "enc",
        resample_mode: str = "keep",
        resample_filter: Sequence[float] = (1, 1),
        attention: bool = False,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: float | None = 256,
    ) -> None:
        super().__init__()
        if flavor not in ("enc", "dec"):
            raise ValueError(f"Block flavor must be 'enc' or 'dec', got {flavor!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.flavor = flavor
        self.resample_filter = tuple(resample_filter)
        self.resample_mode = resample_mode
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout = dropout
        self.res_balance = res_balance
        self.attn_balance = attn_balance
        self.clip_act = clip_act
        self.emb_gain = torch.nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, kernel=[3, 3])
        self.emb_linear = MPConv(emb_channels, out_channels, kernel=[])
        self.conv_res1 = MPConv(out_channels, out_channels, kernel=[3, 3])
        self.conv_skip = MPConv(in_channels, out_channels, kernel=[1, 1]) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, kernel=[1, 1]) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, kernel=[1, 1]) if self.num_heads else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = resample(x, f=self.resample_filter, mode=self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)  # pixel norm
        y = self._residual(x, emb)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        if self.num_heads:
            x = mp_sum(x, self._attention(x), t=self.attn_balance)
        if self.clip_act is not None:
            x = x.clamp(-self.clip_act, self.clip_act)
        return x

    def _residual(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The residual branch with the multiplicative embedding and (global-RNG) dropout."""
        y = self.conv_res0(mp_silu(x))
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * c.unsqueeze(2).unsqueeze(3).to(y.dtype))
        if self.training and self.dropout != 0:
            y = torch.nn.functional.dropout(y, p=self.dropout, training=True)
        return self.conv_res1(y)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention with pixel-normalised q, k, v (cosine attention, Sec. 3)."""
        y = self.attn_qkv(x)
        y = y.reshape(y.shape[0], self.num_heads, -1, 3, y.shape[2] * y.shape[3])
        q, k, v = normalize(y, dim=2).unbind(3)
        w = torch.einsum("nhcq,nhck->nhqk", q, k / math.sqrt(q.shape[2])).softmax(dim=3)
        y = torch.einsum("nhqk,nhck->nhcq", w, v)
        return self.attn_proj(y.reshape(*x.shape))


# ---------------------------------------------------------------------------- U-Net


class UNet(torch.nn.Module):
    """EDM2's U-Net (config G, Fig. 21). `forward(x, noise_labels, class_labels=None)` -> like x.

    x: [N, img_channels, R, R]; noise_labels: [N], EDM2's c_noise = ln(sigma) / 4;
    class_labels: one-hot [N, label_dim] (None = all-zero label). A constant-ones channel is
    appended to the input, as in EDM2. `dropout` acts in blocks at resolution <= `dropout_res`
    (None: in every block, as EDM2). Further keyword arguments go to every `Block`.
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        channel_mult_noise: int | None = None,
        channel_mult_emb: int | None = None,
        num_blocks: int = 3,
        attn_resolutions: Sequence[int] = (16, 8),
        label_balance: float = 0.5,
        concat_balance: float = 0.5,
        dropout: float = 0.0,
        dropout_res: int | None = 16,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.label_balance = label_balance
        self.concat_balance = concat_balance
        self.dropout_res = dropout_res
        cblock = [model_channels * m for m in channel_mult]
        cnoise = model_channels * channel_mult_noise if channel_mult_noise is not None else cblock[0]
        cemb = model_channels * channel_mult_emb if channel_mult_emb is not None else max(cblock)
        self.out_gain = torch.nn.Parameter(torch.zeros([]))

        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, kernel=[])
        self.emb_label = MPConv(label_dim, cemb, kernel=[]) if label_dim else None

        block = functools.partial(self._block, emb_channels=cemb, dropout=dropout, **block_kwargs)
        self.enc = torch.nn.ModuleDict()
        cout = self._build_encoder(block, cblock, num_blocks, attn_resolutions)
        skips = [b.out_channels for b in self.enc.values()]
        self.dec = torch.nn.ModuleDict()
        cout = self._build_decoder(block, cout, skips, cblock, num_blocks, attn_resolutions)
        self.out_conv = MPConv(cout, img_channels, kernel=[3, 3])

    # ------------------------------------------------------------------ construction

    def _block(self, cin: int, cout: int, res: int, *, dropout: float, **kwargs) -> Block:
        """A Block at feature resolution `res`; dropout only if res <= dropout_res."""
        active = self.dropout_res is None or res <= self.dropout_res
        return Block(cin, cout, dropout=dropout if active else 0.0, **kwargs)

    def _build_encoder(
        self, block: functools.partial, cblock: list[int], num_blocks: int, attn_resolutions: Sequence[int]
    ) -> int:
        """Fill `self.enc` in EDM2's order; return the channel count at the bottleneck."""
        cout = self.img_channels + 1
        for level, channels in enumerate(cblock):
            res = self.img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = MPConv(cout, channels, kernel=[3, 3])
                cout = channels
            else:
                self.enc[f"{res}x{res}_down"] = block(cout, cout, res, flavor="enc", resample_mode="down")
            for idx in range(num_blocks):
                attn = res in attn_resolutions
                self.enc[f"{res}x{res}_block{idx}"] = block(cout, channels, res, flavor="enc", attention=attn)
                cout = channels
        return cout

    def _build_decoder(
        self,
        block: functools.partial,
        cout: int,
        skips: list[int],
        cblock: list[int],
        num_blocks: int,
        attn_resolutions: Sequence[int],
    ) -> int:
        """Fill `self.dec` in EDM2's order, consuming the encoder's skip channel counts."""
        for level, channels in reversed(list(enumerate(cblock))):
            res = self.img_resolution >> level
            if level == len(cblock) - 1:
                self.dec[f"{res}x{res}_in0"] = block(cout, cout, res, flavor="dec", attention=True)
                self.dec[f"{res}x{res}_in1"] = block(cout, cout, res, flavor="dec")
            else:
                self.dec[f"{res}x{res}_up"] = block(cout, cout, res, flavor="dec", resample_mode="up")
            for idx in range(num_blocks + 1):
                cin, attn = cout + skips.pop(), res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = block(cin, channels, res, flavor="dec", attention=attn)
                cout = channels
        return cout

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if augment_labels is not None:
            raise ValueError("the EDM2 UNet has no augmentation conditioning; augment_labels must be None")
        emb = self._embed(x, noise_labels, class_labels)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, emb)
            skips.append(x)
        for name, block in self.dec.items():
            if "_block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain)

    def _embed(
        self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None
    ) -> torch.Tensor:
        """Noise (+ class) embedding [N, cemb]: mp_sum of the two, then mp_silu (Fig. 21)."""
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if self.emb_label is not None:
            if class_labels is None:
                class_labels = torch.zeros([x.shape[0], self.label_dim], device=x.device, dtype=emb.dtype)
            label = self.emb_label(class_labels * math.sqrt(class_labels.shape[1]))
            emb = mp_sum(emb, label, t=self.label_balance)
        return mp_silu(emb)


# ---------------------------------------------------------------------------- presets

EDM2_IMAGENET64: dict = dict(
    img_resolution=64, img_channels=3, label_dim=1000, channel_mult=[1, 2, 3, 4], num_blocks=3,
    attn_resolutions=[16, 8],
)
"""EDM2's ImageNet-64 layout (pixel space, class-conditional)."""

EDM2_PRESETS: dict[str, dict] = {
    "edm2-s": dict(model_channels=192, dropout=0.4),
    "edm2-m": dict(model_channels=256, dropout=0.5),
    "edm2-l": dict(model_channels=320, dropout=0.5),
    "edm2-xl": dict(model_channels=384, dropout=0.5),
}
"""EDM2's ImageNet-64 sizes S/M/L/XL with the dropout that ECT tunes them with."""


def edm2_imagenet64(preset: str, **overrides) -> UNet:
    """The ImageNet-64 UNet of size `preset` (a key of `EDM2_PRESETS`); `overrides` win."""
    if preset not in EDM2_PRESETS:
        raise ValueError(f"unknown EDM2 preset {preset!r} (known: {', '.join(EDM2_PRESETS)})")
    return UNet(**{**EDM2_IMAGENET64, **EDM2_PRESETS[preset], **overrides})
