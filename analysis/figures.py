"""Publication figures from DataFrames: the paper's Figs. 4, 5 and 7 and a Pareto plot.

Every function returns a matplotlib Figure drawn on the Agg canvas (no pyplot and no global
backend switch, so nothing leaks between calls); `save_figure` writes PNG and PDF. Axis labels
name the quantity and its unit (`axis_label`: "training compute (× 12.8 M images)"; columns it
does not know are shown as they are; override with `xlabel` / `ylabel`), series are one per NFE,
labelled "1-step", "2-step", ... Style: 3.3 in single-column width, 7-8 pt fonts, TrueType fonts in PDF.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.colors import LogNorm, Normalize
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .frames import fit_points, seed_summary
from .labels import axis_label, scaled_axis
from .pareto import pareto_frontier
from .powerlaw import PowerLawFit, fit_power_law
from .saturating import SaturatingFit, fit_saturating
from .schedule import mapping_schedule
from .sweeps import numeric_axis, spans_decades, sweep_summary

COLUMN_WIDTH = 3.3
FULL_WIDTH = 6.8
HEIGHT = 2.4
DENSE_LOG_SUBS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
STYLE: dict[str, Any] = {
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "legend.fontsize": 6.5,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
    "axes.linewidth": 0.6, "axes.grid": True, "grid.linewidth": 0.4, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    # keep both equal: matplotlib 3.11 sizes PDF glyph subsets from ps.fonttype
    "pdf.fonttype": 42, "ps.fonttype": 42, "savefig.dpi": 300,
}

F = TypeVar("F", bound=Callable[..., Any])

def _reference_lines(ax: Axes, references: Mapping[str, float | None] | None) -> None:
    """Labelled horizontal lines at reference values of the metric (the diffusion sampler, the real-data floor)."""
    for i, (name, value) in enumerate((references or {}).items()):
        if value is not None and value > 0:
            ax.axhline(value, color="#7f7f7f", lw=0.8, ls=(0, (1, 1.5)) if i % 2 else (0, (4, 2)),
                       label=f"{name}: {value:.3g}")


def _styled(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with mpl.rc_context(STYLE):
            return func(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _new_figure(ncols: int = 1, width: float = COLUMN_WIDTH, height: float = HEIGHT) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _plain_log_ticks(ax: Axes) -> None:
    """Label log axes with plain numbers (1, 2, 5, ... per decade, denser on short ranges)."""
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or lo <= 0:
            continue
        decades = np.log10(hi / lo)
        subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 1 else DENSE_LOG_SUBS
        axis.set_major_locator(LogLocator(base=10.0, subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _require(df: pd.DataFrame, *cols: str | None) -> None:
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise KeyError(f"missing column(s) {missing}; available: {list(df.columns)}")


def step_label(nfe: Any) -> str:
    """Series label for an NFE value: 1 -> "1-step"."""
    return f"{int(nfe)}-step"


def _groups(df: pd.DataFrame, nfe_col: str | None, fallback: str) -> Iterator[tuple[Any, pd.DataFrame, str, str]]:
    """(nfe, rows, colour, label) per NFE value, or one group when there is no NFE column."""
    if nfe_col is None or nfe_col not in df.columns:
        yield None, df, PALETTE[0], fallback
        return
    for i, nfe in enumerate(sorted(df[nfe_col].dropna().unique())):
        yield nfe, df[df[nfe_col] == nfe], PALETTE[i % len(PALETTE)], step_label(nfe)


def _positive(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    return df[(df[x] > 0) & (df[y] > 0)].dropna(subset=[x, y])


def _try_fit(rows: pd.DataFrame, x: str, y: str) -> PowerLawFit | None:
    try:
        return fit_power_law(rows[x], rows[y], x_name=x, y_name=y)
    except ValueError:
        return None


def _try_saturating(rows: pd.DataFrame, x: str, y: str) -> SaturatingFit | None:
    try:
        return fit_saturating(rows[x], rows[y], x_name=x, y_name=y)
    except ValueError:
        return None


def fit_label(fit: PowerLawFit, prefix: str, points: str | None = None) -> str:
    """Legend text of a fitted line: '<prefix> fit: K=263, α=-0.060, r=-0.994' (+ ' · 6 means')."""
    return f"{prefix} fit: K={fit.K:.3g}, α={fit.alpha:.3f}, r={fit.r:.3f}" + (f" · {fit.n} {points}" if points else "")


@_styled
def fig_compute_scaling(df: pd.DataFrame, x: str = "normalized_compute", y: str = "fd", nfe_col: str = "nfe",
                        fits: Mapping[Any, PowerLawFit] | None = None, paper_fits: pd.DataFrame | None = None,
                        xlabel: str | None = None, ylabel: str | None = None, saturating: bool = False,
                        references: Mapping[str, float] | None = None, pretrain_compute: float | None = None,
                        points: str = "means") -> Figure:
    """Fig. 4 (left): metric vs training compute on log-log axes, one series and fitted line per NFE.

    `saturating` adds the fitted E + K C^α per series (dashed) where the data identify a floor E
    over the pure power law; elsewhere the legend says "no floor identified (p = ...)" and only the
    power law is drawn. `references` draws labelled horizontal lines (e.g. the diffusion sampler's
    metric, the metric's real-data floor). `pretrain_compute` (in the unit of `x`) marks 10 % of
    the pretraining compute with a vertical line, the budget the paper's headline claim uses.
    Runs at the same compute (training seeds) are pooled: small faint points per run, the mean with
    a min-max bar; fits use `fit_points(..., points)` (the means by default; "seeds": every run) and
    the legend says which and how many. `fits` maps NFE -> PowerLawFit; when None each series with
    >= 3 budgets is fitted here. `paper_fits` (e.g. load_reference("fig4_fits"): columns nfe, K,
    alpha) adds dashed lines; it only makes sense when `x` is in the paper's unit (12.8 M images).
    """
    _require(df, x, y)
    data = _positive(df, x, y)
    fig, (ax,) = _new_figure()
    colours: dict[Any, str] = {}
    for nfe, rows, colour, label in _groups(data, nfe_col, y):
        colours[nfe] = colour
        means = seed_summary(rows, x, y, by=())
        if (means["n"] > 1).any():
            ax.plot(rows[x], rows[y], ls="none", marker="o", ms=2.0, color=colour, alpha=0.35)
            ax.errorbar(means[x], means[y], yerr=[means[y] - means[f"{y}_min"], means[f"{y}_max"] - means[y]],
                        ls="none", marker="o", color=colour, capsize=2.0, elinewidth=0.8,
                        label=f"{label} (mean, min-max over seeds)")
        else:
            ax.plot(rows[x], rows[y], ls="none", marker="o", color=colour, label=label)
        used = fit_points(rows, x, y, points)
        fit = fits.get(nfe) if fits is not None else _try_fit(used, x, y)
        if fit is not None and len(rows):
            grid = np.geomspace(rows[x].min(), rows[x].max(), 100)
            ax.plot(grid, fit.mean(grid), color=colour, lw=1.0,
                    label=fit_label(fit, label, None if fits is not None else points))
        sat = _try_saturating(used, x, y) if saturating else None
        if sat is not None and sat.floor_identified:
            grid = np.geomspace(rows[x].min(), rows[x].max(), 100)
            ax.plot(grid, sat.mean(grid), color=colour, lw=0.9, ls="--",
                    label=f"{label} fit: {sat.E:.3g} + K·C^{sat.alpha:.2f} (floor p = {sat.floor_p_value:.2g})")
        elif sat is not None:
            ax.plot([], [], ls="none", label=f"{label}: no floor identified (p = {sat.floor_p_value:.2g})")
    if paper_fits is not None and len(data):
        grid = np.geomspace(data[x].min(), data[x].max(), 100)
        for i, ref in enumerate(paper_fits.itertuples()):
            colour = colours.get(ref.nfe, PALETTE[i % len(PALETTE)])
            ax.plot(grid, ref.K * grid**ref.alpha, ls="--", lw=0.9, color=colour, alpha=0.7,
                    label=f"paper {step_label(ref.nfe)}: K={ref.K:g}, α={ref.alpha:.3f}")
    _reference_lines(ax, references)
    if pretrain_compute is not None and pretrain_compute > 0:
        ax.axvline(0.1 * pretrain_compute, color="#444444", lw=0.8, ls=(0, (3, 1, 1, 1)),
                   label="10 % of pretraining compute")
    ax.set(xscale="log", yscale="log", xlabel=xlabel or axis_label(x), ylabel=ylabel or axis_label(y))
    _plain_log_ticks(ax)
    _legend(fig, ax)
    return fig


def _legend(fig: Figure, ax: Axes) -> None:
    """The legend inside the axes when short; with many entries one column below the axes, off the data,
    the figure grown to fit."""
    entries = len(ax.get_legend_handles_labels()[0])
    if entries > 4:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=1, fontsize=5.5, handlelength=1.8)
        fig.set_figheight(fig.get_figheight() + 0.3 + 0.1 * entries)
    else:
        ax.legend(loc="best")


@_styled
def fig_model_size(df: pd.DataFrame, metric: str = "fid", nfe_col: str = "nfe", gflops: str = "gflops",
                   params: str = "mparams", label_col: str | None = None, ylabel: str | None = None,
                   paper: pd.DataFrame | None = None) -> Figure:
    """Fig. 4 (right): metric vs model GFLOPs (left panel) and vs parameters (right panel).

    Log-log, one series and fitted power law per NFE, marker diameter proportional to `params`;
    `label_col` names the points (e.g. "model"). Table 7 in long form works directly:
    nfe_long(load_reference("table7"), {"fid_1step": 1, "fid_2step": 2}, "fid"); pass it as `paper`
    (columns nfe, gflops, mparams, `metric`) to overlay the published points as open markers.
    """
    _require(df, metric, gflops, params, label_col)
    data = df.dropna(subset=[metric, gflops, params])
    fig, axes = _new_figure(ncols=2, width=FULL_WIDTH)
    biggest = float(data[params].max()) if len(data) else 1.0
    for ax, xcol in zip(axes, (gflops, params)):
        for i, (_, rows, colour, label) in enumerate(_groups(data, nfe_col, metric)):
            diameter = 4.0 + 10.0 * rows[params].astype(float) / biggest
            ax.scatter(rows[xcol], rows[metric], s=diameter**2, color=colour, alpha=0.75, edgecolors="none",
                       label=label)
            fit = _try_fit(rows, xcol, metric)
            if fit is not None:
                grid = np.geomspace(rows[xcol].min(), rows[xcol].max(), 100)
                ax.plot(grid, fit.mean(grid), color=colour, lw=0.9, ls="--",
                        label=f"fit α={fit.alpha:.3f}, r={fit.r:.2f}")
            if label_col is not None and i == 0:
                for xv, yv, name in zip(rows[xcol], rows[metric], rows[label_col]):
                    ax.annotate(str(name), (xv, yv), xytext=(3, 3), textcoords="offset points", fontsize=6)
        if paper is not None:
            pcol = "gflops" if xcol == gflops else "mparams"
            for _, rows, colour, label in _groups(paper.dropna(subset=[pcol, metric]), nfe_col, metric):
                ax.scatter(rows[pcol], rows[metric], s=14, facecolors="none", edgecolors=colour, marker="s",
                           linewidths=0.8, label=f"paper {label}")
        ax.set(xscale="log", yscale="log", xlabel=axis_label(xcol), ylabel=ylabel or axis_label(metric))
        _plain_log_ticks(ax)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, markerscale=0.5,
                  columnspacing=1.0, handlelength=1.5)
    return fig


@_styled
def fig_pareto(df: pd.DataFrame, cost: str, metric: str, minimize_metric: bool = True, hue: str | None = None,
               logx: bool = True, logy: bool = False, xlabel: str | None = None, ylabel: str | None = None,
               references: Mapping[str, float | None] | None = None, frontier_per_hue: bool = True) -> Figure:
    """All runs as points (coloured by `hue`) and the Pareto frontier of cost vs metric as a staircase: one per
    `hue` value by default (per NFE against training compute: a 1-step and a 2-step run are different products),
    or one over all runs with `frontier_per_hue=False` (a cost that already counts the NFE, e.g. inference cost).
    The cost axis is drawn in readable units (`scaled_axis`); `references` adds horizontal lines (Heun, floor)."""
    _require(df, cost, metric, hue)
    data = df.dropna(subset=[cost, metric])
    xs, auto_label = (data[cost], xlabel) if xlabel else scaled_axis(data, cost)  # a given label names raw values
    data = data.assign(**{cost: xs})
    fig, (ax,) = _new_figure()
    groups = [(None, data)] if hue is None else list(data.groupby(hue, sort=True))
    per_group = hue is not None and frontier_per_hue
    for i, (value, rows) in enumerate(groups):
        colour = "#9e9e9e" if hue is None else PALETTE[i % len(PALETTE)]
        name = "runs" if hue is None else step_label(value) if hue == "nfe" else f"{hue}={value}"
        ax.plot(rows[cost], rows[metric], ls="none", marker="o", alpha=0.5, ms=3, color=colour, label=name)
        if per_group:
            front = pareto_frontier(rows, cost, metric, minimize_metric)
            ax.plot(front[cost], front[metric], drawstyle="steps-post", marker="o", mfc="none", color=colour, lw=1.0,
                    label=f"{name} Pareto frontier")
    if not per_group:
        front = pareto_frontier(data, cost, metric, minimize_metric)
        ax.plot(front[cost], front[metric], drawstyle="steps-post", marker="o", mfc="none", color="black", lw=1.0,
                label="Pareto frontier")
    _reference_lines(ax, references)
    ax.set(xscale="log" if logx else "linear", yscale="log" if logy else "linear", xlabel=xlabel or auto_label,
           ylabel=ylabel or axis_label(metric))
    _plain_log_ticks(ax)
    _legend(fig, ax)
    return fig


@_styled
def fig_mapping_schedule(q: float, stages: int, k: float = 8.0, b: float = 1.0,
                         t: np.ndarray | None = None) -> Figure:
    """Fig. 5: r/t against t (log axis) for each stage a = 1 .. stages of the mapping function."""
    sched = mapping_schedule(q, stages, k, b, t)
    fig, (ax,) = _new_figure()
    cmap = mpl.colormaps["viridis"]
    for a, rows in sched.groupby("stage", sort=True):
        ax.plot(rows["t"], rows["r_over_t"], color=cmap((a - 1) / max(stages - 1, 1)), label=f"a = {a}")
    ax.set(xscale="log", xlabel="noise level t", ylabel="r / t", ylim=(-0.02, 1.02),
           title=f"q = {q:g}, {stages} stages, k = {k:g}, b = {b:g}")
    _plain_log_ticks(ax)
    ax.legend(loc="best", ncols=2 if stages > 4 else 1)
    return fig


def _metric_vs(ax: Axes, df: pd.DataFrame, x: str, y: str, nfe_col: str | None) -> None:
    """One line per NFE of the mean of y at each x, with +-1 std error bars where x repeats."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    for _, rows, colour, label in _groups(df.dropna(subset=[x, y]), nfe_col, y):
        agg = rows.groupby(x)[y].agg(["mean", "std", "count"]).sort_index()
        ax.plot(agg.index, agg["mean"], marker="o", color=colour, label=label)
        if (agg["count"] > 1).any():
            ax.errorbar(agg.index, agg["mean"], yerr=agg["std"].fillna(0.0), fmt="none", color=colour,
                        capsize=2, lw=0.8)


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


@_styled
def fig_sweep(df: pd.DataFrame, x: str, y: str = "fd", nfe_col: str | None = "nfe", xlabel: str | None = None,
              ylabel: str | None = None, references: Mapping[str, float | None] | None = None,
              lower_is_better: bool = True) -> Figure:
    """A 1-D sweep: the metric against the swept key, one line per NFE through the mean over training seeds,
    the seeds' min-max as bars (each seed a faint point), the best mean of each NFE starred and named in the
    legend. Numbers go on a numeric axis (log where they span a decade or more), anything else (a weighting's
    name) on evenly spaced categories. `references` adds horizontal lines (Heun, the real-data floor)."""
    _require(df, x, y)
    data = df.dropna(subset=[x, y])
    by = (nfe_col,) if nfe_col is not None and nfe_col in data.columns else ()
    summary = sweep_summary(data, x, y, by=by, lower_is_better=lower_is_better)
    values = sorted(summary[x].unique(), key=lambda v: (str(type(v)), v))
    numeric = numeric_axis(values)
    pos = (lambda v: v) if numeric else {v: i for i, v in enumerate(values)}.__getitem__
    fig, (ax,) = _new_figure()
    for nfe, rows, colour, label in _groups(summary, nfe_col if by else None, y):
        seeds = data if nfe is None else data[data[nfe_col] == nfe]
        if (rows["n"] > 1).any():
            ax.plot([pos(v) for v in seeds[x]], seeds[y], ls="none", marker="o", ms=2.0, color=colour, alpha=0.35)
        xs = [pos(v) for v in rows[x]]
        ax.errorbar(xs, rows[y], yerr=[rows[y] - rows[f"{y}_min"], rows[f"{y}_max"] - rows[y]], marker="o",
                    ls="-" if numeric else "none", color=colour, capsize=2.0, elinewidth=0.8,
                    label=label + (" (mean, min-max over seeds)" if (rows["n"] > 1).any() else ""))
        best = rows[rows["best"]].iloc[0]
        ax.plot([pos(best[x])], [best[y]], ls="none", marker="*", ms=9, color=colour, mec="black", mew=0.5,
                label=f"best {label}: {_value_text(best[x])} ({best[y]:.3g})")
    _reference_lines(ax, references)
    means = summary[y][summary[y] > 0]
    ax.set(xlabel=xlabel or axis_label(x), ylabel=ylabel or axis_label(y),
           xscale="log" if spans_decades(values) else "linear",
           yscale="log" if len(means) and means.max() / means.min() >= 30 else "linear")
    if not numeric:
        ax.set_xticks(range(len(values)), [_value_text(v) for v in values], rotation=30 if len(values) > 3 else 0,
                      ha="right" if len(values) > 3 else "center")
        ax.set_xlim(-0.5, len(values) - 0.5)
    elif ax.get_xscale() == "linear":
        ax.set_xticks(values, [_value_text(v) for v in values])
    _plain_log_ticks(ax)
    _legend(fig, ax)
    return fig


@_styled
def fig_sweep_heatmap(df: pd.DataFrame, x: str, y: str, metric: str = "fd", nfe_col: str | None = "nfe",
                      label: str | None = None, lower_is_better: bool = True) -> Figure:
    """A 2-D grid: one heatmap panel per NFE of the metric's mean over training seeds at each (x, y) pair,
    every cell written out, the best cell outlined; a log colour scale where the means span a decade."""
    _require(df, x, y, metric)
    data = df.dropna(subset=[x, y, metric])
    by = (nfe_col,) if nfe_col is not None and nfe_col in data.columns else ()
    means = seed_summary(data, x, metric, by=(*by, y))
    xs = sorted(means[x].unique(), key=lambda v: (str(type(v)), v))
    ys = sorted(means[y].unique(), key=lambda v: (str(type(v)), v))
    groups = list(_groups(means, nfe_col if by else None, metric))
    fig, axes = _new_figure(ncols=len(groups), width=min(FULL_WIDTH, 0.4 + 2.4 * len(groups)),
                            height=max(HEIGHT, 0.9 + 0.3 * len(ys)))
    positive = means[metric][means[metric] > 0]
    norm = (LogNorm(positive.min(), positive.max()) if len(positive) == len(means) and len(positive)
            and positive.max() / positive.min() >= 10 else Normalize(means[metric].min(), means[metric].max()))
    image = None
    for ax, (_, rows, _, title) in zip(axes, groups):
        grid = rows.pivot_table(index=y, columns=x, values=metric, aggfunc="first").reindex(index=ys, columns=xs)
        image = ax.imshow(grid.to_numpy(dtype=float), origin="lower", aspect="auto", cmap="viridis_r"
                          if lower_is_better else "viridis", norm=norm)
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                light = float(norm(value)) < 0.5 if lower_is_better else float(norm(value)) > 0.5
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=6,
                        color="black" if light else "white")
        best = np.unravel_index(np.nanargmin(grid.to_numpy(dtype=float)) if lower_is_better
                                else np.nanargmax(grid.to_numpy(dtype=float)), grid.shape)
        ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
        ax.set_xticks(range(len(xs)), [_value_text(v) for v in xs])
        ax.set_yticks(range(len(ys)), [_value_text(v) for v in ys])
        ax.set(xlabel=axis_label(x), ylabel=axis_label(y), title=f"{title} (best outlined)")
        ax.grid(False)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, label=label or axis_label(metric), shrink=0.9)
        if isinstance(norm, LogNorm):
            bar.locator = LogLocator(base=10.0, subs=(1.0, 2.0, 5.0))
        bar.formatter = FuncFormatter(lambda v, _: f"{v:g}")
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
        bar.update_ticks()
    return fig


