"""The store's rows reshaped into the DataFrames that `analysis` works on (one row per run and sampler).

Columns: run facts (run_id, label, role, status, train_flops, init_chain_flops, total_flops,
normalized_compute, images_seen, num_params, flops_per_sample, model_gflops, wall_seconds), evaluation
facts (nfe, sampler, schedule = default or tuned intermediate times, mid_times, sampling_flops per image, step, one
column per metric, and `fd` when the study measured exactly one Fréchet distance), and every flattened
config key (e.g. network.dropout, ect.q).
"""

from __future__ import annotations

import json

import pandas as pd

import analysis
from analysis import axis_label, latest_evaluations
from studies.spec import StudySpec

from .store import Store

ALIASES = {"train_compute": "train_flops", "total_compute": "total_flops", "compute": "normalized_compute", "params": "num_params",
           "gflops": "model_gflops", "dropout": "network.dropout"}


def study_frame(store: Store, study: str) -> pd.DataFrame:
    """Latest evaluation of every run of `study` per (NFE, sampler), joined with run facts and parameters."""
    runs = store.runs_frame(study).drop_duplicates("run_id")
    evals = store.evaluations_frame(study)
    if evals.empty:
        evals = pd.DataFrame(columns=["run_id", "step", "nfe", "metric", "sampler", "value", "sampler_params",
                                      "sampling_flops"])
    evals["schedule"] = ["tuned" if "tuned_on" in json.loads(p or "{}") else "default" for p in evals["sampler_params"]]
    keys = ["run_id", "nfe", "sampler", "schedule"]
    first = evals.drop_duplicates(["step", "metric", *keys])  # the first measured of equal ones (training's own)
    wide = latest_evaluations(first, keys=keys)
    first = first.assign(mid_times=[json.loads(p or "{}").get("mid_times") for p in first["sampler_params"]])
    facts = first.drop_duplicates(keys)[[*keys, "sampling_flops", "mid_times"]]
    wide = wide.merge(facts, on=keys, how="left") if len(wide) else wide.assign(sampling_flops=[], mid_times=[])
    fd_cols = [c for c in wide.columns if str(c).startswith("fd_")]
    if len(fd_cols) == 1:
        wide["fd"] = wide[fd_cols[0]]
    runs = runs.drop(columns=["step"])  # the evaluation's step is the one that matters
    runs["model_gflops"] = runs["flops_per_sample"] / 2e9  # multiply-adds, the paper's GFLOPs convention
    params = store.params_frame(list(runs["run_id"]))
    # runs without evaluations (failed, diverged before evaluating) keep one row with no NFE
    return runs.merge(wide, on="run_id", how="left").join(params, on="run_id")


def resolve_column(df: pd.DataFrame, name: str) -> str:
    """A column by name, alias (train_compute, compute, params, gflops, dropout) or unique config-key suffix."""
    name = ALIASES.get(name, name) if name not in df.columns else name
    if name in df.columns:
        return name
    matches = [c for c in df.columns if str(c).endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"no column {name!r} in this study's results (have: {', '.join(map(str, df.columns[:40]))})")


# --x choices of fits, frontiers and figures: the column each names. Other names resolve as columns (resolve_column).
X_AXES = {"tuning": "train_flops", "total": "total_flops", "sampling": "sampling_flops", "images": "images_seen",
          "compute": "normalized_compute"}
TUNING_AXES = ("tuning", "compute")  # a tuning run's own compute: "tuning compute" where analysis says "training compute"


def x_axis(df: pd.DataFrame, name: str) -> tuple[str, str]:
    """(column, axis label) of an --x choice (tuning, total, sampling, images, compute) or of any column name,
    alias or config key, labelled by `analysis.axis_label`."""
    if name in X_AXES:
        column = X_AXES[name]
        label = axis_label(column)
        return column, label.replace("training compute", "tuning compute", 1) if name in TUNING_AXES else label
    column = resolve_column(df, name)
    return column, axis_label(column)


def fit_rows(df: pd.DataFrame, nfe: int | None, sampler: str = "consistency",
             schedule: str = "default") -> tuple[pd.DataFrame, list[str]]:
    """Rows usable for a fit: tuning/plain runs that completed, at the given NFE (None: all), of one sampler with
    its default or tuned intermediate times; notes on what was left out."""
    notes = []
    rows = df[df["role"] != "pretrain"]
    bad = rows[rows["status"] != "completed"]
    if len(bad):
        notes.append(f"left out {bad['run_id'].nunique()} run(s) not completed: "
                     + ", ".join(f"{r.label} ({r.status})" for r in bad.drop_duplicates("run_id").itertuples()))
    rows = rows[(rows["status"] == "completed") & (rows["sampler"] == sampler) & (rows["schedule"] == schedule)]
    if nfe is not None:
        rows = rows[rows["nfe"] == nfe]
    return rows, notes


def varied_keys(spec: StudySpec) -> list[str]:
    """The config keys a study declares as varying: its grid axes and every variant's override keys."""
    keys = list(spec.grid)
    for variant in spec.variants:
        keys.extend(variant.overrides)
    return list(dict.fromkeys(keys))


def study_axes(df: pd.DataFrame, spec: StudySpec) -> analysis.SweepAxes:
    """The keys the study's completed tuning runs actually vary (seed excluded), split into compute keys
    (iterations, batch size) and swept keys (lr, dropout, ...): what its report and figures are drawn against."""
    rows, _ = fit_rows(df, None)
    return analysis.sweep_axes(rows.drop_duplicates("run_id"), varied_keys(spec))
