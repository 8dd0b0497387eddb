"""`ect analyze ...` and `ect figures ...`: fits, Pareto frontiers, the paper's figures and tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import typer
import yaml
from matplotlib.figure import Figure
from rich.table import Table

import analysis
from studies.spec import StudySpec

from trainer.config import ConfigError

from .common import DB_OPTION, clean_errors, err, open_store, out
from .store import Store
from .sample_grids import budget_panels, is_image_study
from .study_frames import fit_rows, resolve_column, study_frame

analyze_app = typer.Typer(help="Fit power laws and find Pareto frontiers in a study's results.", no_args_is_help=True)
figures_app = typer.Typer(help="Regenerate the paper's figures and tables.", no_args_is_help=True)

STUDY = typer.Option(..., "--study", help="Study name (as stored).")
NFE = typer.Option(2, "--nfe", help="Network evaluations per sample (1, 2, ...; 35 with --sampler heun).")
SAMPLER = typer.Option("consistency", "--sampler", help="consistency or heun.")


def _fit(rows: pd.DataFrame, x: str, y: str, form: str, bootstrap: int) -> dict:
    if form == "loglinear":
        return analysis.fit_power_law(rows[x], rows[y], bootstrap=bootstrap, x_name=x, y_name=y).to_dict()
    return analysis.fit_saturating(rows[x], rows[y], bootstrap=bootstrap, x_name=x, y_name=y).to_dict()


def fit_study(store: Store, study: str, x: str = "train_compute", y: str = "fd", nfe: int = 2,
              sampler: str = "consistency", form: str = "loglinear", bootstrap: int = 1000) -> dict:
    """`ect analyze fit` as data: the fit, its points and notes on the runs left out."""
    if form not in ("loglinear", "saturating"):
        raise ConfigError(f"--form {form!r}: expected loglinear or saturating")
    if sampler not in ("consistency", "heun"):
        raise ConfigError(f"--sampler {sampler!r}: expected consistency or heun")
    store.study(study)
    df = study_frame(store, study)
    rows, notes = fit_rows(df, nfe, sampler)
    xc, yc = resolve_column(df, x), resolve_column(df, y)
    return {"study": study, "x": xc, "y": yc, "nfe": nfe, "sampler": sampler, "form": form,
            "points": rows[[xc, yc, "label"]].to_dict(orient="records"), "fit": _fit(rows, xc, yc, form, bootstrap),
            "notes": notes}


@analyze_app.command("fit")
def fit_cmd(
    study: str = STUDY,
    x: str = typer.Option("train_compute", "--x", help="Cost column: train_compute (FLOPs), compute (x 12.8 M images), params, gflops, or a config key."),
    y: str = typer.Option("fd", "--y", help="Metric column (fd = the study's Fréchet distance, or e.g. fd_digits, swd)."),
    nfe: int = NFE,
    sampler: str = SAMPLER,
    form: str = typer.Option("loglinear", "--form", help="loglinear: FD = K C^alpha; saturating: FD = E + K C^alpha."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the intervals."),
    db: Optional[str] = DB_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fit a power law of a metric against a cost over a study's completed runs (diverged runs are left out, and said so)."""
    with clean_errors():
        payload = fit_study(open_store(db, create=False, readonly=True), study, x, y, nfe, sampler, form, bootstrap)
    for note in payload["notes"]:
        err.print(f"note: {note}")
    if json_out:
        out.print_json(json.dumps(payload, default=float))
        return
    table = Table(title=f"{study}: {payload['y']} vs {payload['x']} at NFE {nfe} ({form})", show_header=False)
    for k, v in payload["fit"].items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)