@_styled
def fig_dropout(df: pd.DataFrame, x: str = "dropout", y: str = "fid", nfe_col: str = "nfe",
                xlabel: str | None = None, ylabel: str | None = None) -> Figure:
    """Fig. 7 (left): metric vs dropout rate, the 1-D sweep figure (`fig_sweep`) over the dropout rate."""
    return fig_sweep(df, x, y, nfe_col, xlabel, ylabel)


@_styled
def fig_training_curve(df: pd.DataFrame, x: str = "step", y: str = "fid", nfe_col: str = "nfe",
                       logy: bool = False, logx: bool = False, xlabel: str | None = None, ylabel: str | None = None,
                       references: Mapping[str, float | None] | None = None) -> Figure:
    """Fig. 7 (right): metric vs training iterations, one line per NFE (mean +- std over runs). `logx` for
    budgets that double (20 ... 640), so the small ones are not crushed; `references` adds horizontal lines."""
    _require(df, x, y)
    fig, (ax,) = _new_figure()
    _metric_vs(ax, df, x, y, nfe_col)
    _reference_lines(ax, references)
    ax.set(xlabel=xlabel or axis_label(x), ylabel=ylabel or axis_label(y), yscale="log" if logy else "linear",
           xscale="log" if logx else "linear")
    _plain_log_ticks(ax)
    _legend(fig, ax)
    return fig


