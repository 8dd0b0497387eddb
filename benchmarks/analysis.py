"""Time the analysis module on a synthetic 50-run study: the fits (t-intervals, floor test) and every figure.

The study mimics what the store hands over: a long evaluations frame (run, step, NFE, metric,
value) and a runs frame. 18 compute-scaling runs (6 budgets x 3 seeds), 16 dropout runs (8 rates x
2 seeds), 8 model-size runs (4 sizes x 2 seeds) and 8 training-curve runs (10 evaluations each),
every run evaluated at NFE 1 and 2. Figures are written as PNG + PDF to a temporary directory.
Target: total < 5 s on 2 CPU cores. `--repeat N` runs everything N times in fresh processes and
reports each step's minimum, the honest figure on a machine shared with other work.

Then the CLI's start-up, as a user meets it: `ect --help` and `ect runs list` on the README's main study in a small
SQLite store (tests/synthetic_store.py), each run 5 times as a fresh `python -m orchestrator` process with its byte
code cached (as in an installed package; in a temporary PYTHONPYCACHEPREFIX, after one unmeasured run, so that
PYTHONDONTWRITEBYTECODE does not count compiling), the median wall and CPU time of each. Target: < 1.5 s each on a
2-core AMD EPYC.

    python benchmarks/analysis.py [--repeat 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

HERE = Path(__file__).resolve().parent
from machine import describe, summary_fields  # noqa: E402  (beside this file, which leaves sys.path next)

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # this file would shadow the package
sys.path.insert(0, str(HERE.parent))

T_START, C_START = time.perf_counter(), time.process_time()
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import analysis as A  # noqa: E402


T_IMPORT = (time.perf_counter() - T_START, time.process_time() - C_START)

CLI_GOAL_S = 1.5
CLI_REPEAT = 5
SIZES = {"S": (101.9, 280.2), "M": (180.8, 497.8), "L": (282.2, 777.5), "XL": (405.9, 1119.3)}


def synthetic_study(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, evaluations) frames of a 50-run study shaped like the store's."""
    rng = np.random.default_rng(seed)
    runs: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []

    def add(kind: str, steps: list[int], fd: Callable[[int, int], float], **cols: Any) -> None:
        run_id = f"r{len(runs):02d}"
        runs.append({"run_id": run_id, "kind": kind, **cols})
        for step in steps:
            for nfe in (1, 2):
                value = fd(nfe, step) * float(np.exp(rng.normal(0.0, 0.02)))
                evals.append({"run_id": run_id, "step": step, "nfe": nfe, "metric": "fd", "value": value})

    for budget in 2.0 ** np.arange(6):
        for s in range(3):
            add("compute", [100_000], lambda n, _, b=budget: (263 * b**-0.06) if n == 1 else (164 * b**-0.028),
                normalized_compute=budget, dropout=0.2, model_gflops=21.3, mparams=55.7, seed=s)
    for p in np.linspace(0.0, 0.7, 8):
        for s in range(2):
            add("dropout", [100_000], lambda n, _, p=p: (5.0 if n == 1 else 3.0) * (1 + 2 * (p - 0.3) ** 2),
                normalized_compute=1.0, dropout=p, model_gflops=21.3, mparams=55.7, seed=s)
    for name, (gflops, mparams) in SIZES.items():
        for s in range(2):
            add("size", [100_000], lambda n, _, g=gflops: (40 if n == 1 else 20) * g**-0.35,
                normalized_compute=1.0, dropout=0.4, model_gflops=gflops, mparams=mparams, model=f"ECM-{name}", seed=s)
    for s in range(8):
        add("curve", list(range(10_000, 100_001, 10_000)),
            lambda n, step: (3.0 if n == 1 else 2.0) + 30_000 / step, normalized_compute=1.0, dropout=0.2,
            model_gflops=21.3, mparams=55.7, seed=s)
    return pd.DataFrame(runs), pd.DataFrame(evals)


