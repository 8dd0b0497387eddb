"""Reshaping helpers between the store's long frames, wide paper tables and the figure inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd


def latest_evaluations(evals: pd.DataFrame, keys: Sequence[str] = ("run_id", "nfe"), metric: str = "metric",
                       value: str = "value", step: str = "step") -> pd.DataFrame:
    """One row per `keys` with one column per metric name, from each metric's last evaluated step.

    `evals` is long (one row per run, step, NFE and metric, as the store's evaluations frame);
    the result also holds `step`, the latest step among the kept evaluations.
    """
    missing = [c for c in (*keys, metric, value, step) if c not in evals.columns]
    if missing:
        raise KeyError(f"missing column(s) {missing}; available: {list(evals.columns)}")
    last = evals.sort_values(step, kind="mergesort").groupby([*keys, metric], sort=False).tail(1)
    wide = last.pivot_table(index=list(keys), columns=metric, values=value, aggfunc="last")
    wide.columns.name = None
    steps = last.groupby(list(keys))[step].max()
    return wide.join(steps).reset_index()


def nfe_long(df: pd.DataFrame, columns: Mapping[str, int], value_name: str, nfe: str = "nfe") -> pd.DataFrame:
    """Wide per-NFE columns to long rows: nfe_long(table7, {"fid_1step": 1, "fid_2step": 2}, "fid")."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"missing column(s) {missing}; available: {list(df.columns)}")
    ids = [c for c in df.columns if c not in columns]
    long = df.melt(id_vars=ids, value_vars=list(columns), var_name="_col", value_name=value_name)
    long[nfe] = long.pop("_col").map(columns).astype(int)
    return long.dropna(subset=[value_name]).reset_index(drop=True)


def seed_summary(df: pd.DataFrame, x: str, y: str, by: Sequence[str] = ("nfe",)) -> pd.DataFrame:
    """Runs that share `x` (and `by`) pooled over training seeds: mean, min, max and count of `y`.

    Columns: *by, x, y (the mean), y_min, y_max, n. A fit on this frame weighs every budget once,
    however many seeds it has; min-max is the seed spread a figure draws as an error bar.
    """
    keys = [c for c in by if c in df.columns] + [x]
    missing = [c for c in (*keys, y) if c not in df.columns]
    if missing:
        raise KeyError(f"missing column(s) {missing}; available: {list(df.columns)}")
    grouped = df.dropna(subset=[x, y]).groupby(keys, sort=True)[y]
    out = grouped.agg(["mean", "min", "max", "count"]).reset_index()
    return out.rename(columns={"mean": y, "min": f"{y}_min", "max": f"{y}_max", "count": "n"})


def trend_vs_spread(summary: pd.DataFrame, x: str, y: str, by: str = "nfe") -> pd.DataFrame:
    """Per `by` group of a `seed_summary`: the change of the mean from the smallest to the largest `x`
    against the seed spread (max - min) at those two ends. `exceeds` is True when |trend| is larger
    than both spreads, i.e. the compute trend is not within training-seed noise."""
    rows = []
    for key, group in summary.groupby(by, sort=True):
        lo, hi = group.loc[group[x].idxmin()], group.loc[group[x].idxmax()]
        trend = float(hi[y] - lo[y])
        spreads = (float(lo[f"{y}_max"] - lo[f"{y}_min"]), float(hi[f"{y}_max"] - hi[f"{y}_min"]))
        rows.append({by: key, "trend": trend, "spread_smallest": spreads[0], "seeds_smallest": int(lo["n"]),
                     "spread_largest": spreads[1], "seeds_largest": int(hi["n"]),
                     "exceeds": abs(trend) > max(spreads) and min(lo["n"], hi["n"]) > 1})
    return pd.DataFrame(rows)


FIT_POINTS = {"means": "per-budget means over training seeds", "seeds": "every seed's run as its own point"}


def fit_points(df: pd.DataFrame, x: str, y: str, points: str = "means") -> pd.DataFrame:
    """The points a fit of `y` against `x` uses: `means` pools runs that share `x` (training seeds) into
    their mean, so every budget weighs the same (`seed_summary` columns); `seeds` keeps every run.
    Column `n` counts the runs behind each point."""
    if points not in FIT_POINTS:
        raise ValueError(f"points {points!r}: expected one of {', '.join(FIT_POINTS)}")
    if points == "means":
        return seed_summary(df, x, y, by=())
    missing = [c for c in (x, y) if c not in df.columns]
    if missing:
        raise KeyError(f"missing column(s) {missing}; available: {list(df.columns)}")
    return df.dropna(subset=[x, y]).assign(n=1).reset_index(drop=True)
