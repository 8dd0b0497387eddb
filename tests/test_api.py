"""The notebook API (orchestrator.api) against the CLI on the same store, and the documented notebook run headless."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from matplotlib.figure import Figure
from nbclient import NotebookClient
from typer.testing import CliRunner

import synthetic_store
from orchestrator import api
from orchestrator.cli import app

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "notebooks" / "explore_a_study.ipynb"
runner = CliRunner()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(db path, study name) of the synthetic main-job store."""
    db = tmp_path_factory.mktemp("api") / "ect.db"
    _, spec = synthetic_store.build(db)
    return str(db), spec.name


def cli_json(*args: str):
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_studies_and_runs_match_the_cli(study):
    db, name = study
    assert api.studies(db).to_dict(orient="records") == cli_json("study", "list", "--db", db, "--json")
    where = "schedule.iterations>=80, seed=0"
    runs = api.runs(db, name, where=where, sort="-normalized_compute")
    listed = cli_json("runs", "list", "--db", db, "--study", name, "--where", where, "--sort", "-normalized_compute",
                      "--json")
    assert list(runs["run_id"]) == [r["run_id"] for r in listed]
    # 80, 160, 320 tuning iterations at seed 0 and the 1000-iteration pretraining, largest compute first
    assert list(runs["label"]) == ["pretrain", "budget-2e5_seed0", "budget-2e4", "budget-2e3_seed0"]
    assert (runs["ect.q"] == 2).all() and "network.dropout" in runs.columns  # config keys are columns
    metrics = api.metrics(db, runs["run_id"].iloc[1][:6])  # a prefix, as on the command line
    assert metrics["step"].max() == 300 and (metrics["loss"] > 0).all()


def test_fit_and_pareto_are_the_clis_with_the_known_law(study):
    db, name = study
    fit = api.fit(db, name, x="compute", nfe=2)
    assert json.loads(json.dumps(fit, default=float)) == cli_json(
        "analyze", "fit", "--study", name, "--x", "compute", "--nfe", "2", "--db", db, "--json")
    k, alpha = synthetic_store.LAWS[2]
    # the seed factors (1, 1.08, 0.93) at three of six budgets move the fit only slightly off the law
    assert fit["fit"]["alpha"] == pytest.approx(alpha, abs=0.01) and fit["fit"]["K"] == pytest.approx(k, rel=0.05)
    assert fit["fit"]["alpha_ci"][0] < alpha < fit["fit"]["alpha_ci"][1] and fit["notes"] == []
    front = api.pareto(db, name, cost="train_compute", y="fd")
    assert front.to_dict(orient="records") == cli_json("analyze", "pareto", "--study", name, "--cost", "train_compute",
                                                       "--y", "fd", "--db", db, "--json")


def test_figures_are_those_the_cli_writes(study, tmp_path):
    db, name = study
    kinds = api.figure_kinds(db, name)
    res = runner.invoke(app, ["figures", "regenerate", "--study", name, "--out", str(tmp_path), "--db", db])
    assert res.exit_code == 0, res.output
    written = {p.stem for p in tmp_path.glob("*.png")}
    # no checkpoints in this store: the sample grid is offered but has nothing to draw, in both
    assert set(kinds) - written == {"samples_per_budget"} and written <= set(kinds)
    fig = api.figure(db, name, "compute_scaling")
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) > 0
    with pytest.raises(api.ApiError, match="nothing to draw"):
        api.figure(db, name, "samples_per_budget")


@pytest.mark.parametrize("call, cli", [
    (lambda db, s: api.runs(db, s, where="no_such_key=1"), ["runs", "list", "--study", "{s}", "--where", "no_such_key=1"]),
    (lambda db, s: api.results(db, "no-such-study"), ["study", "status", "no-such-study"]),
    (lambda db, s: api.fit(db, s, y="nope"), ["analyze", "fit", "--study", "{s}", "--y", "nope"]),
])
def test_errors_are_the_clis_one_line_messages(study, call, cli):
    db, name = study
    with pytest.raises(api.ApiError) as e:
        call(db, name)
    res = runner.invoke(app, [a.format(s=name) for a in cli] + ["--db", db])
    assert res.exit_code in (1, 2)
    assert len(str(e.value).splitlines()) == 1 and str(e.value) in " ".join(res.stderr.split())


def test_unknown_choice_names_the_option_and_its_values(study):
    """The CLI's Enum options are checked by click (exit 2); the API checks the same choices by name."""
    db, name = study
    with pytest.raises(api.ApiError, match="--form 'cubic': expected loglinear or saturating"):
        api.fit(db, name, form="cubic")
    res = runner.invoke(app, ["analyze", "fit", "--study", name, "--form", "cubic", "--db", db])
    assert res.exit_code == 2 and "cubic" in res.stderr


def test_unknown_figure_kind_names_the_choices(study):
    db, name = study
    with pytest.raises(api.ApiError, match="'spectrum': expected one of mapping_schedule, compute_scaling"):
        api.figure(db, name, "spectrum")


def test_notebook_runs_headless_on_the_main_jobs_store(study, monkeypatch):
    """docs/notebooks/explore_a_study.ipynb, every cell, in a real kernel; any cell error fails the test."""
    db, name = study
    monkeypatch.setenv("ECT_DB", db)
    monkeypatch.setenv("ECT_STUDY", name)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend returns figures as images
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    k, alpha = synthetic_store.LAWS[2]
    assert f"NFE 2: FD = {k:.3g} * C^{alpha:.3f}" in text  # the fit of the store's known law, printed by a cell
    assert "--where 'no_such_key': no such run column or config key" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the compute-scaling figure and the training curve
