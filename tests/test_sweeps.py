"""Sweeps are first-class and every study gets one set of figures: reports group runs by configuration minus
the seed, draw the metric against a swept key (a heatmap for two), keep fits and claims to studies with a
compute axis; `study report` and `figures regenerate` draw the same figures; `figures paper --study` overlays.
Synthetic stores (real run ids and configs, known FDs), no training."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import analysis
import synthetic_store
from orchestrator.cli import app
from orchestrator.cli_analysis import figure_makers
from orchestrator.report import build_report
from orchestrator.study_frames import study_frame
from studies.spec import StudySpec, load_study

runner = CliRunner()
LR_FD = {1e-3: 20.0, 3e-3: 12.0, 1e-2: 30.0}  # 2-step FD per learning rate; 1-step is 1.5x; seed 1 is 1.1x


def lr_fd(cfg, nfe, compute):
    return LR_FD[cfg.optim.lr] * (1.5 if nfe == 1 else 1.0) * (1.1 if cfg.seed else 1.0)


def sweep_spec(name: str, grid: dict) -> StudySpec:
    d = load_study(synthetic_store.PRESET).model_dump(mode="json")
    d.update(name=name, kind="custom", variants=[], grid=grid, seeds=[0, 1])
    return StudySpec.model_validate(d)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(db, name) of an lr sweep at one compute (the issue's case), an lr x dropout grid, and the main job."""
    root = tmp_path_factory.mktemp("sweeps")
    synthetic_store.build_study(root / "lr.db", sweep_spec("lr-sweep", {"optim.lr": list(LR_FD)}), lr_fd)
    synthetic_store.build_study(root / "grid.db", sweep_spec("grid", {"optim.lr": [1e-3, 3e-3],
                                                                      "network.dropout": [0.0, 0.2]}),
                                lambda cfg, nfe, c: lr_fd(cfg, nfe, c) + 10 * cfg.network.dropout)
    _, spec = synthetic_store.build(root / "main.db")
    return {"lr": (str(root / "lr.db"), "lr-sweep"), "grid": (str(root / "grid.db"), "grid"),
            "main": (str(root / "main.db"), spec.name)}


