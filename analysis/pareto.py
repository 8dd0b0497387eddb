"""Pareto frontiers of cost vs metric, and the inference-cost column."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _require(df: pd.DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"missing column(s) {missing}; available: {list(df.columns)}")


def pareto_frontier(df: pd.DataFrame, cost: str, metric: str, minimize_metric: bool = True) -> pd.DataFrame:
    """Rows not dominated by any other row, sorted by cost (then metric, best first).

    A row is dominated when another has cost <= and metric at least as good, one of them strictly.
    Exact ties (same cost and metric) dominate neither each other, so all of them are kept.
    Rows with a missing cost or metric are ignored. The original index is kept.
    """
    _require(df, cost, metric)
    data = df.dropna(subset=[cost, metric])
    sign = 1.0 if minimize_metric else -1.0
    ordered = data.assign(_key=sign * data[metric].astype(float)).sort_values(
        [cost, "_key"], kind="mergesort")
    keep = []
    best = np.inf
    last: tuple[float, float] | None = None
    for label, c, m in zip(ordered.index, ordered[cost].astype(float), ordered["_key"]):
        if m < best or (c, m) == last:
            keep.append(label)
            best, last = m, (c, m)
    return ordered.loc[keep].drop(columns="_key")


def add_inference_cost(df: pd.DataFrame, nfe: str = "nfe", gflops: str = "model_gflops",
                       out: str = "inference_cost") -> pd.DataFrame:
    """Copy of df with `out` = nfe * model GFLOPs (GFLOPs per generated sample)."""
    _require(df, nfe, gflops)
    return df.assign(**{out: df[nfe].astype(float) * df[gflops].astype(float)})
