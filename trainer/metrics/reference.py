"""Feature statistics of image sets, and reference statistics of a training set cached on disk.

The cache key is the sha256 of the dataset's pixels (a contiguous float32 CPU copy, with its
shape) together with the extractor's name and version, so a different dataset, resolution or
set of weights never reuses stale statistics. Files are .npz without pickles, written atomically.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ._files import atomic_write
from .extractors import FeatureExtractor, default_cache_dir
from .frechet import GaussianStats, StreamingStats, frechet_distance_stats

STATS_FORMAT = "ect-gaussian-stats-v1"


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        return (images[i : i + batch_size] for i in range(0, images.shape[0], batch_size))
    return images


def feature_stats(
    images: torch.Tensor | Iterable[torch.Tensor], extractor: FeatureExtractor, batch_size: int | None = None
) -> GaussianStats:
    """Mean and covariance of `extractor` features of images [N, C, H, W] in [-1, 1], or of an
    iterable of such batches (e.g. samples generated batch by batch), accumulated in float64."""
    acc = StreamingStats(extractor.dim)
    for batch in _batches(images, batch_size or extractor.batch_size):
        acc.update(extractor(batch))
    return acc.finalize()


def tensor_sha256(x: torch.Tensor) -> str:
    """sha256 of a tensor's shape and values as a contiguous float32 CPU array."""
    data = x.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(f"{tuple(data.shape)}|float32|".encode())
    digest.update(data.numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def reference_key(x: torch.Tensor, extractor: FeatureExtractor) -> str:
    """The cache key of `reference_stats`: dataset content hash + extractor name + extractor version."""
    text = f"{STATS_FORMAT}|{tensor_sha256(x)}|{extractor.name}|{extractor.version}"
    return hashlib.sha256(text.encode()).hexdigest()


def save_stats(path: Path, stats: GaussianStats, key: str = "") -> None:
    """Write `stats` (and its cache key) as an .npz of plain arrays, atomically."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma, "n": np.int64(stats.n), "key": np.str_(key),
              "format": np.str_(STATS_FORMAT)}
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def load_stats(path: Path) -> tuple[GaussianStats, str]:
    """(stats, key) from a file written by `save_stats`; never unpickles."""
    with np.load(path, allow_pickle=False) as f:
        if str(f["format"]) != STATS_FORMAT:
            raise ValueError(f"{path}: not an {STATS_FORMAT} file")
        stats = GaussianStats(mu=f["mu"].astype(np.float64), sigma=f["sigma"].astype(np.float64), n=int(f["n"]))
        return stats, str(f["key"])


def reference_stats(
    x: torch.Tensor, extractor: FeatureExtractor, cache_dir: Path | None = None, batch_size: int | None = None
) -> GaussianStats:
    """Statistics of `extractor` features of the dataset `x`, read from or written to the cache
    `cache_dir/reference_stats/` (default `default_cache_dir()`); an unreadable file is recomputed."""
    key = reference_key(x, extractor)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "reference_stats" / f"{extractor.name}-{key[:32]}.npz"
    if path.is_file():
        try:
            stats, stored_key = load_stats(path)
            if stored_key == key:
                return stats
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
            pass
    stats = feature_stats(x, extractor, batch_size)
    save_stats(path, stats, key)
    return stats


def fd_to_reference(
    samples: torch.Tensor | Iterable[torch.Tensor],
    reference: GaussianStats,
    extractor: FeatureExtractor,
    batch_size: int | None = None,
) -> float:
    """Fréchet distance between the features of `samples` and precomputed reference statistics."""
    return frechet_distance_stats(feature_stats(samples, extractor, batch_size), reference)
