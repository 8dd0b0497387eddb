"""`ect study ...`: validate, plan, run, resume, status, cancel and list studies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from studies.spec import StudySpec, expand, load_study
from trainer.config import ConfigError

from .cli_evaluate import evaluate_cmd
from .console import LiveRuns
from .common import DB_OPTION, STORAGE_OPTION, clean_errors, err, existing_store, open_store, out
from .store import FINISHED, Store, StoreError, redact
from .study_runner import execute, plan, register

app = typer.Typer(help="Declare, submit and follow studies.", no_args_is_help=True)
app.command("evaluate")(evaluate_cmd)


@app.command("validate")
def validate(spec_file: Path = typer.Argument(..., help="Study YAML file.")) -> None:
    """Check a study file: every error at once, with field path and YAML line; writes nothing."""
    with clean_errors():
        spec = load_study(spec_file)
        runs = expand(spec)
    out.print(f"{spec_file}: ok — study {spec.name!r} ({spec.kind}), {len(runs)} runs")


def _flops_estimate(spec: StudySpec) -> tuple[float, float]:
    """(training FLOPs, images) of every run, from the networks' measured forward FLOPs."""
    from trainer.flops import forward_flops_per_sample, step_flops
    from trainer.loop import meta_model

    total_flops = images = 0.0
    per_net: dict[str, int] = {}
    for r in expand(spec):
        key = r.config.network.model_dump_json() + r.config.data.model_dump_json()
        if key not in per_net:
            from trainer.data import data_shape
            import torch

            shape, _ = data_shape(r.config.data)
            net = meta_model(r.config)
            per_net[key] = forward_flops_per_sample(net, shape, torch.device("meta"))
        n = r.config.schedule.iterations * r.config.schedule.batch_size
        total_flops += step_flops(n, per_net[key], r.role != "pretrain")
        images += n
    return total_flops, images


