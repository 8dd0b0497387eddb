"""Sweeps: which keys a study varies, which of them set the compute, and the metric per configuration.

Runs are grouped by their configuration minus the training seed, never by compute alone: two
learning rates at the same compute are two configurations, not two seeds of one. Pure functions
of DataFrames (one row per run and NFE, one column per varied config key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .frames import seed_summary


@dataclass(frozen=True)
class SweepAxes:
    """The keys a study varies (seed excluded), split into those that set the compute and the others."""

    compute: tuple[str, ...]  # keys whose value alone fixes the training compute (iterations, batch size)
    swept: tuple[str, ...]  # every other varied key (lr, dropout, q, a weighting, model width)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.compute, *self.swept)

    @property
    def has_compute_axis(self) -> bool:
        return bool(self.compute)


def _hashable(series: pd.Series) -> pd.Series:
    """Values usable as group keys (lists from YAML, e.g. betas, become tuples)."""
    return series.map(lambda v: tuple(v) if isinstance(v, list) else v)


def sweep_axes(rows: pd.DataFrame, keys: Sequence[str], compute: str = "normalized_compute") -> SweepAxes:
    """Which of `keys` (candidate config columns, e.g. a study's grid axes and variant overrides) take more
    than one value in `rows`, and which of those set the compute: a key is a compute key when the compute
    takes one value per value of the key and more than one over the study (iterations, batch size).
    Keys missing from `rows` are ignored."""
    varied = [k for k in dict.fromkeys(keys) if k in rows.columns and _hashable(rows[k]).nunique(dropna=False) > 1]
    compute_keys: list[str] = []
    if compute in rows.columns and rows[compute].nunique() > 1:
        for k in varied:
            per_value = rows.assign(_k=_hashable(rows[k])).groupby("_k", dropna=False)[compute].nunique()
            if (per_value <= 1).all():
                compute_keys.append(k)
    return SweepAxes(tuple(compute_keys), tuple(k for k in varied if k not in compute_keys))


def config_groups(rows: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """A label per row naming its configuration minus the seed ("optim.lr=0.001, network.dropout=0.1");
    rows with equal labels differ only in their training seed. One group ("all") without keys."""
    keys = [k for k in keys if k in rows.columns]
    if not keys:
        return pd.Series("all", index=rows.index)
    return pd.Series([", ".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values))
                      for values in zip(*(rows[k] for k in keys))], index=rows.index)


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweep_summary(rows: pd.DataFrame, key: str, y: str, by: Sequence[str] = ("nfe",),
                  lower_is_better: bool = True) -> pd.DataFrame:
    """Per `by` group and value of `key`: the mean, min, max and count of `y` over training seeds, with
    `best` True on the best mean of each `by` group. Columns: *by, key, y, y_min, y_max, n, best."""
    data = rows.assign(**{key: _hashable(rows[key])}) if key in rows.columns else rows
    out = seed_summary(data, key, y, by=by)
    present = [c for c in by if c in out.columns]
    agg = "min" if lower_is_better else "max"
    best = out.groupby(present, sort=False)[y].transform(agg) if present else out[y].agg(agg)
    return out.assign(best=out[y] == best)


def numeric_axis(values: Sequence[object]) -> bool:
    """Whether a swept key's values are numbers (drawn on a numeric axis) rather than categories."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def spans_decades(values: Sequence[object], ratio: float = 10.0) -> bool:
    """Whether positive numeric values span at least a decade (max / min >= `ratio`): draw them on a log axis."""
    nums = [float(v) for v in values] if numeric_axis(values) else []
    return bool(nums) and min(nums) > 0 and max(nums) / min(nums) >= ratio
