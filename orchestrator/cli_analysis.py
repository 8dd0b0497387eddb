"""`ect analyze ...` and `ect figures ...`: fits, Pareto frontiers, the paper's figures and tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer
from rich.table import Table

from studies.spec import StudySpec, stored_spec

from .cli_options import (POINTS_OPTION, SAMPLER_FORMS, FitForm, FitPoints, SamplerChoice, parse_sampler, points_note,
                          print_csv, print_json)
from trainer.config import ConfigError

from .common import DB_OPTION, clean_errors, err, open_store, out
from .outputs import atomic_dir, check_dir_target, moved

if TYPE_CHECKING:
    import pandas as pd

    from .store import Store

# analysis (matplotlib, scipy), pandas and the study frames are imported inside the commands.

analyze_app = typer.Typer(help="Fit power laws and find Pareto frontiers in a study's results.", no_args_is_help=True)
figures_app = typer.Typer(help="Regenerate the paper's figures and tables.", no_args_is_help=True)

STUDY = typer.Option(..., "--study", help="Study name (as stored).")
NFE = typer.Option(None, "--nfe", show_default="2, or the NFE in --sampler", help="Network evaluations per sample (1, 2, ...; 35 with --sampler heun).")
SAMPLER = typer.Option("consistency", "--sampler", help=f"Which evaluations: {SAMPLER_FORMS}, e.g. consistency-2-tuned for 2-step sampling at the searched t_mid.")
X_HELP = ("Cost: tuning (own training FLOPs), total (incl. the pretraining it starts from), sampling (FLOPs per image), "
          "images, compute (x 12.8 M images), or a column (params, gflops, a config key).")


def sampler_choice(sampler: str, nfe: int | None, default_nfe: int | None) -> SamplerChoice:
    """--sampler and --nfe together: the NFE named in either (they must agree), else `default_nfe` for consistency
    sampling and every NFE for Heun."""
    choice = parse_sampler(sampler)
    if nfe is not None and choice.nfe is not None and nfe != choice.nfe:
        raise ConfigError(f"--nfe {nfe} and --sampler {sampler!r} name different NFEs")
    fallback = default_nfe if choice.name == "consistency" else None
    return SamplerChoice(choice.name, next((n for n in (choice.nfe, nfe, fallback) if n is not None), None), choice.tuned)


def fit_one(rows: "pd.DataFrame", x: str, y: str, form: str, points: str) -> dict[str, Any]:
    """The fit of `y` against `x` on `points` ("means" or "seeds") of `rows`, as a dict that says which
    points it used and how many runs were behind them."""
    import analysis

    used = analysis.fit_points(rows, x, y, points)
    fitter = analysis.fit_power_law if form == FitForm.loglinear.value else analysis.fit_saturating
    fit = fitter(used[x], used[y], x_name=x, y_name=y)
    n_runs = int(used["n"].sum())
    return {"points": points, "runs": n_runs, "note": points_note(points, fit.n, n_runs), **fit.to_dict()}


def fit_study(store: "Store", study: str, x: str = "tuning", y: str = "fd", nfe: int | None = None,
              sampler: str = "consistency", form: str = FitForm.loglinear.value,
              points: str = FitPoints.means.value, note: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """`ect analyze fit` as data: the fit, the points it used (x column and its label, sampler), and notes on
    the runs left out (each also passed to `note` as soon as it is known, so a fit that then fails still says
    what it left out)."""
    from .study_frames import fit_rows, resolve_column, study_frame, x_axis

    form, points = _choice(FitForm, form, "--form"), _choice(FitPoints, points, "--points")
    choice = sampler_choice(sampler, nfe, 2)
    store.study(study)
    df = study_frame(store, study)
    rows, notes = fit_rows(df, choice.nfe, choice.name, choice.schedule)
    for n in notes:
        note(n)
    (xc, x_label), yc = x_axis(df, x), resolve_column(df, y)
    return {"study": study, "x": xc, "x_label": x_label, "y": yc, "nfe": choice.nfe, "sampler": str(choice),
            "form": form, "points": points, "data": rows[[xc, yc, "label"]].to_dict(orient="records"),
            "fit": fit_one(rows, xc, yc, form, points), "notes": notes}


def _print_note(note: str) -> None:
    err.print(f"note: {note}", highlight=False, soft_wrap=True)


def _choice(enum: type, value: str, option: str) -> str:
    """A choice given as text (the notebook API) checked against the CLI's Enum: one line naming the option."""
    allowed = [e.value for e in enum]
    if value not in allowed:
        raise ConfigError(f"{option} {value!r}: expected {' or '.join(allowed)}")
    return value


