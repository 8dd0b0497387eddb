"""Feature extractors for Fréchet distances: a common interface and a registry.

Every extractor takes images [N, C, H, W] (C = 1 or 3) in [-1, 1], as `trainer.data` and the
samplers produce them, and returns features [N, dim] (float32, on the extractor's device) with
no gradient, the network in eval mode.

- `digits`: the `trainer.metrics.digits` CNN (128-d penultimate layer), trained on first use.
- `inception`: the FID Inception-v3 (2048-d pool3) of pytorch-fid, or NVIDIA's TorchScript port.
- `dinov2_vitl14` (alias `dinov2`) / `dinov2_vitb14`: DINOv2 CLS features as in dgm-eval.

Pretrained weights are only ever read from local files; nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
import warnings
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..inputs import INCEPTION, WeightsSpec, dinov2_weights, find_weights
from . import digits as digits_cnn
from ._files import sha256_file
from .dinov2 import VITB14, VITL14, DinoVisionTransformer, ViTConfig
from .inception import INPUT_SIZE, FIDInceptionV3

ENV_CACHE_DIR = "ECT_CACHE_DIR"
DINOV2_INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_OPTIONAL_KEYS = frozenset({"mask_token", "num_batches_tracked"})


class MissingWeightsError(FileNotFoundError):
    """A pretrained network's weights file is not on disk; the message is one line saying how to provide it."""


class WeightsMismatchError(ValueError):
    """A weights file that does not fit the network; the message is one line naming the file."""


def default_cache_dir() -> Path:
    """`$ECT_CACHE_DIR`, else `~/.cache/ect`."""
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "ect")


# --------------------------------------------------------------------------- interface


class FeatureExtractor(ABC):
    """images [N, C, H, W] in [-1, 1] -> features [N, dim]; `version` identifies the weights."""

    name: str
    dim: int
    batch_size: int = 64

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @property
    @abstractmethod
    def version(self) -> str:
        """A string that changes whenever the features could (weights hash, recipe, preprocessing)."""

    @abstractmethod
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] on `self.device` -> the network's input."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's input -> features [N, dim]."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: expected images [N, 1 or 3, H, W], got {tuple(images.shape)}")
        with torch.no_grad():
            x = self.preprocess(images.detach().to(self.device, torch.float32))
            return self.forward(x).float()


def to_uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the integers 0..255 (as float) that saving a PNG would store, rounded as EDM does:
    `(x * 127.5 + 128).clip(0, 255).to(uint8)`."""
    return (images * 127.5 + 128.0).clamp(0.0, 255.0).floor()


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grayscale [N, 1, H, W] repeated to 3 channels (PIL's convert('RGB')); RGB unchanged."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


# --------------------------------------------------------------------------- weights files


def resolve_weights(weights: Path | None, spec: WeightsSpec) -> Path:
    """The weights file from `weights`, else the spec's environment variable, else the torch hub cache
    (`trainer.inputs.find_weights`, which a study's validation uses too); or MissingWeightsError."""
    path, why = find_weights(weights, spec)
    if path is None:
        raise MissingWeightsError(why)
    return path


def _load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A weights-only state dict (no pickled code), as CPU tensors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsMismatchError(f"{path}: not a readable {what} state dict ({type(e).__name__})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatchError(f"{path}: expected a {what} state dict of tensors")
    return dict(state)


def load_pretrained(factory: Callable[[], nn.Module], path: Path, what: str) -> nn.Module:
    """Build `factory()` on the meta device and load the state dict at `path` into it, strictly.

    Only the unused `mask_token` (DINOv2) and BatchNorm `num_batches_tracked` counters (absent
    from old checkpoints) may be missing; they are filled with zeros. Mismatches are one line.
    """
    with torch.device("meta"):
        module = factory()
    state = _load_state_dict(path, what)
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in state and key.rsplit(".", 1)[-1] in _OPTIONAL_KEYS:
            state[key] = torch.zeros(ref.shape, dtype=ref.dtype)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise WeightsMismatchError(
            f"{path}: not a {what} state dict ({len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(shapes)} shape mismatches {shapes[:3]})"
        )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    return module


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding `constants.pkl` / `code/`), not a torch.save file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=None)
def unupsample_matrix(size: int) -> torch.Tensor:
    """[8, size] float64: the pseudo-inverse of `trainer.data`'s 1-D bilinear upsampling 8 -> size
    (align_corners=False), i.e. the least-squares 8-pixel row whose upsampling is closest to a row."""
    res = digits_cnn.RESOLUTION
    basis = torch.eye(res, dtype=torch.float64).view(res, 1, 1, res)
    up = F.interpolate(basis, size=(1, size), mode="bilinear", align_corners=False).view(res, size)
    return torch.linalg.pinv(up.T)