def invoke(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res


def test_sweep_axes_split_compute_from_swept_keys():
    grid = pd.DataFrame([{"optim.lr": lr, "schedule.iterations": it, "normalized_compute": it / 10, "seed": s}
                         for lr in (1e-3, 1e-2) for it in (20, 40, 80) for s in (0, 1)])
    axes = analysis.sweep_axes(grid, ["optim.lr", "schedule.iterations", "network.dropout"])
    assert axes.compute == ("schedule.iterations",) and axes.swept == ("optim.lr",)
    at_one_compute = grid[grid["schedule.iterations"] == 20]
    axes = analysis.sweep_axes(at_one_compute, ["optim.lr", "schedule.iterations"])
    assert axes.compute == () and axes.swept == ("optim.lr",) and not axes.has_compute_axis
    labels = analysis.config_groups(at_one_compute, ["optim.lr"])
    assert sorted(set(labels)) == ["optim.lr=0.001", "optim.lr=0.01"]


def test_paper_claims_verdicts_and_thresholds():
    within = {"nfe": 2, "fraction_allowed": 0.1, "best": 9.0, "vs_heun": 2.5, "gain_vs_untuned": 25.0}
    fits = [{"alpha_ci": [-0.7, -0.2]}, {"alpha_ci": [-0.3, 0.1]}, {"error": "need at least 3 points"}]
    claims = analysis.paper_claims(within, {"holds": False, "runs": 4, "worst_ratio": 1.2}, fits,
                                   [{"exceeds": True}])
    assert [c["verdict"] for c in claims] == ["met", "not met", "not met"]  # (c): one interval includes 0
    assert claims[0]["thresholds"] == {"fraction_of_pretraining_compute": 0.1, "vs_heun_at_most": 3.0,
                                       "gain_vs_untuned_at_least": 20.0}
    assert analysis.paper_claims({}, {}, [], [])[0]["verdict"] == "undetermined"


def test_scaled_axis_names_the_unit():
    values, label = analysis.scaled_axis(pd.DataFrame({"train_flops": [4.6e10, 2.3e11, 1.5e12]}), "train_flops")
    assert label == "training compute, own run only (GFLOPs)" and list(values) == pytest.approx([46.0, 230.0, 1500.0])
    assert analysis.scaled_axis(pd.DataFrame({"x": [1.0]}), "x")[1] == "x"


def test_lr_sweep_report_groups_by_config_not_compute(stores):
    db, name = stores["lr"]
    res = invoke("study", "report", name, "--db", db, "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["axes"] == {"compute": [], "swept": ["optim.lr"]}
    assert rep["fits"] == [] and rep["headline"] == {} and rep["claims"] == [] and rep["seed_spread"] == []
    assert rep["metric"] == {"name": "fd", "column": "fd_digits", "extractor": synthetic_store.EXTRACTOR,
                             "num_samples": synthetic_store.SAMPLES, "lower_is_better": True}
    two = {r["optim.lr"]: r for r in rep["sweep"] if r["nfe"] == 2}
    for lr, fd in LR_FD.items():  # the mean of this lr's two seeds, never of other lrs
        assert two[lr]["n"] == 2 and two[lr]["fd"] == pytest.approx(fd * 1.05)
        assert (two[lr]["fd_min"], two[lr]["fd_max"]) == pytest.approx((fd, fd * 1.1))
    assert [lr for lr, r in two.items() if r["best"]] == [3e-3]
    text = invoke("study", "report", name, "--db", db).stdout
    assert "no compute axis (the study varies optim.lr)" in text and "seed(s)" not in text


def test_lr_sweep_figure(stores):
    db, name = stores["lr"]
    store = synthetic_store.Store(synthetic_store.database_url(db))
    spec = load_study_from_store(store, name)
    report = build_report(store, spec)
    makers = figure_makers(study_frame(store, name), spec, report.references())
    assert set(makers) == {"mapping_schedule", "sweep_optim_lr"}
    ax = makers["sweep_optim_lr"]().axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate"
    assert ax.get_ylabel() == "FD (fd_digits, 2000 samples)"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "best 2-step: 0.003 (12.6)" in texts
    assert any(t.startswith("pretrained, Heun: 3.42") for t in texts) and any(t.startswith("real-data floor") for t in texts)
    means = [line for line in ax.lines if line.get_marker() == "o" and len(line.get_xdata()) == 3]
    assert any(list(m.get_ydata()) == pytest.approx([20 * 1.05, 12 * 1.05, 30 * 1.05]) for m in means)


def load_study_from_store(store, name):
    from studies.spec import stored_spec

    return stored_spec(store.study(name).spec_yaml, name)


def test_two_key_grid_gets_a_heatmap(stores, tmp_path):
    db, name = stores["grid"]
    res = invoke("figures", "regenerate", "--study", name, "--db", db, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sweep_optim_lr_x_network_dropout.png").stat().st_size > 1000
    rep = json.loads(invoke("study", "report", name, "--db", db, "--json").stdout)
    assert rep["axes"]["swept"] == ["optim.lr", "network.dropout"] and len(rep["sweep"]) == 2 * 4
    best = [r for r in rep["sweep"] if r["best"]]
    assert {(r["nfe"], r["optim.lr"], r["network.dropout"]) for r in best} == {(1, 3e-3, 0.0), (2, 3e-3, 0.0)}


def test_report_and_regenerate_draw_the_same_figures(stores, tmp_path):
    db, name = stores["main"]
    rep = invoke("study", "report", name, "--db", db, "--out", tmp_path / "report")
    regen = invoke("figures", "regenerate", "--study", name, "--db", db, "--out", tmp_path / "figs")
    assert rep.exit_code == 0 and regen.exit_code == 0, rep.output + regen.output
    pngs = lambda d: sorted(p.name for p in d.glob("*.png"))
    assert pngs(tmp_path / "report") == pngs(tmp_path / "figs") == [
        "compute_scaling.png", "mapping_schedule.png", "metric_vs_iterations.png", "pareto_train_compute.png"]
    payload = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [c["claim"] for c in payload["claims"]] == ["a", "b", "c"]
    assert all(c["verdict"] in ("met", "not met") and c["thresholds"] for c in payload["claims"])
    assert payload["claims"][1]["verdict"] == "met"  # every synthetic 2-step FD is below its 1-step FD


def test_compute_figures_baselines_units_and_log_axes(stores):
    db, name = stores["main"]
    store = synthetic_store.Store(synthetic_store.database_url(db))
    spec = load_study_from_store(store, name)
    makers = figure_makers(study_frame(store, name), spec, build_report(store, spec).references())
    for fig_name in ("compute_scaling", "pareto_train_compute", "metric_vs_iterations"):
        texts = [t.get_text() for t in makers[fig_name]().axes[0].get_legend().get_texts()]
        assert any(t.startswith("pretrained, Heun: 3.42") for t in texts), (fig_name, texts)
        assert any(t.startswith("real-data floor") for t in texts), (fig_name, texts)
    pareto = makers["pareto_train_compute"]().axes[0]
    assert pareto.get_xlabel() == "tuning compute (× 12.8 M images)"  # the --x default, as on the scaling figure
    labels = [t.get_text() for t in pareto.get_legend().get_texts()]
    assert "1-step Pareto frontier" in labels and "2-step Pareto frontier" in labels
    ticks = [t.get_text() for t in pareto.get_xticklabels() if t.get_text()]
    assert ticks and not any("e+" in t for t in ticks)
    assert makers["metric_vs_iterations"]().axes[0].get_xscale() == "log"


def test_frontier_per_nfe():
    df = pd.DataFrame({"c": [1.0, 2.0, 1.0, 2.0], "fd": [10.0, 5.0, 4.0, 4.5], "nfe": [1, 1, 2, 2]})
    ax = analysis.fig_pareto(df, "c", "fd", hue="nfe").axes[0]
    fronts = {line.get_label(): list(line.get_ydata()) for line in ax.lines if "frontier" in line.get_label()}
    # pooled, the 2-step run at cost 1 would dominate both 1-step runs
    assert fronts == {"1-step Pareto frontier": [10.0, 5.0], "2-step Pareto frontier": [4.0]}


def test_figures_paper_overlays_a_compute_study(stores, tmp_path):
    db, name = stores["main"]
    res = invoke("figures", "paper", "--db", db, "--study", name, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fig4_left_compute_scaling_overlay.png").stat().st_size > 1000


def test_figures_paper_refuses_a_study_without_paper_axes(stores, tmp_path):
    db, name = stores["lr"]
    res = invoke("figures", "paper", "--db", db, "--study", name, "--out", tmp_path / "paper")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "vary optim.lr" in res.output and "no paper figure" in res.output
    assert not (tmp_path / "paper").exists()
    res = invoke("figures", "paper", "--db", db, "--out", tmp_path / "paper")
    assert res.exit_code == 2 and "--study" in res.output and not (tmp_path / "paper").exists()


def test_sweep_summary_marks_best_per_nfe():
    rows = pd.DataFrame({"k": ["a", "a", "b", "b"], "nfe": [1, 2, 1, 2], "y": [3.0, 1.0, 2.0, 4.0]})
    out = analysis.sweep_summary(rows, "k", "y")
    assert out[out["best"]][["nfe", "k"]].values.tolist() == [[1, "b"], [2, "a"]]
    assert analysis.spans_decades([1e-3, 1e-2]) and not analysis.spans_decades([0.0, 0.3])
    assert not analysis.spans_decades(["uniform", "edm"]) and np.isfinite(out["y"]).all()