def pareto_study(store: "Store", study: str, cost: str = "tuning", y: str = "fd",
                 nfe: int | None = None, note: Callable[[str], None] = lambda _: None,
                 sampler: str = "consistency") -> tuple["pd.DataFrame", list[str]]:
    """`ect analyze pareto` as data: (label, nfe, cost, metric of the non-dominated runs; notes), each note
    also passed to `note` as soon as it is known; the first note says which cost and sampler it used."""
    import analysis

    from .study_frames import fit_rows, resolve_column, study_frame, x_axis

    store.study(study)
    choice = sampler_choice(sampler, nfe, None)
    rows, notes = fit_rows(study_frame(store, study), choice.nfe, choice.name, choice.schedule)
    rows = analysis.add_inference_cost(rows, nfe="nfe", gflops="model_gflops")
    (cc, c_label), yc = x_axis(rows, cost), resolve_column(rows, y)
    notes = [f"cost: {c_label} ({cc}); sampler: {choice}", *notes]
    for n in notes:
        note(n)
    return analysis.pareto_frontier(rows, cc, yc)[["label", "nfe", cc, yc]], notes


@analyze_app.command("fit")
def fit_cmd(
    study: str = STUDY,
    x: str = typer.Option("tuning", "--x", help=X_HELP),
    y: str = typer.Option("fd", "--y", help="Metric column (fd = the study's Fréchet distance, or e.g. fd_digits, swd)."),
    nfe: Optional[int] = NFE,
    sampler: str = SAMPLER,
    form: FitForm = typer.Option(FitForm.loglinear, "--form", help="loglinear: FD = K C^alpha; saturating: FD = E + K C^alpha, with a test of the floor E against 0."),
    points: FitPoints = POINTS_OPTION,
    db: Optional[str] = DB_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fit a power law of a metric against a cost over a study's completed runs (diverged runs are left out, and said so)."""
    with clean_errors():
        payload = fit_study(open_store(db, create=False, readonly=True), study, x, y, nfe, sampler, form.value,
                            points.value, _print_note)
    result, xc, yc = payload["fit"], payload["x"], payload["y"]
    if json_out:
        print_json(payload)
        return
    table = Table(title=f"{study}: {yc} vs {payload['x_label']} [{xc}], {payload['sampler']} at NFE {payload['nfe']} "
                        f"({form.value}; {result['note']})", show_header=False)
    for k, v in result.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)


@analyze_app.command("pareto")
def pareto_cmd(
    study: str = STUDY,
    cost: str = typer.Option("tuning", "--x", "--cost", help=X_HELP + " Also inference_cost = NFE x model GFLOPs."),
    y: str = typer.Option("fd", "--y", help="Metric column (lower is better)."),
    nfe: Optional[int] = typer.Option(None, "--nfe", show_default="all NFEs together", help="Only this NFE."),
    sampler: str = SAMPLER,
    db: Optional[str] = DB_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV."),
) -> None:
    """The non-dominated runs of a study: no other run is both cheaper and better."""
    with clean_errors():
        if json_out and csv_out:
            raise ConfigError("--json and --csv: choose one output format")
        front, _ = pareto_study(open_store(db, create=False, readonly=True), study, cost, y, nfe, _print_note,
                                sampler)
    cc, yc = front.columns[2], front.columns[3]
    if json_out:
        print_json(front.to_dict(orient="records"))
    elif csv_out:
        print_csv(front.to_csv(index=False))
    else:
        table = Table(title=f"{study}: Pareto frontier of {yc} vs {cc}")
        for c in front.columns:
            table.add_column(str(c))
        for row in front.itertuples(index=False):
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        out.print(table)


def _save(fig, out_dir: Path, name: str, written: list[Path]) -> None:
    import analysis

    written.extend(analysis.save_figure(fig, out_dir / name))


