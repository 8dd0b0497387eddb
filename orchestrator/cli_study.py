"""`ect study ...`: validate, plan, run, submit, resume, status, logs, cancel and list studies."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer
from rich.table import Table

from studies.spec import StudySpec, expand, load_study, stored_spec
from trainer.config import ConfigError

from .cli_evaluate import evaluate_cmd
from .console import study_view
from .cli_options import PEAK_TFLOPS, POINTS_OPTION, UTILIZATION, FitPoints, gpu_hours, json_text, print_json
from .common import DASHBOARD_OPTION, DB_OPTION, RUNTIME, STORAGE_OPTION, TRACK_OPTION, clean_errors, err, existing_store, open_store, out
from .outputs import atomic_dir, check_dir_target, moved
from .store_names import FINISHED, STALE_SECONDS

if TYPE_CHECKING:
    import pandas as pd

    from .store import Store

# The store (SQLAlchemy), the study driver, Ray Jobs (requests) and tracking are imported inside the commands
# that use them, so that `ect --help` does not load them.

GRACE_S = 10.0  # cancel: the time a submitted driver gets to stop its trials itself before its job is stopped

app = typer.Typer(help="Declare, submit and follow studies.", no_args_is_help=True)
app.command("evaluate")(evaluate_cmd)


@app.command("validate")
def validate(spec_file: Path = typer.Argument(..., help="Study YAML file.")) -> None:
    """Check a study file and what its runs will read (init checkpoints, datasets, extractor weights): every
    error at once, with file, YAML line and field; writes nothing and starts nothing."""
    from .validation import check_study

    with clean_errors():
        spec = check_study(spec_file)
        runs = expand(spec)
    out.print(f"{spec_file}: ok — study {spec.name!r} ({spec.kind}), {len(runs)} runs")


def _flops_per_run(spec: StudySpec) -> dict[str, tuple[float, float]]:
    """{run id: (training FLOPs, images)} of every run, from the networks' measured forward FLOPs."""
    from trainer.flops import step_flops
    from trainer.loop import network_cost

    out: dict[str, tuple[float, float]] = {}
    for r in expand(spec):
        n = r.config.schedule.iterations * r.config.schedule.batch_size
        out[r.run_id] = (float(step_flops(n, network_cost(r.config)[0], r.role != "pretrain")), float(n))
    return out


PLAN_COLUMNS = ("run_id", "label", "role", "status", "iterations", "batch_size", "train_flops", "gpu_hours")


