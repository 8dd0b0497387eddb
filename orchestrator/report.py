"""A study's summary: its runs with their evaluations, the pretrained baselines, the metric's floor
(real data against the reference at the same sample count), the metric per configuration of a sweep
and, where the study has a compute axis, the fitted power laws and the paper's claims with their verdicts.

Runs are pooled over training seeds only: configurations that differ in any varied key other than the
seed (two learning rates at one compute) are never averaged together."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

import analysis
from studies.spec import StudySpec

from .cli_options import points_note
from .study_frames import fit_rows, study_axes, study_frame
from .store import Store


@dataclass
class StudyReport:
    runs: pd.DataFrame  # one row per run: label, role, status, compute, metric per NFE
    baselines: dict[str, float]  # pretrained model: heun / 1-step / 2-step
    floor: float | None  # metric of real data vs the reference at the same sample count
    fits: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "fd"
    spread: list[dict[str, Any]] = field(default_factory=list)  # compute trend vs training-seed spread per NFE
    headline: dict[str, Any] = field(default_factory=dict)  # ECT vs its pretraining (the paper's claim)
    points: str = "means"  # what the fits' points are: per-budget means or every seed's run
    axes: analysis.SweepAxes = field(default_factory=lambda: analysis.SweepAxes((), ()))
    sweep: list[dict[str, Any]] = field(default_factory=list)  # metric per configuration (minus seed) and NFE
    claims: list[dict[str, Any]] = field(default_factory=list)  # the paper's claims: verdict, thresholds, values
    metric_info: dict[str, Any] = field(default_factory=dict)  # the metric's column, extractor and sample count
    compute: dict[str, float] = field(default_factory=dict)  # training FLOPs: tuning only, pretraining, total

    def references(self) -> dict[str, float | None]:
        """The horizontal lines of every metric figure: the pretrained model's Heun sampler and the real-data floor."""
        return {"pretrained, Heun": self.baselines.get(f"{self.metric}@heun"), "real-data floor": self.floor}


def _metric(df: pd.DataFrame, study: str) -> str:
    for m in ("fd", "swd", "energy"):
        if m in df.columns:
            return m
    raise ValueError(f"study {study!r} has no completed evaluations yet")


