"""The store's rows reshaped into the DataFrames that `analysis` works on (one row per run and sampler).

Columns: run facts (run_id, label, role, status, train_flops, normalized_compute, images_seen,
num_params, flops_per_sample, model_gflops, wall_seconds), evaluation facts (nfe, sampler, step,
one column per metric, and `fd` when the study measured exactly one Fréchet distance), and every
flattened config key (e.g. network.dropout, ect.q).
"""

from __future__ import annotations

import pandas as pd

import analysis
from analysis import latest_evaluations
from studies.spec import StudySpec

from .store import Store

ALIASES = {"train_compute": "train_flops", "total_compute": "total_flops", "compute": "normalized_compute", "params": "num_params",
           "gflops": "model_gflops", "dropout": "network.dropout"}


def study_frame(store: Store, study: str) -> pd.DataFrame:
    """Latest evaluation of every run of `study` per (NFE, sampler), joined with run facts and parameters."""
    runs = store.runs_frame(study).drop_duplicates("run_id")
    evals = store.evaluations_frame(study)
    if evals.empty:
        evals = pd.DataFrame(columns=["run_id", "step", "nfe", "metric", "sampler", "value"])
    wide = latest_evaluations(evals.drop_duplicates(["run_id", "step", "nfe", "metric", "sampler"]),
                              keys=("run_id", "nfe", "sampler"))
    fd_cols = [c for c in wide.columns if str(c).startswith("fd_")]
    if len(fd_cols) == 1:
        wide["fd"] = wide[fd_cols[0]]
    runs = with_compute_chain(store, runs.drop(columns=["step"]))  # the evaluation's step is the one that matters
    runs["model_gflops"] = runs["flops_per_sample"] / 2e9  # multiply-adds, the paper's GFLOPs convention
    params = store.params_frame(list(runs["run_id"]))
    # runs without evaluations (failed, diverged before evaluating) keep one row with no NFE
    return runs.merge(wide, on="run_id", how="left").join(params, on="run_id")


def with_compute_chain(store: Store, runs: pd.DataFrame) -> pd.DataFrame:
    """Adds `init_chain_flops` (training FLOPs of the runs this one starts from, transitively: the pretraining a
    "32x cheaper" tuning leaves out) and `total_flops` (own + chain); NaN where a run of the chain has no count."""
    chain: dict[str, float] = {}

    def with_ancestors(run_id: str) -> float:
        if run_id not in chain:
            run = store.run(run_id)
            own = float("nan") if run.train_flops is None else run.train_flops
            chain[run_id] = own + (with_ancestors(run.depends_on) if run.depends_on else 0.0)
        return chain[run_id]

    out = runs.copy()
    out["init_chain_flops"] = [with_ancestors(p) if isinstance(p, str) else 0.0 for p in out["depends_on"]]
    out["total_flops"] = out["train_flops"].astype(float) + out["init_chain_flops"]
    return out


def resolve_column(df: pd.DataFrame, name: str) -> str:
    """A column by name, alias (train_compute, compute, params, gflops, dropout) or unique config-key suffix."""
    name = ALIASES.get(name, name) if name not in df.columns else name
    if name in df.columns:
        return name
    matches = [c for c in df.columns if str(c).endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"no column {name!r} in this study's results (have: {', '.join(map(str, df.columns[:40]))})")


def fit_rows(df: pd.DataFrame, nfe: int | None, sampler: str = "consistency") -> tuple[pd.DataFrame, list[str]]:
    """Rows usable for a fit: tuning/plain runs that completed, at the given NFE; notes on what was left out."""
    notes = []
    rows = df[df["role"] != "pretrain"]
    bad = rows[rows["status"] != "completed"]
    if len(bad):
        notes.append(f"left out {bad['run_id'].nunique()} run(s) not completed: "
                     + ", ".join(f"{r.label} ({r.status})" for r in bad.drop_duplicates("run_id").itertuples()))
    rows = rows[(rows["status"] == "completed") & (rows["sampler"] == sampler)]
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