def metric_label(df: "pd.DataFrame", metric: str) -> str:
    """Axis text of a study's metric: 'FD (fd_digits, 2000 samples)', 'SWD (1000 samples)'."""
    name = metric
    if metric == "fd":
        name = next((str(c) for c in df.columns if str(c).startswith("fd_")), metric)
    samples = df["eval.num_samples"].dropna().unique() if "eval.num_samples" in df.columns else []
    detail = [name] if name != metric else []
    if len(samples) == 1:
        detail.append(f"{int(samples[0])} samples")
    head = "FD" if metric.startswith("fd") else metric.upper()
    return f"{head} ({', '.join(detail)})" if detail else head


def pretrain_in_tuning_units(df: "pd.DataFrame", rows: "pd.DataFrame", x: str = "normalized_compute") -> float | None:
    """The pretraining run's training FLOPs expressed in `x` units of the tuning runs (None without one)."""
    pre = df[(df["role"] == "pretrain") & (df["status"] == "completed")].drop_duplicates("run_id")
    tune = rows.dropna(subset=[x, "train_flops"])
    tune = tune[tune["train_flops"] > 0]
    if pre.empty or tune.empty:
        return None
    return float(pre["train_flops"].iloc[0] * (tune[x] / tune["train_flops"]).median())


def _paper_fits(metric_col: str) -> "pd.DataFrame | None":
    """Fig. 4's published fits when the study measured the paper's metric (FD_DINOv2), else None."""
    import analysis

    fits = analysis.load_reference("fig4_fits")
    return fits if metric_col in set(fits["metric"]) else None


def _paper_model_sizes(metric_col: str) -> "pd.DataFrame | None":
    """Table 7's ImageNet 64 FIDs (long form) when the study measured FID, else None."""
    import analysis

    if metric_col != "fd_inception":
        return None
    t7 = analysis.load_reference("table7")
    long = analysis.nfe_long(t7[t7["dataset"].str.startswith("ImageNet")], {"fid_1step": 1, "fid_2step": 2}, "fid")
    return long.rename(columns={"fid": "fd"})


def sweep_figure_name(keys: tuple[str, ...]) -> str:
    """File name of a sweep's figure: sweep_optim_lr, sweep_optim_lr_x_network_dropout."""
    return "sweep_" + "_x_".join(k.replace(".", "_") for k in keys)


