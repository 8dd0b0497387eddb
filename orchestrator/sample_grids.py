"""Sample grids of a study's image models: one row per run (pretrained model first, then tuning runs by
compute), one column per sampler, all from the same noise so rows differ only by the model."""

from __future__ import annotations

from pathlib import Path

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch and the trainer's sampling code load when samples are drawn
    import torch

    from trainer.config import TrainConfig
    from trainer.precond import Precond

Panels = dict[tuple[str, str], np.ndarray]


def _samples(net: Precond, cfg: TrainConfig, shape: tuple[int, ...], steps: int | None, n: int,
             seed: int) -> tuple[torch.Tensor, int]:
    """n samples of a loaded model: `steps`-step consistency sampling, or Heun when steps is None."""
    import torch

    from trainer.sampling import sample, sampler_for

    sampler = sampler_for(cfg.sampling, heun=True) if steps is None else sampler_for(cfg.sampling, steps)
    return sample(net, sampler, n, shape, torch.Generator().manual_seed(seed))


def one_run_per_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed runs whose checkpoint file exists, one per row: the pretraining run(s), then per compute budget
    the run with the lowest seed (the study's seed-0 curve)."""
    runs = frame.drop_duplicates("run_id")
    runs = runs[(runs["status"] == "completed") & runs["checkpoint"].notna()]
    runs = runs[runs["checkpoint"].map(lambda c: Path(c).is_file()).astype(bool)]  # a boolean mask even when empty
    pre = runs[runs["role"] == "pretrain"]
    tune = runs[runs["role"] != "pretrain"].sort_values(["images_seen", "seed"], kind="mergesort")
    return pd.concat([pre, tune.drop_duplicates("images_seen")], ignore_index=True)


def budget_label(run: Mapping[str, Any], smallest_images: float, pretrain_flops: float | None) -> str:
    """Row text of a tuning run: '2^3 · 400 it · 17.8 % of pretraining' (budget relative to the smallest one,
    tuning iterations, training compute as a share of the pretraining run's)."""
    ratio = run["images_seen"] / smallest_images
    power = math.log2(ratio)
    parts = [f"2^{round(power)}" if abs(power - round(power)) < 1e-6 else f"{ratio:.3g}×"]
    iterations = run.get("schedule.iterations")
    if iterations is not None and iterations == iterations:
        parts.append(f"{int(iterations)} it")
    if pretrain_flops:
        parts.append(f"{100 * run['train_flops'] / pretrain_flops:.1f} % of pretraining")
    return " · ".join(parts)


def budget_panels(frame: pd.DataFrame, steps: tuple[int, ...] = (1, 2), n: int = 32, seed: int = 0) -> Panels:
    """Tiles of `n` samples per (run, sampler); the pretrained model also gets the Heun sampler. Rows of
    tuning runs are labelled by `budget_label`."""
    from trainer.loop import load_model

    from .images import tile_images

    panels: Panels = {}
    chosen = one_run_per_budget(frame)
    tuning = chosen[chosen["role"] != "pretrain"]
    smallest = float(tuning["images_seen"].min()) if len(tuning) else 1.0
    pre = chosen.loc[chosen["role"] == "pretrain", "train_flops"]
    pretrain_flops = float(pre.iloc[0]) if len(pre) else None
    for run in chosen.to_dict(orient="records"):
        model = load_model(Path(run["checkpoint"]))  # once per run, shared by its samplers
        row = "pretrained (untuned)" if run["role"] == "pretrain" else budget_label(run, smallest, pretrain_flops)
        if run["role"] == "pretrain":
            images, nfe = _samples(*model, None, n, seed)
            panels[(row, f"Heun, {nfe} NFE")] = tile_images(images, cols=8)
        for k in steps:
            images, _ = _samples(*model, k, n, seed)
            panels[(row, f"{k}-step")] = tile_images(images, cols=8)
    return panels


def is_image_study(frame: pd.DataFrame) -> bool:
    """Whether the study's data are images (sample grids make sense), judged from its config columns."""
    return "data.name" in frame.columns and not frame["data.name"].isin(["swissroll"]).all()
