"""Evaluating a model as a run's `eval` section says: samples at each NFE (and EDM's Heun baseline
where asked), measured against the training data with a point distance or a Fréchet distance.

Used during training (`train()`) and by `ect eval`. The extractor and the reference statistics of
the training set are built once and reused; the reference covers the whole training set and is
cached on disk per (dataset content, extractor).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .config import EvalConfig, SamplingConfig
from .data import AnyDataset
from .metrics import FD_METRICS, energy_distance, fd_to_reference, get_extractor, reference_stats, sliced_wasserstein
from .precond import Precond
from .reporter import Reporter
from .sampling import Sampler, params_json, sample, sampler_for


@dataclass
class EvalResult:
    nfe: int
    sampler: str  # "consistency" or "heun"
    metric: str
    value: float
    extractor: str
    num_samples: int
    sampler_params: str  # canonical JSON of the sampler's parameters (steps, intermediate times, Heun steps)
    seed: int


def extractor_name(metric: str) -> str:
    """The feature space a metric is measured in ("points" for distances between 2-D points)."""
    return FD_METRICS.get(metric, "points")


class Evaluator:
    """Builds the metric for a dataset once; `evaluate(model)` then samples and measures."""

    def __init__(self, cfg: EvalConfig, sampling: SamplingConfig, data: AnyDataset, device: torch.device):
        if cfg.metric is None:
            raise ValueError("eval.metric is not set: nothing to evaluate")
        self.cfg, self.sampling, self.data, self.device = cfg, sampling, data, device
        if cfg.metric in FD_METRICS:
            self.extractor = get_extractor(FD_METRICS[cfg.metric], weights=cfg.weights, cache_dir=cfg.cache_dir,
                                           device=device)
            self.reference = reference_stats(data.floats(), self.extractor, cfg.cache_dir)
            self.extractor_name = self.extractor.name
        else:
            gen = torch.Generator().manual_seed(cfg.seed)
            self.points = data.x[torch.randperm(len(data), generator=gen)[: cfg.num_samples]]
            self.extractor_name = extractor_name(cfg.metric)

    def _batches(self, model: Precond, sampler: Sampler, seed: int) -> Iterator[torch.Tensor]:
        """Samples in batches, from a generator seeded by `seed` (the same noise for every evaluation)."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        left = self.cfg.num_samples
        while left > 0:
            n = min(left, self.cfg.batch_size)
            yield sample(model, sampler, n, self.data.sample_shape, gen, self.device)[0]
            left -= n

    def measure(self, model: Precond, sampler: Sampler, seed: int | None = None) -> float:
        """The configured distance between `model`'s samples (noise of `seed`, default eval.seed) and the data."""
        batches = self._batches(model, sampler, self.cfg.seed if seed is None else seed)
        if self.cfg.metric in FD_METRICS:
            return fd_to_reference(batches, self.reference, self.extractor)
        samples = torch.cat(list(batches)).cpu()
        if self.cfg.metric == "swd":
            return sliced_wasserstein(samples, self.points, seed=self.cfg.seed)
        return energy_distance(samples, self.points)

    def evaluate(self, model: Precond, step: int, reporter: Reporter, nfes: list[int] | None = None,
                 heun: bool | None = None) -> list[EvalResult]:
        """Evaluate at each NFE (consistency sampling) and, where asked, with the Heun sampler."""
        samplers = [sampler_for(self.sampling, n) for n in (nfes if nfes is not None else self.cfg.nfe)]
        if self.cfg.heun if heun is None else heun:
            samplers.append(sampler_for(self.sampling, heun=True))
        return self.evaluate_samplers(model, step, reporter, samplers)

    def evaluate_samplers(self, model: Precond, step: int, reporter: Reporter,
                          samplers: list[Sampler]) -> list[EvalResult]:
        """Measure `model` (in eval mode) with each sampler, reporting every result with its sampler's parameters."""
        was_training = model.training
        model.eval()
        results = []
        try:
            for sampler in samplers:
                res = EvalResult(sampler.nfe, sampler.name, self.cfg.metric, self.measure(model, sampler),
                                 self.extractor_name, self.cfg.num_samples, params_json(sampler), self.cfg.seed)
                reporter.evaluation(step, res.nfe, res.metric, res.value, extractor=res.extractor,
                                    num_samples=res.num_samples, sampler=res.sampler,
                                    sampler_params=res.sampler_params, seed=res.seed)
                results.append(res)
        finally:
            model.train(was_training)
        return results
