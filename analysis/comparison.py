"""ECT against the diffusion model it starts from: the paper's headline comparison, as numbers.

The paper's claim: a few percent of the pretraining compute turns a diffusion model into a 2-step
generator close to the diffusion sampler's quality, far better than sampling the untuned model in
2 steps. Pure functions of a study's tuning runs (long form: one row per run and NFE).
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def tuning_vs_pretraining(runs: pd.DataFrame, pretrain_flops: float, heun: float, untuned: float,
                          metric: str = "fd", nfe: int = 2, fraction: float = 0.1,
                          compute: str = "train_flops") -> dict[str, Any]:
    """The best `nfe`-step metric among runs trained with at most `fraction` of the pretraining compute.

    Mean over training seeds per budget first (a lucky seed is not a result). Returns the budget
    (as a fraction of pretraining compute), the metric, and its ratios to the diffusion sampler
    (`heun`, lower is closer) and from the untuned model's `nfe`-step metric (`untuned`, higher is
    a larger gain). `best` is None when no run fits in the budget.
    """
    rows = runs[(runs["nfe"] == nfe) & (runs[compute] <= fraction * pretrain_flops)].dropna(subset=[metric])
    result: dict[str, Any] = {"nfe": nfe, "fraction_allowed": fraction, "heun": heun, "untuned": untuned,
                              "best": None}
    if rows.empty:
        return result
    means = rows.groupby(compute)[metric].agg(["mean", "count"]).reset_index()
    best = means.loc[means["mean"].idxmin()]
    result.update(best=float(best["mean"]), seeds=int(best["count"]),
                  fraction_used=float(best[compute] / pretrain_flops),
                  vs_heun=float(best["mean"] / heun), gain_vs_untuned=float(untuned / best["mean"]))
    return result


def fewer_steps_worse(runs: pd.DataFrame, metric: str = "fd", fewer: int = 1, more: int = 2,
                      key: str = "run_id") -> dict[str, Any]:
    """Whether `more`-step sampling beats `fewer`-step sampling in every run (paper: 2-step < 1-step)."""
    wide = runs.pivot_table(index=key, columns="nfe", values=metric, aggfunc="last")
    if fewer not in wide.columns or more not in wide.columns:
        return {"runs": 0, "holds": None, "worst_ratio": None}
    both = wide[[fewer, more]].dropna()
    ratio = both[more] / both[fewer]
    return {"runs": int(len(both)), "holds": bool((ratio < 1).all()) if len(both) else None,
            "worst_ratio": float(ratio.max()) if len(both) else None}