def save_figure(fig: Figure, path_without_suffix: str | Path) -> list[Path]:
    """Write `<path>.png` and `<path>.pdf` (parents created); return both paths."""
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    out = [base.parent / f"{base.name}.png", base.parent / f"{base.name}.pdf"]
    with mpl.rc_context(STYLE):
        for path in out:
            fig.savefig(path)
    return out


def _default_row_label(name: str) -> Callable[[Any], str]:
    return lambda value: f"{name} = {value:g}" if isinstance(value, (int, float, np.number)) else f"{name} = {value}"


@_styled
def fig_point_samples(df: pd.DataFrame, row: str = "p", col: str = "steps", x: str = "x", y: str = "y",
                      reference: np.ndarray | None = None, scores: pd.DataFrame | None = None,
                      score: str | None = None, row_label: Callable[[Any], str] | None = None,
                      col_label: Callable[[Any], str] | None = step_label, panel: float = 1.15) -> Figure:
    """Fig. 6 (Appendix B): a grid of 2-D sample scatters, one row per `row` value, one column per `col` value.

    `df` is long form (one row per point: columns x, y, row, col). Row labels (left y-axes) read
    "p = 0.5", column titles "2-step" (`step_label`; pass `col_label` for other columns).
    `reference` [M, 2] (held-out data) is drawn in light grey under every panel and sets the
    limits; `scores` (columns row, col and `score`) writes that value in each panel's corner.
    """
    _require(df, row, col, x, y)
    if scores is not None:
        _require(scores, row, col, score)
    rows, cols = sorted(df[row].dropna().unique()), sorted(df[col].dropna().unique())
    nrows, ncols = max(len(rows), 1), max(len(cols), 1)
    fig, _ = _new_figure(width=min(FULL_WIDTH, panel * ncols + 0.35), height=panel * nrows + 0.2)
    fig.clear()
    grid = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    ref = None if reference is None else np.asarray(reference, dtype=float)
    bounds = ref if ref is not None and len(ref) else df[[x, y]].to_numpy(dtype=float)
    lo, hi = (np.nanpercentile(bounds, [0.5, 99.5], axis=0) if len(bounds) else (np.full(2, -1.0), np.ones(2)))
    pad = 0.15 * (hi - lo) + 1e-6
    row_label = row_label or _default_row_label(row)
    col_label = col_label or _default_row_label(col)
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            ax = grid[i][j]
            pts = df[(df[row] == rv) & (df[col] == cv)]
            if ref is not None:
                ax.scatter(ref[:, 0], ref[:, 1], s=0.5, color="#c7c7c7", edgecolors="none", rasterized=True)
            ax.scatter(pts[x], pts[y], s=0.8, color=PALETTE[0], alpha=0.7, edgecolors="none", rasterized=True)
            if scores is not None:
                hit = scores[(scores[row] == rv) & (scores[col] == cv)][score]
                if len(hit):
                    ax.text(0.03, 0.97, f"{score} {float(hit.iloc[0]):.3f}", transform=ax.transAxes, ha="left",
                            va="top", fontsize=6)
            ax.set(xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]), xticks=[],
                   yticks=[], aspect="equal")
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(True)
            if i == 0:
                ax.set_title(col_label(cv))
            if j == 0:
                ax.set_ylabel(row_label(rv))
    return fig