@app.command("plan")
def plan_cmd(
    spec_file: Path = typer.Argument(..., help="Study YAML file."),
    db: Optional[str] = DB_OPTION,
    tflops: float = typer.Option(100.0, "--tflops", help="Sustained training throughput (TFLOP/s per GPU) for the GPU-hour estimate."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the runs a study expands to, which already exist in the store, and its total compute."""
    with clean_errors():
        spec = load_study(spec_file)
        store = existing_store(db)
        rows = plan(store, spec)
        flops, images = _flops_estimate(spec)
    hours = flops / (tflops * 1e12) / 3600
    if json_out:
        out.print_json(json.dumps({"study": spec.name, "runs": rows, "train_flops": flops, "images": images,
                                   "gpu_hours": hours, "tflops_assumed": tflops}))
        return
    table = Table(title=f"study {spec.name} ({spec.kind}): {len(rows)} runs")
    for col in ("run_id", "label", "role", "status", "iterations", "batch_size"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("run_id", "label", "role", "status", "iterations", "batch_size")))
    out.print(table)
    out.print(f"total training compute {flops:.3g} FLOPs over {images:.3g} images "
              f"≈ {hours:.3g} GPU-hours at {tflops:g} TFLOP/s")


def _submit(store: Store, spec: StudySpec, storage: Path, address: Optional[str], cpus: Optional[int]) -> None:
    from .ray_backend import init_ray

    runs, new = register(store, spec)
    todo = [r for r in runs if store.run(r.run_id).status not in FINISHED]
    out.print(f"study {spec.name}: {len(runs)} runs, {len(new)} new, {len(todo)} to run")
    if not todo:
        return
    init_ray(address, num_cpus=cpus)
    with LiveRuns(store, runs, err) as live:
        counts = execute(store, spec, storage, live.update)
    out.print("done: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if set(counts) - set(FINISHED):
        raise typer.Exit(1)


ADDRESS = typer.Option(None, "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray on loopback).")
CPUS = typer.Option(None, "--cpus", help="CPUs for the local Ray instance [default: all].")


@app.command("run")
def run_cmd(
    spec_file: Path = typer.Argument(..., help="Study YAML file."),
    db: Optional[str] = DB_OPTION,
    storage: Path = STORAGE_OPTION,
    address: Optional[str] = ADDRESS,
    cpus: Optional[int] = CPUS,
) -> None:
    """Submit a study: runs already finished in the store are reused, the rest are trained."""
    with clean_errors():
        spec = load_study(spec_file)
        _submit(open_store(db), spec, storage, address, cpus)


@app.command("resume")
def resume_cmd(
    name: str = typer.Argument(..., help="Study name (as stored)."),
    db: Optional[str] = DB_OPTION,
    storage: Path = STORAGE_OPTION,
    address: Optional[str] = ADDRESS,
    cpus: Optional[int] = CPUS,
) -> None:
    """Continue an interrupted study from the spec stored with it; unfinished runs resume from checkpoints."""
    import yaml

    with clean_errors():
        store = open_store(db, create=False)
        spec = StudySpec.model_validate(yaml.safe_load(store.study(name).spec_yaml))
        _submit(store, spec, storage, address, cpus)


@app.command("status")
def status_cmd(
    name: str = typer.Argument(..., help="Study name."),
    db: Optional[str] = DB_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Runs of a study with status, step, attempts and compute."""
    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        study = store.study(name)
        df = store.runs_frame(name)
    cols = ["run_id", "label", "role", "status", "step", "total_steps", "attempts", "train_flops", "error"]
    if json_out:
        out.print_json(json.dumps({"study": name, "status": study.status,
                                   "runs": json.loads(df[cols].to_json(orient="records"))}))
        return
    table = Table(title=f"study {name}: {study.status}")
    for c in cols:
        table.add_column(c)
    for _, r in df[cols].iterrows():
        table.add_row(*("" if v is None or v != v else (f"{v:.3g}" if isinstance(v, float) else str(v)) for v in r))
    out.print(table)


@app.command("report")
def report_cmd(
    name: str = typer.Argument(..., help="Study name."),
    db: Optional[str] = DB_OPTION,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Also write the figures, fits (JSON) and tables here."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Summary of a study: runs with their evaluations, pretrained baselines, the metric's floor and the fitted laws."""
    import yaml

    from .cli_analysis import regenerate
    from .report import build_report
    from .study_frames import study_frame

    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        spec = StudySpec.model_validate(yaml.safe_load(store.study(name).spec_yaml))
        report = build_report(store, spec)
        references = {"pretrained, Heun": report.baselines.get(f"{report.metric}@heun"),
                      "real-data floor": report.floor}
        written = regenerate(study_frame(store, name), spec, out_dir, references) if out_dir is not None else []
    payload = {"study": name, "metric": report.metric, "floor": report.floor, "baselines": report.baselines,
               "fits": report.fits, "seed_spread": report.spread, "headline": report.headline,
               "runs": json.loads(report.runs.to_json(orient="records"))}
    if out_dir is not None:
        (out_dir / "report.json").write_text(json.dumps(payload, indent=2, default=float))
        report.runs.to_csv(out_dir / "runs.csv", index=False)
        written += [out_dir / "report.json", out_dir / "runs.csv"]
    if json_out:
        out.print_json(json.dumps(payload, default=float))
        return
    _print_report(name, report)
    for path in written:
        out.print(f"wrote {path}")


def _print_report(name: str, report) -> None:
    table = Table(title=f"study {name}: runs ({report.metric}; lower is better)")
    cols = [c for c in report.runs.columns if c not in ("run_id", "train_flops")]
    for c in cols:
        table.add_column(str(c))
    for _, r in report.runs[cols].iterrows():
        table.add_row(*("" if v is None or (isinstance(v, float) and v != v)
                        else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r))
    out.print(table)
    if report.floor is not None:
        out.print(f"metric floor (real data vs reference, same sample count): {report.floor:.4g}")
    if report.baselines:
        out.print("pretrained baselines: " + ", ".join(f"{k} = {v:.4g}" for k, v in report.baselines.items()))
    fits = Table(title="fits against normalised compute (x 12.8 M images)")
    for c in ("nfe", "form", "K", "alpha", "alpha_ci", "E", "r", "p_value", "converged / error"):
        fits.add_column(c)
    for f in report.fits:
        def fmt(v):
            if v is None:
                return ""
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"
            return f"{v:.4g}" if isinstance(v, float) else str(v)
        fits.add_row(str(f["nfe"]), f["form"], fmt(f.get("K")), fmt(f.get("alpha")), fmt(f.get("alpha_ci")),
                     fmt(f.get("E")), fmt(f.get("r")), fmt(f.get("p_value")),
                     f.get("error") or str(f.get("converged", "")) + (f" ({f['reason']})" if f.get("reason") else ""))
    out.print(fits)
    best = report.headline.get("within_10pct", {})
    if best.get("best") is not None:
        out.print(f"ECT vs its pretraining: best 2-step {report.metric} within {best['fraction_allowed']:.0%} of the "
                  f"pretraining compute = {best['best']:.4g} (at {best['fraction_used']:.1%}, {best['seeds']} seed(s)): "
                  f"{best['vs_heun']:.2f}x the Heun sampler's {best['heun']:.4g}, {best['gain_vs_untuned']:.1f}x "
                  f"better than 2-step sampling of the untuned model ({best['untuned']:.4g})", highlight=False)
    steps = report.headline.get("two_step_beats_one_step", {})
    if steps.get("holds") is not None:
        out.print(f"2-step better than 1-step in {'every' if steps['holds'] else 'NOT every'} run "
                  f"({steps['runs']} runs; worst 2-step/1-step ratio {steps['worst_ratio']:.3g})", highlight=False)
    for row in report.spread:
        if max(row["seeds_smallest"], row["seeds_largest"]) > 1:
            verdict = "exceeds" if row["exceeds"] else "does NOT exceed"
            out.print(f"NFE {row['nfe']:g}: compute trend {row['trend']:+.4g} (smallest to largest budget) {verdict} "
                      f"the seed spread (max - min) {row['spread_smallest']:.3g} ({row['seeds_smallest']} seeds) "
                      f"and {row['spread_largest']:.3g} ({row['seeds_largest']} seeds)", highlight=False)


@app.command("cancel")
def cancel_cmd(name: str = typer.Argument(..., help="Study name."), db: Optional[str] = DB_OPTION) -> None:
    """Mark a study's unfinished runs cancelled (a later `resume` runs them again from their checkpoints)."""
    with clean_errors():
        store = open_store(db, create=False)
        store.study(name)
        n = store.cancel_study(name)
    out.print(f"study {name}: {n} runs cancelled")


@app.command("list")
def list_cmd(db: Optional[str] = DB_OPTION, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Studies in the store."""
    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        rows = [{"name": s.name, "kind": s.kind, "status": s.status, "created_at": s.created_at.isoformat(),
                 "runs": len(store.runs_frame(s.name))} for s in store.studies()]
    if json_out:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"studies in {redact(store.url)}")
    for c in ("name", "kind", "status", "runs", "created_at"):
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("name", "kind", "status", "runs", "created_at")))
    out.print(table)


__all__ = ["app", "ConfigError", "StoreError"]
