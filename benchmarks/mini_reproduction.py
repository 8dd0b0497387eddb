"""The main job, measured: run the mini compute-scaling study from scratch (a fresh store, so nothing is
reused) through the real CLI, score its checkpoints with the samplers of its `evaluate:` section (4 steps,
2 steps at a searched t_mid) with `ect study evaluate`, then print its wall time and the figures the README
quotes, the tuned t_mid beside the default, and the training compute tuning-only and total.

Prints the machine (CPU model, whether it has AVX-512 and which kernels torch uses: set
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` to time a CPU without AVX-512), the wall time of
each phase (pretraining with its evaluations and the Heun baseline, the tuning runs with theirs,
Ray start-up and bookkeeping, the report) and their total, what evaluation costs on its own (timed
afterwards on the pretrained checkpoint, not part of the total), the metric's floor, the
diffusion and untuned baselines, FD per budget (mean and min-max over seeds), the fitted laws, and
the paper's three claims at toy scale with the numbers that decide them:
  (a) best 2-step FD within 10 % of the pretraining compute <= 3x the Heun-35 FD, and >= 20x better
      than 2-step sampling of the untuned model;
  (b) 2-step better than 1-step in every run;
  (c) the compute trend exceeds the spread of the training seeds at the smallest and largest budgets,
      and the fitted exponents' 95 % t-intervals exclude 0.

    python benchmarks/mini_reproduction.py [--preset studies/presets/mini/compute_scaling.yaml] [--out DIR]

Ends with one line `summary: name=value ...`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import pandas as pd
import torch

from machine import describe, summary_fields
from orchestrator.store import Store, database_url
from studies.spec import load_study
from trainer.data import load_dataset
from trainer.evaluation import Evaluator
from trainer.loop import load_model
from trainer.metrics import FD_METRICS, get_extractor
from trainer.metrics.reference import feature_stats
from trainer.reporter import NullReporter

REPO = Path(__file__).resolve().parents[1]
ECT = [sys.executable, "-m", "orchestrator"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(ECT + args, check=True, cwd=REPO)
    return time.perf_counter() - start


def budgets(runs: pd.DataFrame) -> pd.DataFrame:
    """FD per budget and NFE over the tuning runs: mean, min, max, seeds."""
    tune = runs[runs["role"] != "pretrain"]
    rows = []
    for col in [c for c in ("fd@1", "fd@2", "fd@2-tuned", "fd@4") if c in tune.columns]:
        g = tune.groupby("images_seen")[col].agg(["mean", "min", "max", "count"])
        rows.append(g.rename(columns=lambda c: f"{col} {c}"))
    return pd.concat(rows, axis=1).reset_index()


def phases(db: Path, name: str) -> dict[str, float]:
    """Wall seconds of the pretraining run and of the tuning stage (first start to last finish), from the store."""
    runs = Store(database_url(str(db))).runs_frame(name)
    t = lambda col: pd.to_datetime(runs[col], utc=True)  # the store's timestamps are timezone-aware (UTC)
    start, end, pre = t("started_at"), t("finished_at"), runs["role"] == "pretrain"
    span = lambda mask: (end[mask].max() - start[mask].min()).total_seconds() if mask.any() else 0.0
    return {"pretrain": span(pre), "tune": span(~pre)}


def evaluation_cost(db: Path, name: str) -> dict[str, float]:
    """Seconds of each evaluation the study makes, timed alone on the pretrained checkpoint with the
    threads a pretraining run has: reference statistics (uncached), 1 and 2 steps, Heun."""
    runs = Store(database_url(str(db))).runs_frame(name)
    pre = runs[runs["role"] == "pretrain"].iloc[0]
    net, cfg, _ = load_model(Path(pre["checkpoint"]))
    data = load_dataset(cfg.data)
    out: dict[str, float] = {}
    start = time.perf_counter()
    feature_stats(data.x, get_extractor(FD_METRICS[cfg.eval.metric], cache_dir=cfg.eval.cache_dir))
    out["reference"] = time.perf_counter() - start
    evaluator = Evaluator(cfg.eval, cfg.sampling, data, torch.device("cpu"))
    for label, nfe, heun in (("1-step", [1], False), ("2-step", [2], False), ("heun", [], True)):
        start = time.perf_counter()
        evaluator.evaluate(net, 0, NullReporter(), nfes=nfe, heun=heun)
        out[label] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", type=Path, default=REPO / "studies/presets/mini/compute_scaling.yaml")
    parser.add_argument("--out", type=Path, default=None, help="new directory for the store and the report "
                                                                  "[default: a fresh temporary directory]")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="ect-mini-"))
    if out.exists() and any(out.iterdir()):
        sys.exit(f"--out {out}: must be a new or empty directory (a filled store would reuse its runs)")
    out.mkdir(parents=True, exist_ok=True)
    db, storage, report_dir = out / "ect.db", out / "store", out / "report"
    name = load_study(args.preset).name

    run_s = timed(["study", "run", str(args.preset), "--db", str(db), "--storage", str(storage)])
    evaluate_s = timed(["study", "evaluate", name, "--db", str(db), "--storage", str(storage)])
    report_s = timed(["study", "report", name, "--db", str(db), "--out", str(report_dir)])
    rep = json.loads((report_dir / "report.json").read_text())
    runs = pd.DataFrame(rep["runs"])
    wall = phases(db, name)
    wall["other"] = run_s - wall["pretrain"] - wall["tune"]
    total_s = run_s + evaluate_s + report_s
    pretrain = load_study(args.preset).pretrain
    torch.set_num_threads(max(1, int(pretrain.resources.cpus)) if pretrain is not None else 1)
    evals = evaluation_cost(db, name)

    print(f"\n=== mini reproduction: {name}\n{describe()}")
    print(f"wall: study run {run_s:.0f} s = pretraining {wall['pretrain']:.0f} s (with its evaluations and the Heun "
          f"baseline) + tuning {wall['tune']:.0f} s (with their evaluations) + Ray start-up and bookkeeping "
          f"{wall['other']:.0f} s; study evaluate {evaluate_s:.0f} s; report {report_s:.0f} s; total {total_s:.0f} s = {total_s / 60:.2f} min")
    print("evaluation alone (2000 samples, timed afterwards, not in the total): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in evals.items()))
    c = rep["compute"]
    print(f"training compute: tuning only {c['tuning_flops']:.3g} FLOPs, pretraining {c['pretraining_flops']:.3g} "
          f"FLOPs, total {c['total_flops']:.3g} FLOPs")
    print(f"FD floor (real vs reference, same sample count): {rep['floor']:.3f}")
    print("pretrained baselines: " + ", ".join(f"{k} {v:.2f}" for k, v in rep["baselines"].items()))
    with pd.option_context("display.width", 200, "display.precision", 3):
        print(budgets(runs).to_string(index=False))
    for fit in rep["fits"]:
        if "error" in fit:
            print(f"fit NFE {fit['nfe']} {fit['form']}: {fit['error']}")
            continue
        ci = fit.get("alpha_ci") or [float("nan")] * 2
        extra = f" {fit['floor']}" if "floor" in fit else f" r={fit['r']:.3f}"
        print(f"fit NFE {fit['nfe']} {fit['form']}: alpha={fit['alpha']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]{extra} "
              f"({fit['note']})")

    a, b = rep["headline"]["within_10pct"], rep["headline"]["two_step_beats_one_step"]
    if a["best"] is None:
        print("(a) no tuning run within 10% of the pretraining compute")
    else:
        ok = a["vs_heun"] <= 3 and a["gain_vs_untuned"] >= 20
        print(f"(a) {'MET' if ok else 'NOT met'}: 2-step FD {a['best']:.2f} at {a['fraction_used']:.1%} of pretraining "
              f"compute ({a['seeds']} seeds) = {a['vs_heun']:.2f}x Heun ({a['heun']:.2f}; claim <= 3x), "
              f"{a['gain_vs_untuned']:.1f}x better than untuned 2-step ({a['untuned']:.1f}; claim >= 20x)")
    print(f"(b) {'MET' if b['holds'] else 'NOT met'}: 2-step < 1-step in {b['runs']} runs "
          f"(worst 2-step/1-step {b['worst_ratio']:.3f})")
    tuned = rep["headline"].get("tuned_two_step_beats_one_step", {"holds": None})
    if tuned["holds"] is not None:
        print(f"(b, tuned t_mid) {'MET' if tuned['holds'] else 'NOT met'}: 2-step < 1-step in {tuned['runs']} runs "
              f"(worst 2-step/1-step {tuned['worst_ratio']:.3f})")
    cis = {(f["nfe"], f["form"]): f.get("alpha_ci") for f in rep["fits"] if "error" not in f}
    needed = {(n, form) for n in (1, 2) for form in ("loglinear", "saturating")}  # and 4 steps where evaluated
    excl = all(ci is not None and ci[1] < 0 for ci in cis.values()) and needed <= cis.keys()
    for row in rep["seed_spread"]:
        print(f"(c) NFE {row['nfe']}: trend {row['trend']:+.2f} vs seed spread {row['spread_smallest']:.2f} "
              f"({row['seeds_smallest']} seeds, smallest budget) / {row['spread_largest']:.2f} "
              f"({row['seeds_largest']} seeds, largest): {'exceeds' if row['exceeds'] else 'does NOT exceed'}")
    print(f"(c) every fitted alpha's 95 % t-interval excludes 0: {excl}")
    print(f"report and figures: {report_dir}")
    c_met = excl and bool(rep["seed_spread"]) and all(row["exceeds"] for row in rep["seed_spread"])
    print(f"summary: {summary_fields()} pretrain_s={wall['pretrain']:.0f} "
          f"tune_s={wall['tune']:.0f} other_s={wall['other']:.0f} report_s={report_s:.0f} total_s={total_s:.0f} "
          f"total_min={total_s / 60:.2f} evaluate_s={evaluate_s:.0f} heun_eval_s={evals['heun']:.1f} "
          f"b={'met' if b['holds'] else 'not_met'} "
          f"b_tuned={'na' if tuned['holds'] is None else 'met' if tuned['holds'] else 'not_met'} "
          f"c={'met' if c_met else 'not_met'}")


if __name__ == "__main__":
    main()