def figure_makers(df: "pd.DataFrame", spec: StudySpec, references: dict[str, float | None] | None = None,
                  points: str = FitPoints.means.value, damaged: frozenset[str] = frozenset(), x: str = "compute",
                  sampler: SamplerChoice = SamplerChoice()) -> dict[str, Callable[[], Any]]:
    """Every figure the study supports, by name, each drawn only when called (None: nothing to draw): the
    one code path of `study report --out` and `figures regenerate`. What is drawn follows what the runs vary
    (`study_axes`): along a compute axis alone the scaling figures; a 1-D sweep over any other key (or a
    compute key together with one other) the metric against it, a 2-D grid a heatmap. `references` (name ->
    metric value: the Heun baseline, the metric's floor) go on every metric figure, and the paper's published
    numbers are overlaid where the study measured the paper's metric. Runs in `damaged` (ids whose checkpoint
    does not load) are left out of what needs a checkpoint. `x` is the cost axis of the compute-scaling and
    Pareto figures (an --x choice, named on the axis), `sampler` which evaluations are drawn."""
    import analysis

    from .sample_grids import budget_panels, is_image_study
    from .study_frames import fit_rows, study_axes, x_axis

    rows, _ = fit_rows(df, sampler.nfe, sampler.name, sampler.schedule)
    xc, x_label = x_axis(df, x)
    tuning_units = xc in ("normalized_compute", "train_flops", "images_seen")  # the pretraining marker's units
    metric = "fd" if "fd" in df.columns else next((c for c in ("swd", "energy") if c in df.columns), None)
    if metric is None or rows.empty:
        raise ValueError(f"study {spec.name!r} has no completed evaluations to draw")
    label = metric_label(df, metric)
    metric_col = next((str(c) for c in df.columns if str(c).startswith("fd_")), metric) if metric == "fd" else metric
    axes = study_axes(df, spec)
    ect = spec.base.ect
    makers: dict[str, Callable[[], Any]] = {
        "mapping_schedule": lambda: analysis.fig_mapping_schedule(ect.q, ect.stages, ect.k, ect.b)}
    if axes.has_compute_axis and not axes.swept:
        makers["compute_scaling"] = lambda: analysis.fig_compute_scaling(
            rows, x=xc, y=metric, saturating=True, references=references, xlabel=x_label, ylabel=label,
            points=points, pretrain_compute=pretrain_in_tuning_units(df, rows, xc) if tuning_units else None,
            paper_fits=_paper_fits(metric_col) if xc == "normalized_compute" else None)
        makers["pareto_train_compute"] = lambda: analysis.fig_pareto(rows, xc, metric, hue="nfe", xlabel=x_label,
                                                                     ylabel=label, references=references)
        if "schedule.iterations" in axes.compute:
            makers["metric_vs_iterations"] = lambda: analysis.fig_training_curve(
                rows, x="schedule.iterations", y=metric, logy=True, logx=True, ylabel=label, references=references)
        if is_image_study(df):
            makers["samples_per_budget"] = lambda: (analysis.fig_image_panels(panels)
                                                    if (panels := budget_panels(df[~df["run_id"].isin(damaged)]))
                                                    else None)
    elif len(axes.all) == 1:
        makers[sweep_figure_name(axes.all)] = lambda: analysis.fig_sweep(rows, axes.all[0], metric, ylabel=label,
                                                                         references=references)
    elif len(axes.all) == 2:
        makers[sweep_figure_name(axes.all)] = lambda: analysis.fig_sweep_heatmap(rows, *axes.all, metric=metric,
                                                                                 label=label)
    if spec.kind == "model_size":
        makers["model_size"] = lambda: analysis.fig_model_size(
            rows.assign(mparams=rows["num_params"] / 1e6), metric=metric, gflops="model_gflops", params="mparams",
            ylabel=label, paper=_paper_model_sizes(metric_col))
        makers["pareto_inference"] = lambda: analysis.fig_pareto(
            analysis.add_inference_cost(rows, nfe="nfe", gflops="model_gflops"), "inference_cost", metric, hue="nfe",
            ylabel=label, references=references, frontier_per_hue=False)
    return makers


def regenerate(df: "pd.DataFrame", spec: StudySpec, out_dir: Path,
               references: dict[str, float] | None = None, points: str = FitPoints.means.value,
               damaged: frozenset[str] = frozenset(), x: str = "compute",
               sampler: SamplerChoice = SamplerChoice()) -> list[Path]:
    """Every figure (`figure_makers`) and table the study's kind supports, written under `out_dir`."""
    import analysis

    from .study_frames import fit_rows

    written: list[Path] = []
    makers = figure_makers(df, spec, references, points, damaged, x, sampler)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in makers.items():
        fig = make()
        if fig is not None:
            _save(fig, out_dir, name, written)
    if spec.kind == "ablation":
        rows, _ = fit_rows(df, sampler.nfe, sampler.name, sampler.schedule)
        metric = "fd" if "fd" in df.columns else next(c for c in ("swd", "energy") if c in df.columns)
        table = analysis.ablation_table(rows.assign(row=rows["label"] + " · NFE " + rows["nfe"].astype(str)),
                                        "row", [metric])
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
    points: FitPoints = POINTS_OPTION,
    x: str = typer.Option("compute", "--x", help=X_HELP),
    sampler: str = typer.Option("consistency", "--sampler", help=f"Which evaluations: {SAMPLER_FORMS}."),
    db: Optional[str] = DB_OPTION,
) -> None:
    """Draw every figure (and table) that a study's kind supports from its stored results (all or nothing)."""
    from .report import build_report
    from .study_frames import study_frame
    from .verify import damaged_runs

    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        spec = stored_spec(store.study(study).spec_yaml, f"study {study!r} (stored spec)")
        check_dir_target(out_dir)
        bad = damaged_runs(store, study, lambda line: err.print(line, highlight=False, soft_wrap=True))
        references = build_report(store, spec, points.value).references()  # the same lines as `study report`
        with atomic_dir(out_dir) as tmp:
            written = moved(regenerate(study_frame(store, study), spec, tmp, references, points.value,
                                       damaged=frozenset(c.run_id for c in bad), x=x, sampler=parse_sampler(sampler)),
                            tmp, out_dir)
    for path in written:
        out.print(f"wrote {path}")