def pareto_study(store: Store, study: str, cost: str = "train_compute", y: str = "fd",
                 nfe: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """`ect analyze pareto` as data: the frontier (label, nfe, cost, metric) and notes on the runs left out."""
    store.study(study)
    rows, notes = fit_rows(study_frame(store, study), nfe)
    rows = analysis.add_inference_cost(rows, nfe="nfe", gflops="model_gflops")
    cc, yc = resolve_column(rows, cost), resolve_column(rows, y)
    return analysis.pareto_frontier(rows, cc, yc)[["label", "nfe", cc, yc]], notes


@analyze_app.command("pareto")
def pareto_cmd(
    study: str = STUDY,
    cost: str = typer.Option("train_compute", "--cost", help="Cost column (train_compute, compute, params, gflops, inference_cost = NFE x model GFLOPs, ...)."),
    y: str = typer.Option("fd", "--y", help="Metric column (lower is better)."),
    nfe: Optional[int] = typer.Option(None, "--nfe", help="Only this NFE [default: all NFEs together]."),
    db: Optional[str] = DB_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV."),
) -> None:
    """The non-dominated runs of a study: no other run is both cheaper and better."""
    with clean_errors():
        front, notes = pareto_study(open_store(db, create=False, readonly=True), study, cost, y, nfe)
    for note in notes:
        err.print(f"note: {note}")
    cc, yc = front.columns[2], front.columns[3]
    if json_out:
        out.print_json(front.to_json(orient="records"))
    elif csv_out:
        out.print(front.to_csv(index=False), end="")
    else:
        table = Table(title=f"{study}: Pareto frontier of {yc} vs {cc}")
        for c in front.columns:
            table.add_column(str(c))
        for row in front.itertuples(index=False):
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        out.print(table)


def _metric(df: pd.DataFrame) -> str | None:
    """The study's metric column: its Fréchet distance, else swd or energy."""
    return next((c for c in ("fd", "swd", "energy") if c in df.columns), None)


def _save(fig: Figure, out_dir: Path, name: str, written: list[Path]) -> None:
    written.extend(analysis.save_figure(fig, out_dir / name))


def figure_makers(df: pd.DataFrame, spec: StudySpec,
                  references: dict[str, float] | None = None) -> dict[str, Callable[[], Figure | None]]:
    """Every figure the study's kind supports, by name, each drawn only when called (None: nothing to draw);
    `references` (name -> metric value: baselines, the metric's floor) go on the compute-scaling figure."""
    rows, _ = fit_rows(df, None)
    metric = _metric(df)
    if metric is None or rows.empty:
        raise ValueError(f"study {spec.name!r} has no completed evaluations to draw")
    ect = spec.base.ect
    makers: dict[str, Callable[[], Figure | None]] = {
        "mapping_schedule": lambda: analysis.fig_mapping_schedule(ect.q, ect.stages, ect.k, ect.b)}
    if spec.kind == "compute_scaling":
        makers["compute_scaling"] = lambda: analysis.fig_compute_scaling(
            rows, x="normalized_compute", y=metric, saturating=True, references=references,
            xlabel="tuning compute (multiples of 12.8 M images)")
        makers["pareto_train_compute"] = lambda: analysis.fig_pareto(rows, "train_flops", metric, hue="nfe")
        makers["metric_vs_iterations"] = lambda: analysis.fig_training_curve(
            rows, x="schedule.iterations", y=metric, logy=True)
        if is_image_study(df):
            makers["samples_per_budget"] = lambda: _panels_figure(df)
    if spec.kind == "model_size":
        makers["model_size"] = lambda: analysis.fig_model_size(
            rows.assign(mparams=rows["num_params"] / 1e6), metric=metric, gflops="model_gflops", params="mparams")
        makers["pareto_inference"] = lambda: analysis.fig_pareto(
            analysis.add_inference_cost(rows, nfe="nfe", gflops="model_gflops"), "inference_cost", metric, hue="nfe")
    if "network.dropout" in (spec.grid or {}):
        makers["dropout"] = lambda: analysis.fig_dropout(rows, x="network.dropout", y=metric)
    return makers


def _panels_figure(df: pd.DataFrame) -> Figure | None:
    panels = budget_panels(df)
    return analysis.fig_image_panels(panels) if panels else None


def regenerate(df: pd.DataFrame, spec: StudySpec, out_dir: Path,
               references: dict[str, float] | None = None) -> list[Path]:
    """Every figure and table the study's kind supports (`figure_makers`, the ablation table), written under `out_dir`."""
    written: list[Path] = []
    makers = figure_makers(df, spec, references)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in makers.items():
        fig = make()
        if fig is not None:
            _save(fig, out_dir, name, written)
    if spec.kind == "ablation":
        rows, _ = fit_rows(df, None)
        table = analysis.ablation_table(rows.assign(row=rows["label"] + " · NFE " + rows["nfe"].astype(str)),
                                        "row", [_metric(df)])
        for suffix, text in (("md", analysis.to_markdown(table)), ("tex", analysis.to_latex(table)),
                             ("csv", analysis.to_csv(table))):
            path = out_dir / f"ablation.{suffix}"
            path.write_text(text)
            written.append(path)
    return written


@figures_app.command("regenerate")
def regenerate_cmd(
    study: str = STUDY,
    out_dir: Path = typer.Option(Path("figures"), "--out", help="Output directory (PNG and PDF per figure)."),
    db: Optional[str] = DB_OPTION,
) -> None:
    """Draw every figure (and table) that a study's kind supports from its stored results."""
    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        spec = StudySpec.model_validate(yaml.safe_load(store.study(study).spec_yaml))
        written = regenerate(study_frame(store, study), spec, out_dir)
    for path in written:
        out.print(f"wrote {path}")


@figures_app.command("paper")
def paper_cmd(out_dir: Path = typer.Option(Path("figures/paper"), "--out", help="Output directory.")) -> None:
    """The figures that the paper's published numbers alone determine: Fig. 4 (right) from Table 7,
    Fig. 5 for the CIFAR-10 and ImageNet 64 schedules, and Tables 2-4 as Markdown / LaTeX / CSV."""
    with clean_errors():
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        t7 = analysis.load_reference("table7")
        imagenet = analysis.nfe_long(t7[t7["dataset"].str.startswith("ImageNet")], {"fid_1step": 1, "fid_2step": 2}, "fid")
        _save(analysis.fig_model_size(imagenet, metric="fid", label_col="label"), out_dir, "fig4_right_model_size", written)
        _save(analysis.fig_mapping_schedule(2, 8), out_dir, "fig5_schedule_cifar10", written)
        _save(analysis.fig_mapping_schedule(4, 4), out_dir, "fig5_schedule_imagenet64", written)
        for name in ("table2", "table3", "table4"):
            ref = analysis.load_reference(name)
            for suffix, text in (("md", analysis.to_markdown(ref)), ("tex", analysis.to_latex(ref)),
                                 ("csv", analysis.to_csv(ref))):
                path = out_dir / f"{name}.{suffix}"
                path.write_text(text)
                written.append(path)
    for path in written:
        out.print(f"wrote {path}")