@app.command("plan")
def plan_cmd(
    spec_file: Path = typer.Argument(..., help="Study YAML file."),
    db: Optional[str] = DB_OPTION,
    tflops: float = typer.Option(PEAK_TFLOPS, "--tflops", min=1e-6, help="Peak dense TFLOP/s of one GPU (A100 BF16: 312, H100 SXM BF16: 989)."),
    utilization: float = typer.Option(UTILIZATION, "--utilization", min=1e-6, max=1.0, help="Share of that peak a run sustains; the default is what the paper's 1-GPU-hour recipe implies on an A100."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the runs a study expands to, which already exist in the store, and each run's and the total
    training compute in FLOPs and GPU-hours (FLOPs / (peak TFLOP/s x utilisation), both stated)."""
    from .study_runner import plan

    with clean_errors():
        spec = load_study(spec_file)
        store = existing_store(db)
        rows = plan(store, spec)
        per_run = _flops_per_run(spec)
    for r in rows:
        r["train_flops"], r["images"] = per_run[r["run_id"]]
        r["gpu_hours"] = gpu_hours(r["train_flops"], tflops, utilization)
    flops, images = sum(r["train_flops"] for r in rows), sum(r["images"] for r in rows)
    hours = gpu_hours(flops, tflops, utilization)
    assumed = (f"at {tflops:g} TFLOP/s peak x {utilization:.0%} utilisation = {tflops * utilization:.3g} TFLOP/s "
               f"sustained per GPU (--tflops, --utilization)")
    if json_out:
        print_json({"study": spec.name, "runs": rows, "train_flops": flops, "images": images, "gpu_hours": hours,
                    "tflops_peak": tflops, "utilization": utilization, "tflops_sustained": tflops * utilization})
        return
    table = Table(title=f"study {spec.name} ({spec.kind}): {len(rows)} runs")
    for col in PLAN_COLUMNS:
        table.add_column(col, justify="right" if col in ("iterations", "batch_size", "train_flops", "gpu_hours") else "left")
    for r in rows:
        table.add_row(*(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in PLAN_COLUMNS))
    out.print(table)
    out.print(f"total training compute {flops:.3g} FLOPs over {images:.3g} images ≈ {hours:.3g} GPU-hours {assumed}",
              highlight=False, soft_wrap=True)


def _submit(store: Store, spec: StudySpec, storage: Path, address: Optional[str], cpus: Optional[int],
            track: Optional[str] = None, dashboard: bool = False, inputs_checked: bool = False) -> int:
    """Run the study's unfinished runs; returns the exit code (0 all finished, 1 not, 128 + signal if stopped by one).
    Their inputs are checked first (here, unless `check_study` has checked the study file's): Ray starts for no
    study that cannot run."""
    import time

    from .ray_backend import RayBackend, check_gpus, init_ray
    from .study_runner import StopRequest, execute, register
    from .tracking import fan_out, live_tracking, tracker_for
    from .validation import input_errors

    tracker = tracker_for(track or spec.tracking)  # a bad value is a usage error before anything runs
    problems = [] if inputs_checked else input_errors(spec, source=f"study {spec.name!r} (stored spec)")
    if problems:
        raise ConfigError("\n".join(problems))
    check_gpus(expand(spec), address, cpus)
    runs, new = register(store, spec)
    todo = [r for r in runs if store.run(r.run_id).status not in FINISHED]
    out.print(f"study {spec.name}: {len(runs)} runs, {len(new)} new, {len(todo)} to run")
    if not todo:
        return 0
    url = init_ray(address, num_cpus=cpus, dashboard=dashboard)
    if url:
        err.print(f"Ray dashboard: {url}", highlight=False)
    stop = StopRequest()
    with stop.on_signals(), study_view(store, runs, out, err) as view, \
            live_tracking(tracker, store, spec.name, err) as on_track:
        on_change = fan_out(view.update, on_track)
        backend = RayBackend(store, storage, f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", spec.max_failures,
                             on_change)
        counts = execute(store, spec, storage, backend, stop, on_change, view.tick)
    out.print("done: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    _print_failures(store, runs)
    if stop.signum is not None:
        err.print(f"study {spec.name}: interrupted by {signal.Signals(stop.signum).name}; its runs keep their "
                  f"checkpoints (`ect study resume {spec.name}` continues them)", highlight=False)
        return stop.exit_code
    if stop.reason == "cancelled":
        err.print(f"study {spec.name}: cancelled; its runs keep their checkpoints "
                  f"(`ect study resume {spec.name}` continues them)", highlight=False)
        return RUNTIME
    return RUNTIME if set(counts) - set(FINISHED) else 0


def _print_failures(store: Store, runs: list) -> None:
    """One line per failed run on stderr: its label, id, the error's last line and where its full traceback is."""
    for r in runs:
        rec = store.run(r.run_id)
        if rec.status != "failed":
            continue
        last = (rec.error or "no error text").strip().splitlines()[-1]
        where = f"full traceback: {rec.error_file}" if rec.error_file else f"`ect study status {r.study}` shows it"
        err.print(f"failed: run {r.label} ({r.run_id}): {last} ({where})", markup=False, highlight=False, soft_wrap=True)


ADDRESS = typer.Option(None, "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray on loopback).")
CPUS = typer.Option(None, "--cpus", show_default="all", help="CPUs for the local Ray instance.")


@app.command("run")
def run_cmd(
    spec_file: Path = typer.Argument(..., help="Study YAML file."),
    db: Optional[str] = DB_OPTION,
    storage: Path = STORAGE_OPTION,
    address: Optional[str] = ADDRESS,
    cpus: Optional[int] = CPUS,
    track: Optional[str] = TRACK_OPTION,
    dashboard: bool = DASHBOARD_OPTION,
) -> None:
    """Submit a study: runs already finished in the store are reused, the rest are trained."""
    from .validation import check_study, with_absolute_inputs

    with clean_errors():
        spec = with_absolute_inputs(check_study(spec_file))
        code = _submit(open_store(db), spec, storage, address, cpus, track, dashboard, inputs_checked=True)
    raise typer.Exit(code)


@app.command("submit")
def submit_cmd(
    spec_file: Path = typer.Argument(..., help="Study YAML file."),
    address: str = typer.Option(..., "--address", help="The cluster's Jobs server: its Ray dashboard's URL, http://HEAD:8265."),
    db: Optional[str] = typer.Option(None, "--db", help="Store: an SQLAlchemy URL or an SQLite file path that the cluster's head reaches too (default: $ECT_DB, else ./ect.db)."),
    storage: Path = typer.Option(..., "--storage", help="Root of run directories and checkpoints: an absolute path that every node sees."),
) -> None:
    """Submit a study's driver to a Ray cluster as a Ray Job, print the job id and return."""
    from .jobs import submit as submit_job

    with clean_errors():
        spec = load_study(spec_file)
        job = submit_job(spec, address, db, storage,
                         warn=lambda m: err.print(f"[yellow]warning:[/] {m}", markup=True, highlight=False, soft_wrap=True))
    if not job.new:
        err.print(f"[red]error:[/] study {spec.name} is already submitted: job {job.job_id} at {job.address} is "
                  f"{job.state} (`ect study cancel {spec.name}` stops it)", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(job.job_id, highlight=False)
    err.print(f"study {spec.name}: submitted to {job.address}; follow it with `ect study status {spec.name}` "
              f"and `ect study logs {spec.name} --follow`", highlight=False, soft_wrap=True)


@app.command("logs")
def logs_cmd(
    name: str = typer.Argument(..., help="Study name."),
    db: Optional[str] = DB_OPTION,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends."),
) -> None:
    """The log of a submitted study's driver (its Ray Job)."""
    from .jobs import logs as job_logs

    with clean_errors():
        study = open_store(db, create=False).study(name)
        job_logs(study, follow, lambda text: typer.echo(text, nl=False))


@app.command("resume")
def resume_cmd(
    name: str = typer.Argument(..., help="Study name (as stored)."),
    db: Optional[str] = DB_OPTION,
    storage: Path = STORAGE_OPTION,
    address: Optional[str] = ADDRESS,
    cpus: Optional[int] = CPUS,
) -> None:
    """Continue an interrupted study from the spec stored with it; unfinished runs resume from checkpoints
    (a run whose checkpoint no longer loads is trained again from its start)."""
    from .verify import reset_damaged

    with clean_errors():
        store = open_store(db, create=False)
        spec = stored_spec(store.study(name).spec_yaml, f"study {name!r} (stored spec)")
        for c in reset_damaged(store, name):
            err.print(f"run {c.label} ({c.run_id}): checkpoint damaged ({c.problem}); training it again from its start",
                      highlight=False, soft_wrap=True)
        code = _submit(store, spec, storage, address, cpus)
    raise typer.Exit(code)


def _mark_stale(df: pd.DataFrame) -> None:
    """Show a `running` run whose driver stopped beating (e.g. it was SIGKILLed) as `stale (heartbeat ...)`."""
    import pandas as pd

    beats = pd.to_datetime(df["heartbeat_at"], utc=True)  # SQLite returns naive UTC times
    stale = (df["status"] == "running") & ((pd.Timestamp.now(tz="UTC") - beats).dt.total_seconds() > STALE_SECONDS)
    df.loc[stale, "status"] = [f"stale (heartbeat {b.isoformat(timespec='seconds')})" for b in beats[stale]]


@app.command("status")
def status_cmd(
    name: str = typer.Argument(..., help="Study name."),
    db: Optional[str] = DB_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Runs of a study with status, step, attempts and compute; a failed run's last error lines and traceback file."""
    from .jobs import job_state

    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        study = store.study(name)
        df = store.runs_frame(name)
        job = job_state(study)
    _mark_stale(df)
    cols = ["run_id", "label", "role", "status", "step", "total_steps", "attempts", "train_flops", "error"]
    if json_out:
        print_json({"study": name, "status": study.status, "job": job.as_dict() if job else None,
                    "runs": json.loads(df[cols + ["error_file"]].to_json(orient="records"))})
        return
    if job is not None:
        out.print(f"job {job.job_id} at {job.address}: {job.state}", highlight=False, soft_wrap=True)
    table = Table(title=f"study {name}: {study.status}")
    for c in cols:
        table.add_column(c)
    for _, r in df[cols].iterrows():
        row = r.copy()
        if isinstance(row["error"], str):
            row["error"] = row["error"].splitlines()[-1]
        table.add_row(*("" if v is None or v != v else (f"{v:.3g}" if isinstance(v, float) else str(v)) for v in row))
    out.print(table)
    for _, r in df[df["error_file"].notna()].iterrows():
        out.print(f"run {r['label']} ({r['run_id']}) failed; last lines of its traceback ({r['error_file']}):",
                  highlight=False, markup=False, soft_wrap=True)
        out.print(r["error"], highlight=False, markup=False, soft_wrap=True)


@app.command("report")
def report_cmd(
    name: str = typer.Argument(..., help="Study name."),
    db: Optional[str] = DB_OPTION,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Also write the figures, fits (JSON) and tables here."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    points: FitPoints = POINTS_OPTION,
) -> None:
    """Summary of a study: runs with their evaluations, pretrained baselines, the metric's floor and the fitted laws."""
    with clean_errors():
        report, payload, written = _report(open_store(db, create=False, readonly=True), name, out_dir, points.value,
                                           lambda line: err.print(line, highlight=False, soft_wrap=True))
    if json_out:
        print_json(payload)
        return
    _print_report(name, report)
    for path in written:
        out.print(f"wrote {path}")


def _report(store: Store, name: str, out_dir: Optional[Path], points: str = FitPoints.means.value,
            warn: Callable[[str], None] = lambda _: None) -> tuple[Any, dict, list[Path]]:
    """(report, its JSON payload, files written): with `out_dir`, the figures, report.json and runs.csv go there,
    all or nothing. Runs whose checkpoint is damaged are named through `warn`, listed and left out of the figures."""
    from .cli_analysis import regenerate
    from .report import build_report
    from .study_frames import study_frame
    from .verify import damaged_runs

    spec = stored_spec(store.study(name).spec_yaml, f"study {name!r} (stored spec)")
    if out_dir is not None:
        check_dir_target(out_dir)
    bad = damaged_runs(store, name, warn)
    report = build_report(store, spec, points)
    payload = {"study": name, "metric": report.metric_info, "floor": report.floor, "baselines": report.baselines,
               "axes": {"compute": list(report.axes.compute), "swept": list(report.axes.swept)},
               "sweep": report.sweep, "fit_points": report.points, "fits": report.fits, "seed_spread": report.spread,
               "headline": report.headline, "claims": report.claims, "compute": report.compute,
               "runs": json.loads(report.runs.to_json(orient="records")),
               "damaged": [{"run_id": c.run_id, "label": c.label, "path": c.path, "problem": c.problem} for c in bad]}
    written: list[Path] = []
    if out_dir is not None:
        with atomic_dir(out_dir) as tmp:  # all or nothing: a failure leaves out_dir as it was
            written = regenerate(study_frame(store, name), spec, tmp, report.references(), points,
                                 frozenset(c.run_id for c in bad))
            (tmp / "report.json").write_text(json_text(payload, indent=2) + "\n")
            report.runs.to_csv(tmp / "runs.csv", index=False)
            written = moved(written + [tmp / "report.json", tmp / "runs.csv"], tmp, out_dir)
    return report, payload, written


def write_report(store: Store, name: str, out_dir: Path) -> list[Path]:
    """`ect study report NAME --out OUT_DIR`: the study's figures, report.json and runs.csv; the paths written."""
    return _report(store, name, out_dir)[2]


def _print_report(name: str, report) -> None:
    table = Table(title=f"study {name}: runs ({report.metric}; lower is better)")
    cols = [c for c in report.runs.columns if c not in ("run_id", "train_flops", "total_flops")]
    for c in cols:
        table.add_column(str(c))
    for _, r in report.runs[cols].iterrows():
        table.add_row(*("" if v is None or (isinstance(v, float) and v != v)
                        else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r))
    out.print(table)
    if report.compute:
        c = report.compute
        out.print(f"training compute: tuning only {c['tuning_flops']:.4g} FLOPs, pretraining "
                  f"{c['pretraining_flops']:.4g} FLOPs, total {c['total_flops']:.4g} FLOPs", highlight=False)
    if report.floor is not None:
        out.print(f"metric floor (real data vs reference, same sample count): {report.floor:.4g}")
    if report.baselines:
        out.print("pretrained baselines: " + ", ".join(f"{k} = {v:.4g}" for k, v in report.baselines.items()))
    _print_sweep(report)
    if not report.axes.has_compute_axis:
        varied = ", ".join(report.axes.swept) or "nothing"
        out.print(f"no compute axis (the study varies {varied}): no scaling fits or compute headline", highlight=False)
        return
    from analysis import FIT_POINTS

    fits = Table(title=f"fits against normalised compute (x 12.8 M images), on {FIT_POINTS[report.points]}")
    for c in ("nfe", "form", "n", "K", "alpha", "alpha_ci", "E / floor", "r", "p_value", "converged / error"):
        fits.add_column(c)
    for f in report.fits:
        def fmt(v):
            if v is None:
                return ""
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"
            return f"{v:.4g}" if isinstance(v, float) else str(v)
        fits.add_row(str(f["nfe"]) + "".join(f", {k}={v:g}" if isinstance(v, float) else f", {k}={v}"
                                              for k, v in f.get("config", {}).items()), f["form"], f.get("note", str(f.get("runs", ""))), fmt(f.get("K")),
                     fmt(f.get("alpha")), fmt(f.get("alpha_ci")), f.get("floor", ""), fmt(f.get("r")), fmt(f.get("p_value")),
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
    tuned = report.headline.get("tuned_two_step_beats_one_step", {})
    if tuned.get("holds") is not None:
        out.print(f"2-step at the tuned t_mid better than 1-step in {'every' if tuned['holds'] else 'NOT every'} run "
                  f"({tuned['runs']} runs; worst ratio {tuned['worst_ratio']:.3g})", highlight=False)
    for row in report.spread:
        if max(row["seeds_smallest"], row["seeds_largest"]) > 1:
            verdict = "exceeds" if row["exceeds"] else "does NOT exceed"
            out.print(f"NFE {row['nfe']:g}: compute trend {row['trend']:+.4g} (smallest to largest budget) {verdict} "
                      f"the seed spread (max - min) {row['spread_smallest']:.3g} ({row['seeds_smallest']} seeds) "
                      f"and {row['spread_largest']:.3g} ({row['seeds_largest']} seeds)", highlight=False)
    for claim in report.claims:
        limits = ", ".join(f"{k} {v}" for k, v in claim["thresholds"].items() if v is not None)
        out.print(f"claim ({claim['claim']}) {claim['verdict'].upper()}: {claim['statement']} ({limits})",
                  highlight=False)


def _print_sweep(report) -> None:
    """The metric per configuration of a sweep: mean and min-max over its seeds, the best of each NFE starred."""
    if not report.sweep:
        return
    m = report.metric
    table = Table(title=f"{m} per configuration (mean over training seeds; * best per NFE)")
    for c in ("nfe", "configuration", m, "min", "max", "seeds"):
        table.add_column(c)
    for r in report.sweep:
        table.add_row(str(r["nfe"]), r["config"], f"{r[m]:.4g}" + (" *" if r["best"] else ""), f"{r[m + '_min']:.4g}",
                      f"{r[m + '_max']:.4g}", str(r["n"]))
    out.print(table)


@app.command("sync-tracking")
def sync_tracking_cmd(
    name: str = typer.Argument(..., help="Study name."),
    db: Optional[str] = DB_OPTION,
    track: Optional[str] = TRACK_OPTION,
) -> None:
    """Upload to the tracker whatever of a study it lacks (runs, params, metrics, report); safe to repeat."""
    from .store import StoreError, redact
    from .tracking import tracker_for

    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        target = track or stored_spec(store.study(name).spec_yaml, f"study {name!r} (stored spec)").tracking
        if target is None:
            raise ConfigError(f"study {name!r} declares no tracking: give --track mlflow:URI")
        tracker = tracker_for(target)
        try:
            counts = tracker.sync(store, name)
        except (ConfigError, StoreError):
            raise
        except Exception as e:  # the tracker's own errors (unreachable server, HTTP errors): one line, exit 1
            raise RuntimeError(f"tracking at {redact(tracker.uri)}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    out.print(f"study {name} synced to {redact(tracker.uri)}: {counts}", highlight=False, soft_wrap=True)


@app.command("verify")
def verify_cmd(name: str = typer.Argument(..., help="Study name."), db: Optional[str] = DB_OPTION,
               json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Load every stored checkpoint of a study (weights only), compare its step with the store, list damaged ones
    (exit 1 if any; `ect study resume` trains them again)."""
    from .verify import damaged, verify_study

    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        store.study(name)
        checks = verify_study(store, name)
    bad = damaged(checks)
    if json_out:
        print_json([c.__dict__ for c in checks])
    else:
        for c in bad:
            err.print(f"damaged: run {c.label} ({c.run_id}): {c.problem}", highlight=False, soft_wrap=True)
        out.print(f"study {name}: {len(checks)} checkpoints checked, {len(bad)} damaged")
    if bad:
        raise typer.Exit(RUNTIME)


@app.command("cancel")
def cancel_cmd(
    name: str = typer.Argument(..., help="Study name."),
    db: Optional[str] = DB_OPTION,
    grace: float = typer.Option(GRACE_S, "--grace", min=0, help="Seconds a submitted study's driver gets to stop its trials itself before its Ray Job is stopped."),
) -> None:
    """Cancel a study: its unfinished runs are marked cancelled, and a driver running it stops their trials
    within seconds (their checkpoints stay; `ect study resume` continues them); a submitted study's Ray Job
    is stopped if its driver has not ended after `--grace` seconds."""
    from .jobs import stop_submitted
    from .store import StoreError

    with clean_errors():
        store = open_store(db, create=False)
        store.study(name)
        runs = store.runs_frame(name)
        if len(runs) and runs["status"].isin(FINISHED).all():
            raise StoreError(f"study {name!r} has finished (all {len(runs)} runs {'/'.join(FINISHED)}): nothing to cancel")
        n = store.cancel_study(name)
        out.print(f"study {name}: {n} runs cancelled; a driver running it stops them within a few seconds")
        job = stop_submitted(store, name, grace)
    if job is not None:
        out.print(f"job {job.job_id}: {job.state}", highlight=False)


def study_rows(store: Store) -> list[dict]:
    """The studies in the store: name, kind, status, created_at and number of runs."""
    return [{"name": s.name, "kind": s.kind, "status": s.status, "created_at": s.created_at.isoformat(),
             "runs": len(store.runs_frame(s.name))} for s in store.studies()]


@app.command("list")
def list_cmd(db: Optional[str] = DB_OPTION, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Studies in the store."""
    from .store import redact

    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        rows = study_rows(store)
    if json_out:
        print_json(rows)
        return
    table = Table(title=f"studies in {redact(store.url)}")
    for c in ("name", "kind", "status", "runs", "created_at"):
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("name", "kind", "status", "runs", "created_at")))
    out.print(table)


__all__ = ["app", "ConfigError"]