@_styled
def fig_image_panels(panels: Mapping[tuple[str, str], np.ndarray], panel_width: float = 1.5) -> Figure:
    """A grid of image tiles: `panels[(row, column)]` is a uint8 array [H, W] or [H, W, C] (e.g. a tile
    of samples); rows and columns are laid out in first-seen order, labelled by their names, and a
    missing (row, column) pair is left blank. Used for sample grids per training budget."""
    rows = list(dict.fromkeys(r for r, _ in panels))
    cols = list(dict.fromkeys(c for _, c in panels))
    first = next(iter(panels.values()))
    aspect = first.shape[0] / first.shape[1]
    fig = Figure(figsize=(panel_width * len(cols) + 0.9, panel_width * aspect * len(rows) + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(rows), len(cols), squeeze=False)
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            ax = grid[i][j]
            ax.set(xticks=[], yticks=[])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            tile = panels.get((row, col))
            if tile is not None:
                gray = tile.ndim == 2 or tile.shape[-1] == 1
                ax.imshow(tile.squeeze(-1) if tile.ndim == 3 and gray else tile, cmap="gray" if gray else None,
                          vmin=0, vmax=255, interpolation="nearest")
            if i == 0:
                ax.set_title(col)
            if j == 0:
                ax.set_ylabel(row, rotation=0, ha="right", va="center")
    return fig
