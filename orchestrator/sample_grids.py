"""Sample grids of a study's image models: one row per run (pretrained model first, then tuning runs by
compute), one column per sampler, all from the same noise so rows differ only by the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainer.config import TrainConfig
from trainer.loop import load_model
from trainer.precond import Precond
from trainer.sampling import sample, sampler_for

from .images import tile_images

Panels = dict[tuple[str, str], np.ndarray]


def _samples(net: Precond, cfg: TrainConfig, shape: tuple[int, ...], steps: int | None, n: int,
             seed: int) -> tuple[torch.Tensor, int]:
    """n samples of a loaded model: `steps`-step consistency sampling, or Heun when steps is None."""
    sampler = sampler_for(cfg.sampling, heun=True) if steps is None else sampler_for(cfg.sampling, steps)
    return sample(net, sampler, n, shape, torch.Generator().manual_seed(seed))


def one_run_per_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed runs whose checkpoint file exists, one per row: the pretraining run(s), then per compute budget
    the run with the lowest seed (the study's seed-0 curve)."""
    runs = frame.drop_duplicates("run_id")
    runs = runs[(runs["status"] == "completed") & runs["checkpoint"].notna()]
    runs = runs[[Path(c).is_file() for c in runs["checkpoint"]]]
    pre = runs[runs["role"] == "pretrain"]
    tune = runs[runs["role"] != "pretrain"].sort_values(["images_seen", "seed"], kind="mergesort")
    return pd.concat([pre, tune.drop_duplicates("images_seen")], ignore_index=True)


def budget_panels(frame: pd.DataFrame, steps: tuple[int, ...] = (1, 2), n: int = 32, seed: int = 0) -> Panels:
    """Tiles of `n` samples per (run, sampler); the pretrained model also gets the Heun sampler."""
    panels: Panels = {}
    for run in one_run_per_budget(frame).itertuples():
        model = load_model(Path(run.checkpoint))  # once per run, shared by its samplers
        row = "pretrained (untuned)" if run.role == "pretrain" else str(run.label)
        if run.role == "pretrain":
            images, nfe = _samples(*model, None, n, seed)
            panels[(row, f"Heun, {nfe} NFE")] = tile_images(images, cols=8)
        for k in steps:
            images, _ = _samples(*model, k, n, seed)
            panels[(row, f"{k}-step")] = tile_images(images, cols=8)
    return panels


def is_image_study(frame: pd.DataFrame) -> bool:
    """Whether the study's data are images (sample grids make sense), judged from its config columns."""
    return "data.name" in frame.columns and not frame["data.name"].isin(["swissroll"]).all()