def paper_overlays(store: "Store", study: str) -> dict[str, Callable[[], Any]]:
    """The user's runs of `study` drawn over the paper's published numbers, one figure per paper figure whose
    axes the study shares: training compute (Fig. 4 left, the published fits) and model size (Fig. 4 right,
    Table 7). A study that varies neither is refused in one line naming what it varies."""
    import analysis

    from .study_frames import fit_rows, study_axes, study_frame

    spec = stored_spec(store.study(study).spec_yaml, f"study {study!r} (stored spec)")
    df = study_frame(store, study)
    rows, _ = fit_rows(df, None)
    metric = "fd" if "fd" in df.columns else next((c for c in ("swd", "energy") if c in df.columns), None)
    if metric is None or rows.empty:
        raise ValueError(f"study {study!r} has no completed evaluations to draw")
    label = metric_label(df, metric)
    axes = study_axes(df, spec)
    overlays: dict[str, Callable[[], Any]] = {}
    if axes.has_compute_axis:
        overlays["fig4_left_compute_scaling_overlay"] = lambda: analysis.fig_compute_scaling(
            rows, x="normalized_compute", y=metric, ylabel=label, paper_fits=analysis.load_reference("fig4_fits"))
    if spec.kind == "model_size" or "network.model_channels" in axes.all:
        t7 = analysis.load_reference("table7")
        paper = analysis.nfe_long(t7[t7["dataset"].str.startswith("ImageNet")], {"fid_1step": 1, "fid_2step": 2},
                                  metric)
        overlays["fig4_right_model_size_overlay"] = lambda: analysis.fig_model_size(
            rows.assign(mparams=rows["num_params"] / 1e6), metric=metric, gflops="model_gflops", params="mparams",
            ylabel=label, paper=paper)
    if not overlays:
        varied = ", ".join(axes.all) or "no config key (seeds only)"
        raise ConfigError(f"--study {study!r}: its runs vary {varied}; no paper figure has these axes (the paper's "
                          "are training compute, Fig. 4 left, and model size, Fig. 4 right)")
    return overlays


@figures_app.command("paper")
def paper_cmd(out_dir: Path = typer.Option(Path("figures/paper"), "--out", help="Output directory."),
              study: Optional[str] = typer.Option(None, "--study", help="Also draw this study's runs over the paper's "
                                                  "published points, on every paper figure whose axes it shares."),
              db: Optional[str] = DB_OPTION) -> None:
    """The figures that the paper's published numbers alone determine: Fig. 4 (right) from Table 7,
    Fig. 5 for the CIFAR-10 and ImageNet 64 schedules, and Tables 2-4 as Markdown / LaTeX / CSV; with
    --study, that study's runs overlaid on the paper's Fig. 4 (left: compute, right: model size)."""
    import analysis

    with clean_errors():
        if db is not None and study is None:
            raise ConfigError("--db: give --study too (the study whose runs to draw over the paper's)")
        overlays = paper_overlays(open_store(db, create=False, readonly=True), study) if study else {}
        with atomic_dir(out_dir) as tmp:
            written: list[Path] = []
            t7 = analysis.load_reference("table7")
            imagenet = analysis.nfe_long(t7[t7["dataset"].str.startswith("ImageNet")],
                                         {"fid_1step": 1, "fid_2step": 2}, "fid")
            _save(analysis.fig_model_size(imagenet, metric="fid", label_col="label"), tmp, "fig4_right_model_size",
                  written)
            _save(analysis.fig_mapping_schedule(2, 8), tmp, "fig5_schedule_cifar10", written)
            _save(analysis.fig_mapping_schedule(4, 4), tmp, "fig5_schedule_imagenet64", written)
            for name, make in overlays.items():
                _save(make(), tmp, name, written)
            for name in ("table2", "table3", "table4"):
                ref = analysis.load_reference(name)
                for suffix, text in (("md", analysis.to_markdown(ref)), ("tex", analysis.to_latex(ref)),
                                     ("csv", analysis.to_csv(ref))):
                    path = tmp / f"{name}.{suffix}"
                    path.write_text(text)
                    written.append(path)
            written = moved(written, tmp, out_dir)
    for path in written:
        out.print(f"wrote {path}")
