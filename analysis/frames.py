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
