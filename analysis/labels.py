"""Axis text for the study's columns: quantity and unit, and FLOP counts in readable SI units (no matplotlib, so
that a table can name its columns without loading the plotting stack)."""

from __future__ import annotations

import pandas as pd

AXIS_LABELS = {
    "normalized_compute": "training compute (× 12.8 M images)",
    "images_seen": "training images seen",
    "model_gflops": "model GFLOPs per forward pass",
    "gflops": "model GFLOPs per forward pass",
    "mparams": "parameters (M)",
    "inference_cost": "inference cost (NFE × GFLOPs)",
    "dropout": "dropout rate",
    "network.dropout": "dropout rate",
    "step": "training iterations",
    "optim.lr": "learning rate",
    "ect.q": "q (Δt shrinking factor)",
    "ect.weighting": "timestep weighting w(t)",
    "ect.adaptive_c": "adaptive weighting c",
    "network.model_channels": "model channels",
    "schedule.iterations": "tuning iterations",
    "fid": "FID",
    "fd_inception": "FID",
    "fd_dinov2": "FD (DINOv2)",
}


# FLOP counts: their text with `{unit}` where the unit goes (FLOPs, or GFLOPs etc. when scaled).
FLOP_COLUMNS = {"train_flops": "training compute, own run only ({unit})",
                "total_flops": "total training compute incl. pretraining ({unit})",
                "init_chain_flops": "pretraining compute ({unit})",
                "sampling_flops": "sampling cost per image (NFE × forward {unit})"}
SI_PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def axis_label(column: str) -> str:
    """Axis text for a column: its quantity and unit where known, else the column name."""
    if column in FLOP_COLUMNS:
        return FLOP_COLUMNS[column].format(unit="FLOPs")
    return AXIS_LABELS.get(column, column)


def scaled_axis(df: pd.DataFrame, column: str) -> tuple[pd.Series, str]:
    """The values to draw for `column` and their axis text: the one place that turns a cost column into an axis.

    FLOP counts are shown in the SI unit that keeps their median between 1 and 1000 ("training compute
    (GFLOPs)", ticks 200, 500, 1000 rather than 2e+11); other columns as they are, labelled by `axis_label`.
    """
    values = df[column]
    if column not in FLOP_COLUMNS:
        return values, axis_label(column)
    typical = float(values.dropna().abs().median()) if values.notna().any() else 1.0
    scale, prefix = next(((f, p) for f, p in SI_PREFIXES if typical >= f), (1.0, ""))
    return values.astype(float) / scale, FLOP_COLUMNS[column].format(unit=f"{prefix}FLOPs")