def to_digits_resolution(x: torch.Tensor) -> torch.Tensor:
    """Images [N, 1, H, W] (H, W >= 8) -> [N, 1, 8, 8] by the pseudo-inverse of bilinear upsampling.

    Bilinear upsampling is separable (X -> U_h X U_w^T), so P_h X P_w^T with P = pinv(U) recovers
    the 8x8 originals of `trainer.data`'s 16x16 / 32x32 digits exactly, and projects generated
    images onto the closest (least-squares) upsampled 8x8 image. A plain bilinear downsampling
    (antialias=False) instead blurs the originals by [1/16, 7/8, 1/16] per axis at 32x32: the FD
    between the 32x32 test split and its own 8x8 originals was then 13.6, against 4.9 between the
    (8x8) train and test splits.
    """
    h, w = x.shape[-2:]
    if min(h, w) < digits_cnn.RESOLUTION:
        raise ValueError(f"digits: expected images of at least 8x8, got {h}x{w}")
    if (h, w) == (digits_cnn.RESOLUTION, digits_cnn.RESOLUTION):
        return x
    ph, pw = unupsample_matrix(h).to(x), unupsample_matrix(w).to(x)
    return torch.einsum("ih,nchw,jw->ncij", ph, x, pw)


class DigitsExtractor(FeatureExtractor):
    """128-d penultimate features of the digits CNN (`trainer.metrics.digits`).

    Inputs are clamped to [-1, 1], averaged to one channel if RGB and, when larger than 8x8,
    brought back to 8x8 by `to_digits_resolution` (the exact inverse of `trainer.data`'s upsampling).
    """

    name = "digits"
    dim = digits_cnn.RECIPE["arch"]["feature_dim"]
    batch_size = 2048

    def __init__(self, weights: Path | None = None, cache_dir: Path | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        if weights is not None and not Path(weights).is_file():
            raise MissingWeightsError(
                f"digits classifier weights not found: expected a state dict file at {weights}; "
                "pass --weights PATH or omit it to train the classifier on first use"
            )
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.weights = Path(weights) if weights is not None else digits_cnn.ensure_digits_weights(cache)
        self.net = digits_cnn.load_digits_cnn(self.weights).to(self.device)

    @functools.cached_property
    def version(self) -> str:
        return f"digits-cnn-{digits_cnn.recipe_hash()}:{sha256_file(self.weights)[:16]}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return to_digits_resolution(images.clamp(-1.0, 1.0).mean(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


# --------------------------------------------------------------------------- Inception (FID)


class InceptionExtractor(FeatureExtractor):
    """2048-d pool3 features of the FID Inception-v3 (Heusel et al. 2017).

    With pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` it follows pytorch-fid's pipeline:
    images become the 8-bit values a PNG holds (`to_uint8_levels`), are read as [0, 1]
    (ToTensor), grayscale is repeated to RGB, then `InceptionV3(resize_input=True,
    normalize_input=True)`: bilinear resize to 299x299 (align_corners=False) and 2x - 1.
    With NVIDIA's TorchScript `inception-2015-12-05.pt` the uint8 RGB images go in at their own
    resolution as in StyleGAN2-ADA / EDM: `model(images, return_features=True)`.
    """

    name = "inception"
    dim = 2048
    batch_size = 64

    def __init__(self, weights: Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.weights = resolve_weights(weights, INCEPTION)
        self.torchscript = is_torchscript(self.weights)
        if self.torchscript:
            with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; NVIDIA's file is one
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(self.weights), map_location=self.device).eval()
        else:
            net = load_pretrained(FIDInceptionV3, self.weights, "pytorch-fid Inception-v3")
            self.net = net.to(self.device).eval().requires_grad_(False)

    @functools.cached_property
    def version(self) -> str:
        kind = "nvidia-torchscript" if self.torchscript else "pytorch-fid"
        return f"inception-{kind}:{sha256_file(self.weights)[:16]}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        levels = to_rgb(to_uint8_levels(images))
        if self.torchscript:
            return levels.to(torch.uint8)
        x = F.interpolate(levels / 255.0, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.torchscript:
            return self.net(x, return_features=True)
        return self.net(x)


# --------------------------------------------------------------------------- DINOv2 (dgm-eval)


def pil_bicubic_resize(levels: torch.Tensor, size: int) -> torch.Tensor:
    """PIL's `Image.resize(..., BICUBIC)` of 8-bit images, emulated in torch.

    PIL resamples with a bicubic (a = -0.5) filter widened by the scale when shrinking, horizontal
    pass first, each pass rounded half up and clipped to 8 bits; torch's bicubic with
    antialias=True uses the same filter. Computed in float64, the result differs from PIL's by one
    level at about 0.01-0.05% of pixels (PIL's 22-bit fixed-point weights break near-ties).
    """
    x = levels.to(torch.float64)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(x.shape[-2], size), mode="bicubic", antialias=True, align_corners=False)
        x = torch.floor(x + 0.5).clamp(0.0, 255.0)
    if x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = torch.floor(x + 0.5).clamp(0.0, 255.0)
    return x.to(levels.dtype)


class DINOv2Extractor(FeatureExtractor):
    """DINOv2 final-norm CLS features, preprocessed as dgm-eval (Stein et al. 2023) does by default.

    dgm-eval reads PNGs as RGB PIL images, resizes them to 224x224 with PIL bicubic
    (`TF.Resize((224, 224), BICUBIC)`), applies ToTensor and ImageNet mean/std normalisation;
    here: `to_uint8_levels`, RGB, `pil_bicubic_resize`, / 255, normalise. 224 / 14 = 16 patches a
    side, so the 37x37 positional embedding is resampled as DINOv2 does.
    """

    batch_size = 32

    def __init__(self, arch: str = "vitl14", weights: Path | None = None, device: str | torch.device = "cpu",
                 config: ViTConfig | None = None) -> None:
        super().__init__(device)
        if arch not in DINOV2_CONFIGS:
            raise ValueError(f"unknown DINOv2 architecture {arch!r} (expected one of {', '.join(DINOV2_CONFIGS)})")
        self.name = f"dinov2_{arch}"
        cfg = config or DINOV2_CONFIGS[arch]
        self.dim = cfg.embed_dim
        spec = dinov2_weights(arch)
        filename = spec.filenames[0]
        self.weights = resolve_weights(weights, spec)
        net = load_pretrained(lambda: DinoVisionTransformer(cfg), self.weights, f"DINOv2 {arch} ({filename})")
        self.net = net.to(self.device).eval().requires_grad_(False)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self._mean, self._std = mean.view(1, 3, 1, 1).to(self.device), std.view(1, 3, 1, 1).to(self.device)

    @functools.cached_property
    def version(self) -> str:
        return f"{self.name}-dgm-eval:{sha256_file(self.weights)[:16]}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = pil_bicubic_resize(to_rgb(to_uint8_levels(images)), DINOV2_INPUT_SIZE) / 255.0
        return (x - self._mean) / self._std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


DINOV2_CONFIGS: dict[str, ViTConfig] = {"vitl14": VITL14, "vitb14": VITB14}


# --------------------------------------------------------------------------- registry


def _digits(weights: Path | None, cache_dir: Path | None, device: str | torch.device) -> FeatureExtractor:
    return DigitsExtractor(weights=weights, cache_dir=cache_dir, device=device)


def _inception(weights: Path | None, cache_dir: Path | None, device: str | torch.device) -> FeatureExtractor:
    return InceptionExtractor(weights=weights, device=device)


def _dinov2(arch: str) -> Callable[[Path | None, Path | None, str | torch.device], FeatureExtractor]:
    def make(weights: Path | None, cache_dir: Path | None, device: str | torch.device) -> FeatureExtractor:
        return DINOv2Extractor(arch, weights=weights, device=device)

    return make


EXTRACTORS: dict[str, Callable[[Path | None, Path | None, str | torch.device], FeatureExtractor]] = {
    "digits": _digits,
    "inception": _inception,
    "dinov2": _dinov2("vitl14"),
    "dinov2_vitl14": _dinov2("vitl14"),
    "dinov2_vitb14": _dinov2("vitb14"),
}

FD_METRICS: dict[str, str] = {
    "fd_digits": "digits",
    "fd_inception": "inception",
    "fd_dinov2": "dinov2_vitl14",
    "fd_dinov2_vitb14": "dinov2_vitb14",
}
"""Metric name -> extractor name: a Fréchet distance in that extractor's feature space."""


def get_extractor(name: str, *, weights: Path | None = None, cache_dir: Path | None = None,
                  device: str | torch.device = "cpu") -> FeatureExtractor:
    """Build the extractor `name` (see `EXTRACTORS`), reading weights only from local files."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r} (expected one of {', '.join(EXTRACTORS)})")
    return EXTRACTORS[name](Path(weights) if weights is not None else None, cache_dir, device)