def runs_table(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Wide table: one row per run with the metric at each (sampler, NFE), tuned intermediate times beside the
    default ones (`fd@2-tuned` next to `fd@2`), and its training compute: own, and with its init chain."""
    df = df.assign(col=[f"{metric}@{'heun' if s == 'heun' else int(n)}{'-tuned' if t == 'tuned' else ''}"
                        if n == n else None for s, n, t in zip(df["sampler"], df["nfe"], df["schedule"])])
    facts = df.drop_duplicates("run_id")[["run_id", "label", "role", "status", "images_seen", "normalized_compute",
                                         "train_flops", "total_flops"]]
    values = df.dropna(subset=["col"]).pivot_table(index="run_id", columns="col", values=metric, aggfunc="last")
    values = values[sorted(values.columns, key=lambda c: (c.split("@")[1].removesuffix("-tuned"), c))]
    tuned = df[(df["schedule"] == "tuned") & (df["nfe"] == 2)].drop_duplicates("run_id").set_index("run_id")
    if len(tuned):  # the searched t_mid beside its FD (the default is each run's sampling.mid_times[0])
        values.insert(values.columns.get_loc(f"{metric}@2-tuned") + 1, "t_mid@2-tuned",
                      tuned["mid_times"].map(lambda t: t[0] if t else None).reindex(values.index))
    return facts.join(values, on="run_id").reset_index(drop=True)


def compute_totals(runs: pd.DataFrame) -> dict[str, float]:
    """The study's training FLOPs: its tuning (or plain) runs only, its pretraining, and the two together."""
    runs = runs.drop_duplicates("run_id")
    pre = runs["role"] == "pretrain"
    tuning, pretraining = float(runs.loc[~pre, "train_flops"].sum()), float(runs.loc[pre, "train_flops"].sum())
    return {"tuning_flops": tuning, "pretraining_flops": pretraining, "total_flops": tuning + pretraining}


def metric_floor(spec: StudySpec) -> float | None:
    """The FD of real training images (eval.num_samples of them) against the full-set reference."""
    import torch

    from trainer.data import load_dataset
    from trainer.evaluation import Evaluator
    from trainer.metrics import FD_METRICS, fd_to_reference

    cfg = spec.base
    if cfg.eval.metric not in FD_METRICS:
        return None
    data = load_dataset(cfg.data)
    evaluator = Evaluator(cfg.eval, cfg.sampling, data, torch.device("cpu"))
    gen = torch.Generator().manual_seed(cfg.eval.seed + 1)
    subset = data.floats()[torch.randint(len(data), (cfg.eval.num_samples,), generator=gen)]
    return fd_to_reference(subset, evaluator.reference, evaluator.extractor)


def fits(rows: pd.DataFrame, metric: str, x: str = "normalized_compute", points: str = "means",
         by: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Log-linear and saturating fits of the metric against compute, per NFE and per value of the other
    varied keys `by` (one law per learning rate of an lr x compute grid), on the `fit_rows` of a study.
    `points` = "means" (default) fits the per-budget means over training seeds, so every budget weighs the
    same; "seeds" fits every run. Each row says which and how many."""
    out = []
    keys = ["nfe", *by]
    for values, runs in rows.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        config = {k: v for k, v in zip(by, values[1:])}
        group = analysis.fit_points(runs, x, metric, points)
        n_runs = int(group["n"].sum())
        for form in ("loglinear", "saturating"):
            head = {"nfe": int(values[0]), **({"config": config} if config else {}), "form": form, "points": points,
                    "runs": n_runs}
            try:
                fitter = analysis.fit_power_law if form == "loglinear" else analysis.fit_saturating
                fit = fitter(group[x], group[metric], x_name=x, y_name=metric)
                out.append({**head, "note": points_note(points, fit.n, n_runs), **fit.to_dict()})
            except ValueError as e:
                out.append({**head, "error": str(e)})
    return out


def metric_info(store: Store, study: str, metric: str, df: pd.DataFrame) -> dict[str, Any]:
    """What the study's metric is: its short name, the stored metric it stands for (fd -> fd_digits), and
    the extractor(s) and sample count(s) of its consistency-sampled evaluations."""
    column = next((str(c) for c in df.columns if str(c).startswith("fd_")), metric) if metric == "fd" else metric
    evals = store.evaluations_frame(study)
    evals = evals[evals["metric"] == column]
    single = lambda col: (lambda v: v[0] if len(v) == 1 else v)(sorted(evals[col].dropna().unique().tolist()))
    return {"name": metric, "column": column, "extractor": single("extractor"), "num_samples": single("num_samples"),
            "lower_is_better": True}


def sweep_table(rows: pd.DataFrame, axes: analysis.SweepAxes, metric: str) -> list[dict[str, Any]]:
    """The metric per configuration (its varied keys, seed excluded) and NFE: mean, min, max over its
    training seeds, their count, and `best` on the best mean of each NFE."""
    if not axes.all or rows.empty:
        return []
    data = rows.assign(config=analysis.config_groups(rows, axes.all))
    table = analysis.sweep_summary(data, "config", metric, by=("nfe",))
    keys = data.drop_duplicates("config").set_index("config")[list(axes.all)]
    return json_records(table.join(keys, on="config"))


def json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Records with plain Python values (numpy scalars would not serialise)."""
    import json

    return json.loads(df.to_json(orient="records"))


def build_report(store: Store, spec: StudySpec, points: str = "means") -> StudyReport:
    """The report of a study: runs, baselines and floor always; the metric per configuration for a sweep; fits,
    seed spread, headline and claims only along a compute axis (a sweep at one compute has no scaling law)."""
    df = study_frame(store, spec.name)
    metric = _metric(df, spec.name)
    table = runs_table(df, metric)
    pre = table[table["role"] == "pretrain"]
    baselines = {}
    if len(pre):
        row = pre.iloc[0]
        baselines = {c: float(row[c]) for c in table.columns if str(c).startswith(f"{metric}@")
                     and not (isinstance(row[c], float) and math.isnan(row[c]))}
    rows, _ = fit_rows(df, None)
    axes = study_axes(df, spec)
    fitted: list[dict[str, Any]] = []
    spread: list[dict[str, Any]] = []
    headline: dict[str, Any] = {}
    claims: list[dict[str, Any]] = []
    if axes.has_compute_axis:
        fitted = fits(rows, metric, points=points, by=axes.swept)
    if axes.has_compute_axis and not axes.swept:  # one scaling curve: seeds at a budget are its only repeats
        summary = analysis.seed_summary(rows, "normalized_compute", metric)
        spread = analysis.trend_vs_spread(summary, "normalized_compute", metric).to_dict(orient="records")
        headline = {"two_step_beats_one_step": analysis.fewer_steps_worse(rows, metric)}
        if len(pre) and {f"{metric}@heun", f"{metric}@2"} <= baselines.keys() and not rows.empty:
            headline["within_10pct"] = analysis.tuning_vs_pretraining(
                rows, float(pre.iloc[0]["train_flops"]), baselines[f"{metric}@heun"], baselines[f"{metric}@2"],
                metric=metric)
        tuned, _ = fit_rows(df, 2, schedule="tuned")
        if len(tuned):  # claim (b) again with the searched intermediate time (`ect study evaluate --tune 2`)
            pair = pd.concat([rows[rows["nfe"] == 1], tuned])
            headline["tuned_two_step_beats_one_step"] = analysis.fewer_steps_worse(pair, metric)
        claims = analysis.paper_claims(headline.get("within_10pct", {}), headline["two_step_beats_one_step"],
                                       fitted, spread)
    return StudyReport(table, baselines, metric_floor(spec), fitted, metric, spread, headline, points, axes,
                       sweep_table(rows, axes, metric) if axes.swept else [], claims,
                       metric_info(store, spec.name, metric, df), compute_totals(df))
