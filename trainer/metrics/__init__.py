"""Distribution distances for evaluating generators.

- 2-D points: `sliced_wasserstein`, `energy_distance` (`points`).
- Images: Fréchet distances (Heusel et al. 2017) in the feature space of an extractor
  (`frechet`, `extractors`: digits CNN, FID Inception-v3, DINOv2), against reference statistics
  of the training set cached on disk (`reference`).
"""

from .extractors import (
    EXTRACTORS,
    FD_METRICS,
    FeatureExtractor,
    MissingWeightsError,
    WeightsMismatchError,
    default_cache_dir,
    get_extractor,
)
from .frechet import GaussianStats, StreamingStats, frechet_distance, frechet_distance_stats, stats_of
from .points import energy_distance, sliced_wasserstein
from .reference import fd_to_reference, feature_stats, load_stats, reference_key, reference_stats, save_stats

__all__ = [
    "EXTRACTORS",
    "FD_METRICS",
    "FeatureExtractor",
    "GaussianStats",
    "MissingWeightsError",
    "StreamingStats",
    "WeightsMismatchError",
    "default_cache_dir",
    "energy_distance",
    "fd_to_reference",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_stats",
    "get_extractor",
    "load_stats",
    "reference_key",
    "reference_stats",
    "save_stats",
    "sliced_wasserstein",
    "stats_of",
]
