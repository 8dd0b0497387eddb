"""Analysis of ECT scaling studies: power-law fits, Pareto frontiers, the paper's figures and tables.

DataFrames in, numbers and matplotlib figures out. Imports nothing else of the project (the
one-way rule): the orchestrator turns store queries into DataFrames and calls these functions.
"""

from .labels import FLOP_COLUMNS, axis_label, scaled_axis
from .comparison import fewer_steps_worse, paper_claims, tuning_vs_pretraining
from .frames import FIT_POINTS, fit_points, latest_evaluations, nfe_long, seed_summary, trend_vs_spread
from .pareto import add_inference_cost, pareto_frontier
from .powerlaw import PowerLawFit, fit_power_law, pearson_loglog
from .prediction import compute_for_target, predict
from .reference import list_references, load_reference
from .saturating import SaturatingFit, fit_saturating
from .sweeps import SweepAxes, config_groups, spans_decades, sweep_axes, sweep_summary
from .schedule import mapping_ratio, mapping_schedule
from .tables import ablation_table, to_csv, to_latex, to_markdown

__all__ = [
    "FIT_POINTS", "PowerLawFit", "SaturatingFit", "ablation_table", "add_inference_cost", "axis_label",
    "compute_for_target", "fewer_steps_worse", "fig_compute_scaling", "fig_dropout", "fig_image_panels",
    "fig_mapping_schedule", "fig_model_size", "fig_pareto", "fig_sweep", "fig_sweep_heatmap", "fig_training_curve", "fit_points",
    "fit_power_law", "fit_saturating", "latest_evaluations", "list_references", "load_reference",
    "mapping_ratio", "mapping_schedule", "nfe_long", "paper_claims", "pareto_frontier", "pearson_loglog", "predict",
    "FLOP_COLUMNS", "SweepAxes", "config_groups", "save_figure", "scaled_axis", "seed_summary", "spans_decades", "sweep_axes",
    "sweep_summary", "to_csv", "to_latex", "to_markdown", "trend_vs_spread",
    "tuning_vs_pretraining",
]

FIGURES = ("fig_compute_scaling", "fig_dropout", "fig_image_panels", "fig_mapping_schedule", "fig_model_size",
           "fig_pareto", "fig_sweep", "fig_sweep_heatmap", "fig_training_curve", "save_figure")


def __getattr__(name: str):
    """The figure functions, imported on first use: they load matplotlib, which a table or a fit does not need."""
    if name in FIGURES:
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
