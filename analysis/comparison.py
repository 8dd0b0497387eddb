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


def _verdict(ok: bool | None) -> str:
    return "undetermined" if ok is None else "met" if ok else "not met"


def paper_claims(within: dict[str, Any], steps: dict[str, Any], fits: list[dict[str, Any]],
                 spread: list[dict[str, Any]], max_vs_heun: float = 3.0, min_gain: float = 20.0) -> list[dict[str, Any]]:
    """The paper's three claims at a study's scale, each with its verdict ("met", "not met", "undetermined"),
    the thresholds that decide it and the measured values:
    (a) the best `within` (`tuning_vs_pretraining`) is at most `max_vs_heun` x the diffusion sampler and at
        least `min_gain` x better than sampling the untuned model in as many steps;
    (b) 2-step beats 1-step in every run (`fewer_steps_worse`);
    (c) every fitted exponent's 95 % interval excludes 0 (below it) and the compute trend exceeds the
        training seeds' spread at both ends (`trend_vs_spread` rows)."""
    a_ok = None if within.get("best") is None else (within["vs_heun"] <= max_vs_heun
                                                     and within["gain_vs_untuned"] >= min_gain)
    cis = [f["alpha_ci"] for f in fits if "error" not in f and f.get("alpha_ci") is not None]
    c_ok = None if not cis or not spread else (all(ci[1] < 0 for ci in cis) and all(r["exceeds"] for r in spread))
    return [
        {"claim": "a", "statement": f"best {within.get('nfe', 2)}-step metric within "
                                    f"{within.get('fraction_allowed', 0.1):.0%} of the pretraining compute is close "
                                    "to the diffusion sampler and far better than the untuned model",
         "verdict": _verdict(a_ok),
         "thresholds": {"fraction_of_pretraining_compute": within.get("fraction_allowed"),
                        "vs_heun_at_most": max_vs_heun, "gain_vs_untuned_at_least": min_gain},
         "values": {k: within.get(k) for k in ("best", "fraction_used", "seeds", "vs_heun", "gain_vs_untuned")}},
        {"claim": "b", "statement": "2-step sampling is better than 1-step in every run",
         "verdict": _verdict(steps.get("holds")), "thresholds": {"two_step_over_one_step_below": 1.0},
         "values": {"runs": steps.get("runs"), "worst_ratio": steps.get("worst_ratio")}},
        {"claim": "c", "statement": "the metric falls with compute: every fitted exponent's 95 % interval is below "
                                    "0 and the trend exceeds the training seeds' spread",
         "verdict": _verdict(c_ok), "thresholds": {"alpha_ci_upper_below": 0.0, "trend_exceeds_seed_spread": True},
         "values": {"alpha_ci": cis, "trend_exceeds_spread": [bool(r["exceeds"]) for r in spread]}},
    ]
