"""Compute accounting and sampler selection in fits, frontiers, figures and tables: `--x tuning|total|sampling`
(named in every output and on the axes) and `--sampler consistency-2-tuned` (tuned t_mid beside the default)."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import analysis
from orchestrator.cli import app
from orchestrator.cli_analysis import figure_makers
from orchestrator.cli_options import SamplerChoice, parse_sampler
from orchestrator.report import compute_totals, runs_table
from orchestrator.study_frames import X_AXES, study_frame, x_axis
from synthetic_store import build

runner = CliRunner()
STUDY = "mini-compute-scaling"
GAIN = 0.8  # tuned 2-step FD = GAIN x the default one


@pytest.fixture(scope="module")
def store_with_tuned(tmp_path_factory):
    path = tmp_path_factory.mktemp("axes") / "ect.db"
    store, spec = build(path)
    evals = store.evaluations_frame(STUDY)
    tuned = {"steps": 2, "sigma_max": 80.0, "mid_times": [1.3], "tuned_on": {"method": "golden-section on log t"}}
    for e in evals[(evals["nfe"] == 2) & (evals["sampler"] == "consistency")].itertuples():
        if store.run(e.run_id).role != "pretrain":
            store.add_evaluation(e.run_id, step=e.step, nfe=2, metric=e.metric, value=GAIN * e.value,
                                 extractor=e.extractor, num_samples=e.num_samples, sampler="consistency",
                                 sampler_params=json.dumps(tuned, sort_keys=True), seed=0)
    return f"sqlite:///{path}", store, spec


def strict_json(text: str):
    """JSON as RFC 8259 has it: `Infinity` and `NaN` are Python's extensions, which jq and others reject."""
    def reject(constant: str):
        raise AssertionError(f"{constant} in JSON output")
    return json.loads(text, parse_constant=reject)


def fit(db: str, *args: str) -> dict:
    res = runner.invoke(app, ["analyze", "fit", "--study", STUDY, "--db", db, "--json", *args])
    assert res.exit_code == 0, res.output
    return strict_json(res.stdout)


def test_fits_select_tuned_or_default_evaluations_and_name_the_sampler(store_with_tuned):
    db, _, _ = store_with_tuned
    default, tuned = fit(db, "--x", "compute"), fit(db, "--x", "compute", "--sampler", "consistency-2-tuned")
    assert (default["sampler"], tuned["sampler"]) == ("consistency-2", "consistency-2-tuned")
    assert default["fit"]["n"] == tuned["fit"]["n"] == 6  # the tuned rows are not mixed into the default fit
    assert tuned["fit"]["alpha"] == pytest.approx(default["fit"]["alpha"], abs=1e-9)
    assert tuned["fit"]["K"] / default["fit"]["K"] == pytest.approx(GAIN)
    assert default["fit"]["alpha"] == pytest.approx(-0.353, abs=0.02)
    assert fit(db, "--sampler", "consistency", "--nfe", "1")["nfe"] == 1


def test_x_choices_are_the_recorded_compute_and_every_output_names_them(store_with_tuned):
    db, store, _ = store_with_tuned
    runs = store.runs_frame(STUDY).drop_duplicates("run_id").set_index("run_id")
    pre = runs[runs["role"] == "pretrain"]["train_flops"].iloc[0]
    total = fit(db, "--x", "total")
    assert total["x"] == "total_flops" and "incl. pretraining" in total["x_label"]
    tuning = fit(db, "--x", "tuning")
    assert tuning["x"] == "train_flops" and "own run only" in tuning["x_label"]
    by_label = {r["label"]: r["total_flops"] for r in total["data"]}
    for r in tuning["data"]:
        assert by_label[r["label"]] == pytest.approx(r["train_flops"] + pre)
    res = runner.invoke(app, ["analyze", "pareto", "--study", STUDY, "--db", db, "--x", "sampling", "--csv"])
    assert res.exit_code == 0, res.output
    assert "note: cost: sampling cost per image (NFE × forward FLOPs) (sampling_flops); sampler: consistency" in res.stderr
    header, *rows = res.stdout.strip().splitlines()
    assert header == "label,nfe,sampling_flops,fd"
    fps = runs["flops_per_sample"].iloc[0]
    assert {float(r.split(",")[2]) for r in rows} <= {fps, 2 * fps}
    res = runner.invoke(app, ["analyze", "fit", "--study", STUDY, "--db", db, "--x", "total"])
    assert res.exit_code == 0 and "total training compute incl. pretraining (FLOPs)" in res.stdout, res.output