def timed(label: str, timings: dict[str, tuple[float, float]], fn: Callable[[], Any]) -> Any:
    """Run fn; record (wall seconds, CPU seconds of this process) under `label`."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    timings[label] = (time.perf_counter() - start, time.process_time() - cpu)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the figures here (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes to run; each step's minimum is reported")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one child run, JSON timings
    args = parser.parse_args()
    if not args.once:
        report([run_child(args.out) for _ in range(max(args.repeat, 1))], cli_times())
        return
    timings, note = measure(args.out)
    print(json.dumps({"timings": timings, "note": note}))


def run_child(out: Path | None) -> dict[str, Any]:
    """One measurement in a fresh interpreter (so the import is timed cold each time)."""
    cmd = [sys.executable, __file__, "--once"] + (["--out", str(out)] if out else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def timed_process(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process that must succeed; its output is discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli_times(repeat: int = CLI_REPEAT) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of `ect --help` and `ect runs list` over `repeat` fresh processes each."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import synthetic_store  # the README's main study as if it had run (imports torch here, not in the timed CLI)

    with TemporaryDirectory() as tmp:
        store, _ = synthetic_store.build(Path(tmp) / "ect.db")
        commands = {"ect --help": ["--help"], "ect runs list": ["runs", "list", "--db", store.url]}
        store.engine.dispose()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=str(HERE.parent), PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
        out: dict[str, tuple[float, float]] = {}
        for label, args in commands.items():
            cmd = [sys.executable, "-m", "orchestrator", *args]
            timed_process(cmd, Path(tmp), env)  # compiles and caches the byte code
            times = [timed_process(cmd, Path(tmp), env) for _ in range(repeat)]
            out[label] = (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times))
    return out


def report(runs: list[dict[str, Any]], cli: dict[str, tuple[float, float]]) -> None:
    """Each step's minimum over the runs (wall and CPU time), their totals and the slowest run's wall total; then
    the CLI's medians. CPU time is what the process used: on a machine shared with other work it is steadier."""
    labels = list(runs[0]["timings"])
    wall = {k: min(r["timings"][k][0] for r in runs) for k in labels}
    cpu = {k: min(r["timings"][k][1] for r in runs) for k in labels}
    width = max(map(len, labels))
    print(describe())
    print(f"load average {os.getloadavg()[0]:.1f} when done; minima of {len(runs)} fresh runs")
    print(f"{'step':<{width}}  {'wall':>7}    {'cpu':>7}")
    for label in labels:
        print(f"{label:<{width}}  {wall[label]:7.3f} s  {cpu[label]:7.3f} s")
    total, total_cpu = sum(wall.values()), sum(cpu.values())
    worst = max(sum(t[0] for t in r["timings"].values()) for r in runs)
    print(f"{'total (sum of minima)':<{width}}  {total:7.3f} s  {total_cpu:7.3f} s   (slowest run, wall: {worst:.3f} s)")
    print(runs[0]["note"])
    print(f"CLI start-up, medians of {CLI_REPEAT} fresh processes (goal < {CLI_GOAL_S} s each):")
    for label, (wall_s, cpu_s) in cli.items():
        print(f"{label:<{width}}  {wall_s:7.3f} s  {cpu_s:7.3f} s")
    help_s, list_s = cli["ect --help"][0], cli["ect runs list"][0]
    print(f"summary: {summary_fields()} total_s={total:.3f} total_cpu_s={total_cpu:.3f} slowest_run_s={worst:.3f} runs={len(runs)} "
          f"goal_s=5 met={total < 5} met_cpu={total_cpu < 5} help_s={help_s:.3f} runs_list_s={list_s:.3f} "
          f"help_cpu_s={cli['ect --help'][1]:.3f} runs_list_cpu_s={cli['ect runs list'][1]:.3f} "
          f"cli_goal_s={CLI_GOAL_S} cli_met={max(help_s, list_s) < CLI_GOAL_S}")


def measure(out_dir: Path | None) -> tuple[dict[str, tuple[float, float]], str]:
    """Time every step once; (label -> seconds, one line on the fits)."""
    timings: dict[str, tuple[float, float]] = {"import analysis (pandas; scipy, matplotlib on first use)": T_IMPORT}
    runs, evals = timed("synthetic study (50 runs)", timings, synthetic_study)
    with TemporaryDirectory() as tmp:
        out = out_dir or Path(tmp)
        final = timed("latest_evaluations + join", timings,
                      lambda: A.latest_evaluations(evals).merge(runs, on="run_id"))
        compute = final[final.kind == "compute"]
        one = compute[compute.nfe == 1]
        fit = timed("fit_power_law", timings, lambda: A.fit_power_law(one.normalized_compute, one.fd))
        sat = timed("fit_saturating (+ floor test)", timings,
                    lambda: A.fit_saturating(one.normalized_compute, one.fd))
        timed("predict + compute_for_target", timings,
              lambda: A.compute_for_target(fit, A.predict(fit, 64.0)[0]))
        size = A.add_inference_cost(final[final.kind == "size"])
        figures: dict[str, Callable[[], Any]] = {
            "fig_compute_scaling": lambda: A.fig_compute_scaling(compute, y="fd",
                                                                 paper_fits=A.load_reference("fig4_fits")),
            "fig_model_size": lambda: A.fig_model_size(size, metric="fd", gflops="model_gflops", label_col="model"),
            "fig_pareto": lambda: A.fig_pareto(size, "inference_cost", "fd", hue="nfe"),
            "fig_mapping_schedule": lambda: A.fig_mapping_schedule(2, 8),
            "fig_dropout": lambda: A.fig_dropout(final[final.kind == "dropout"], y="fd"),
            "fig_training_curve": lambda: A.fig_training_curve(
                evals[evals.run_id.isin(runs.run_id[runs.kind == "curve"])].rename(columns={"value": "fd"}), y="fd"),
        }
        for name, make in figures.items():
            timed(f"{name} + save_figure (png, pdf)", timings, lambda m=make, n=name: A.save_figure(m(), out / n))
        timed("ablation_table + markdown/latex/csv", timings, lambda: [
            f(A.ablation_table(final[final.kind == "dropout"].assign(label=lambda d: d.dropout.round(2)),
                               "label", ["fd"])) for f in (A.to_markdown, A.to_latex, A.to_csv)])
    note = (f"fit: K={fit.K:.1f} alpha={fit.alpha:.4f} CI={tuple(round(v, 4) for v in fit.alpha_ci)} r={fit.r:.4f}; "
            f"saturating: {sat.floor_verdict}; converged={sat.converged} {sat.reason}")
    return timings, note


if __name__ == "__main__":
    main()