@pytest.mark.parametrize("args, message", [
    (["--sampler", "consistency-two"], "--sampler 'consistency-two': expected consistency, consistency-N"),
    (["--sampler", "heun-35-tuned"], "--sampler 'heun-35-tuned': expected"),
    (["--sampler", "consistency-2", "--nfe", "1"], "--nfe 1 and --sampler 'consistency-2' name different NFEs"),
])
def test_bad_sampler_choices_are_one_line_usage_errors(store_with_tuned, args, message):
    db, _, _ = store_with_tuned
    res = runner.invoke(app, ["analyze", "fit", "--study", STUDY, "--db", db, *args])
    assert res.exit_code == 2 and message in res.stderr and res.stderr.strip().count("\n") == 0, res.output


def test_cost_axes_take_their_text_from_the_analysis_labels():
    """--x choices are labelled by `analysis.axis_label` (a tuning run's own compute called tuning compute), and a
    scaled FLOP axis keeps the same text with its SI unit."""
    labels = {name: x_axis(pd.DataFrame(), name) for name in X_AXES}
    assert labels == {"tuning": ("train_flops", "tuning compute, own run only (FLOPs)"),
                      "total": ("total_flops", "total training compute incl. pretraining (FLOPs)"),
                      "sampling": ("sampling_flops", "sampling cost per image (NFE × forward FLOPs)"),
                      "images": ("images_seen", "training images seen"),
                      "compute": ("normalized_compute", "tuning compute (× 12.8 M images)")}
    assert all(label == analysis.axis_label(column) for name, (column, label) in labels.items()
               if name not in ("tuning", "compute"))
    values, label = analysis.scaled_axis(pd.DataFrame({"sampling_flops": [2e9, 4e9]}), "sampling_flops")
    assert label == "sampling cost per image (NFE × forward GFLOPs)" and list(values) == [2.0, 4.0]


def test_parse_sampler_forms():
    assert parse_sampler("consistency") == SamplerChoice()
    assert parse_sampler("consistency-4-tuned") == SamplerChoice("consistency", 4, True)
    assert parse_sampler("heun-35") == SamplerChoice("heun", 35, False)
    assert str(SamplerChoice("consistency", 2, True)) == "consistency-2-tuned"


def test_figures_label_their_cost_axis_and_tables_put_tuned_beside_default(store_with_tuned):
    _, store, spec = store_with_tuned
    df = study_frame(store, STUDY)
    for x, label in (("total", "total training compute incl. pretraining (FLOPs)"),
                     ("compute", "tuning compute (× 12.8 M images)")):
        makers = figure_makers(df, spec, x=x, sampler=SamplerChoice("consistency", 2, True))
        for name in ("compute_scaling", "pareto_train_compute"):
            assert makers[name]().axes[0].get_xlabel() == label
    table = runs_table(df, "fd")
    cols = [c for c in table.columns if "@" in str(c)]
    assert cols == ["fd@1", "fd@2", "fd@2-tuned", "t_mid@2-tuned", "fd@heun"]
    assert set(table.loc[table["role"] != "pretrain", "t_mid@2-tuned"]) == {1.3}
    tune = table[table["role"] != "pretrain"]
    assert (tune["fd@2-tuned"] / tune["fd@2"]).round(9).eq(GAIN).all()
    totals = compute_totals(df)
    runs = store.runs_frame(STUDY).drop_duplicates("run_id")
    assert totals["total_flops"] == pytest.approx(runs["train_flops"].sum())
    assert totals["tuning_flops"] == pytest.approx(runs[runs["role"] != "pretrain"]["train_flops"].sum())


def test_an_unbounded_interval_end_is_null_in_json(store_with_tuned):
    db, _, _ = store_with_tuned
    # Against total compute (pretraining included) the budgets span a narrow range and the saturating law's K is
    # not identified: its interval is unbounded above (inf in Python), which strict JSON writes as null.
    out = fit(db, "--form", "saturating", "--x", "total")
    assert out["fit"]["converged"] is False and "SE(K)" in out["fit"]["reason"]
    assert out["fit"]["K_ci"][1] is None and out["fit"]["K_ci"][0] >= 0
