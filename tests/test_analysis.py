"""Known answers for the analysis module: fits, intervals, Pareto, figures, reference tables, tables."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import analysis
from analysis import (
    ablation_table,
    add_inference_cost,
    compute_for_target,
    fig_compute_scaling,
    fig_dropout,
    fig_mapping_schedule,
    fig_model_size,
    fig_pareto,
    fig_training_curve,
    fit_power_law,
    fit_saturating,
    latest_evaluations,
    list_references,
    load_reference,
    mapping_ratio,
    mapping_schedule,
    nfe_long,
    pareto_frontier,
    pearson_loglog,
    predict,
    save_figure,
    to_csv,
    to_latex,
    to_markdown,
)

BUDGETS = 2.0 ** np.arange(6)


def noisy_power_law(seed: int, n: int = 12, K: float = 100.0, alpha: float = -0.3, sigma: float = 0.05):
    rng = np.random.default_rng(seed)
    c = np.geomspace(1.0, 32.0, n)
    return c, K * c**alpha * np.exp(rng.normal(0.0, sigma, n))


def table7_imagenet_long() -> pd.DataFrame:
    t7 = load_reference("table7")
    return nfe_long(t7[t7["dataset"] == "ImageNet 64x64"], {"fid_1step": 1, "fid_2step": 2}, "fid")


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


# ----------------------------------------------------------------------------- layering


def test_analysis_imports_nothing_of_the_project():
    forbidden = {"trainer", "studies", "orchestrator", "ray", "sqlalchemy", "torch"}
    for path in Path(analysis.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not {n.split(".")[0] for n in names} & forbidden, (path, names)


# ----------------------------------------------------------------------------- power law


@pytest.mark.parametrize("K,alpha", [(263.0, -0.060), (164.0, -0.028), (3.0, 0.7)])
def test_power_law_recovers_exact_parameters(K, alpha):
    fit = fit_power_law(BUDGETS, K * BUDGETS**alpha)
    assert fit.K == pytest.approx(K, rel=1e-10)
    assert fit.alpha == pytest.approx(alpha, abs=1e-12)
    assert fit.se_alpha == pytest.approx(0.0, abs=1e-9)
    assert abs(fit.r) == pytest.approx(1.0)
    assert fit.n == 6 and fit.converged
    assert fit.alpha_ci[0] == pytest.approx(alpha) and fit.alpha_ci[1] == pytest.approx(alpha)


def test_power_law_standard_errors_match_ols():
    c, y = noisy_power_law(3)
    fit = fit_power_law(c, y)
    ols = stats.linregress(np.log(c), np.log(y))
    assert fit.alpha == pytest.approx(ols.slope)
    assert np.log(fit.K) == pytest.approx(ols.intercept)
    assert fit.se_alpha == pytest.approx(ols.stderr)
    assert fit.se_log_K == pytest.approx(ols.intercept_stderr)
    assert fit.se_K == pytest.approx(fit.K * fit.se_log_K)
    half = stats.t.ppf(0.975, c.size - 2) * ols.stderr
    assert fit.alpha_ci == pytest.approx((ols.slope - half, ols.slope + half))
    k_half = stats.t.ppf(0.975, c.size - 2) * ols.intercept_stderr
    assert fit.K_ci == pytest.approx((np.exp(ols.intercept - k_half), np.exp(ols.intercept + k_half)))
    assert fit.interval.startswith("t interval")
    d = fit.to_dict()
    assert d["se_K"] == fit.se_K and d["alpha"] == fit.alpha and d["converged"] is True


def test_pearson_r_and_p_equal_scipy():
    c, y = noisy_power_law(7, n=6, sigma=0.02)
    expected = stats.pearsonr(np.log(c), np.log(y))
    fit = fit_power_law(c, y)
    r, p = pearson_loglog(c, y)
    assert r == pytest.approx(expected.statistic, rel=1e-12) and fit.r == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9) and fit.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_t_intervals_cover_true_alpha_and_K():
    """100 seeded sets of 6 points: a 95 % interval should miss about 5 times (binomial: 1-11 misses)."""
    hits = np.zeros(2)
    for seed in range(100):
        c, y = noisy_power_law(seed, n=6)
        fit = fit_power_law(c, y)
        hits += [fit.alpha_ci[0] <= -0.3 <= fit.alpha_ci[1], fit.K_ci[0] <= 100.0 <= fit.K_ci[1]]
    assert np.all((89 <= hits) & (hits <= 99)), hits


def test_too_few_points_and_bad_data_raise_clear_errors():
    with pytest.raises(ValueError, match="need at least 3 points to fit a power law, got 2"):
        fit_power_law([1.0, 2.0], [3.0, 2.0])
    with pytest.raises(ValueError, match=r"fd must be positive .*1 value\(s\) <= 0"):
        fit_power_law([1, 2, 4], [3.0, 0.0, 2.0], x_name="compute", y_name="fd")
    with pytest.raises(ValueError, match="compute must be positive"):
        fit_power_law([-1, 2, 4], [3.0, 1.0, 2.0], x_name="compute")
    with pytest.raises(ValueError, match="x is constant"):
        fit_power_law([2, 2, 2], [3.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="y is constant"):
        fit_power_law([1, 2, 4], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        fit_power_law([1, 2, 4], [2.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="differ in length"):
        fit_power_law([1, 2, 4], [2.0, 1.0])
    with pytest.raises(ValueError, match="need at least 3 points to fit a saturating power law, got 2"):
        fit_saturating([1.0, 2.0], [3.0, 2.0])


# ----------------------------------------------------------------------------- saturating


def test_saturating_fit_recovers_floor():
    c = 2.0 ** np.arange(10)
    rng = np.random.default_rng(0)
    y = (50.0 + 300.0 * c**-0.7) * np.exp(rng.normal(0.0, 0.005, c.size))
    fit = fit_saturating(c, y)
    assert fit.converged and fit.reason == "" and fit.floor_identified
    assert fit.E == pytest.approx(50.0, rel=0.03)
    assert fit.K == pytest.approx(300.0, rel=0.03)
    assert fit.alpha == pytest.approx(-0.7, abs=0.03)
    assert fit.E_ci[0] <= fit.E <= fit.E_ci[1] and fit.alpha_ci[0] <= fit.alpha <= fit.alpha_ci[1]
    assert fit.se_E > 0 and fit.floor_p_value < 1e-6 and fit.aic < fit.aic_power_law
    assert fit.floor_verdict.startswith(f"floor E = {fit.E:.3g} [") and fit.to_dict()["floor"] == fit.floor_verdict


def test_saturating_fit_exact_data_and_huge_budgets():
    c = np.geomspace(1e15, 1e19, 8)
    y = 20.0 + 5e4 * c**-0.25
    fit = fit_saturating(c, y)
    assert fit.converged and fit.floor_identified
    assert fit.E == pytest.approx(20.0, rel=1e-4)
    assert fit.K == pytest.approx(5e4, rel=1e-3)
    assert fit.mean(c) == pytest.approx(y, rel=1e-6)


def test_saturating_fit_refuses_three_noise_points():
    fit = fit_saturating([1.0, 2.0, 4.0], [5.0, 3.0, 4.0])
    assert not fit.converged and not fit.floor_identified
    assert "no degrees of freedom" in fit.reason
    assert fit.E_ci is None and fit.K_ci is None and fit.alpha_ci is None and fit.se_E is None
    _, lo, hi = predict(fit, 8.0)
    assert np.isnan(lo) and np.isnan(hi)


def test_saturating_fit_issue_reproducer_claims_no_floor():
    """Issue 15: 164 C^-0.3 with 3 % noise once gave E = 4.87 with an interval excluding 0."""
    c = 2.0 ** np.arange(8)
    y = 164 * c**-0.3 * np.exp(np.random.default_rng(0).normal(0, 0.03, 8))
    fit = fit_saturating(c, y)
    assert not fit.floor_identified
    assert fit.floor_p_value > 0.05 and fit.floor_verdict == f"no floor identified (p = {fit.floor_p_value:.2g})"
    assert fit.E == pytest.approx(4.87, abs=0.01)  # the same point estimate as before ...
    assert fit.E_ci[0] == 0.0  # ... but its interval now reaches the bound E = 0


def test_saturating_fit_no_floor_on_floor_free_data():
    """100 seeds of a floor-free power law (3 % noise): a floor is claimed in at most 5."""
    c = 2.0 ** np.arange(8)
    claimed = [seed for seed in range(100)
               if fit_saturating(c, 164 * c**-0.3 * np.exp(np.random.default_rng(seed).normal(0, 0.03, 8))
                                 ).floor_identified]
    assert len(claimed) <= 5, claimed


def test_saturating_fit_E_interval_covers_the_floor():
    """E = 50, K = 400, alpha = -0.7 at 12 budgets 2^0 .. 2^11, 3 % noise: E's interval covers 50 in >= 93 of 100."""
    c = 2.0 ** np.arange(12)
    truth = 50.0 + 400.0 * c**-0.7
    fits = [fit_saturating(c, truth * np.exp(np.random.default_rng(seed).normal(0, 0.03, 12))) for seed in range(100)]
    covered = sum(f.E_ci is not None and f.E_ci[0] <= 50.0 <= f.E_ci[1] for f in fits)
    assert covered >= 93, covered
    assert sum(f.floor_identified for f in fits) >= 95


def test_saturating_fit_weak_exponent_is_not_converged():
    """The paper-like 2-step law (alpha = -0.028 over 2^0 .. 2^5) cannot separate a floor from K."""
    c = 2.0 ** np.arange(6)
    fit = fit_saturating(c, 164 * c**-0.028 * np.exp(np.random.default_rng(3).normal(0, 0.01, 6)))
    assert not fit.floor_identified
    assert not fit.converged and "exceeds" in fit.reason


def test_saturating_fit_without_floor_reports_no_floor():
    c = 2.0 ** np.arange(8)
    fit = fit_saturating(c, 100.0 * c**-0.3)
    assert not fit.converged and not fit.floor_identified
    assert fit.E == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- prediction


@pytest.mark.parametrize("make_fit", [
    lambda c, y: fit_power_law(c, y),
    lambda c, y: fit_saturating(c, 30.0 + y),
])
def test_predict_and_compute_for_target_invert_each_other(make_fit):
    c, y = noisy_power_law(11)
    fit = make_fit(c, y)
    for budget in (3.0, 64.0):
        value, lo, hi = predict(fit, budget)
        assert lo < value < hi
        c_back, c_lo, c_hi = compute_for_target(fit, value)
        assert c_back == pytest.approx(budget, rel=1e-9)
        assert c_lo < budget < c_hi
        # finite edges are where the target leaves the prediction band (an open side is inf)
        for edge in (e for e in (c_lo, c_hi) if np.isfinite(e)):
            _, band_lo, band_hi = predict(fit, edge)
            assert min(abs(band_lo / value - 1), abs(band_hi / value - 1)) < 1e-6
    values = predict(fit, np.array([1.0, 2.0, 4.0]))[0]
    assert values.shape == (3,) and np.all(np.diff(values) < 0)


def test_predict_interval_is_ols_prediction_interval():
    c, y = noisy_power_law(5, n=8)
    fit = fit_power_law(c, y)
    lx, ly = np.log(c), np.log(y)
    x0 = np.log(50.0)
    s = np.sqrt(((ly - np.polyval(np.polyfit(lx, ly, 1), lx)) ** 2).sum() / 6)
    half = stats.t.ppf(0.975, 6) * s * np.sqrt(1 + 1 / 8 + (x0 - lx.mean()) ** 2 / ((lx - lx.mean()) ** 2).sum())
    value, lo, hi = predict(fit, 50.0)
    assert np.log(lo) == pytest.approx(np.log(value) - half) and np.log(hi) == pytest.approx(np.log(value) + half)


def test_exact_fit_gives_point_intervals_and_unreachable_targets_raise():
    fit = fit_power_law(BUDGETS, 263 * BUDGETS**-0.06)
    assert compute_for_target(fit, 200.0) == pytest.approx((fit.inverse(200.0),) * 3)
    sat = fit_saturating(2.0 ** np.arange(10), 50 + 300 * (2.0 ** np.arange(10)) ** -0.7)
    with pytest.raises(ValueError, match="unreachable"):
        compute_for_target(sat, 40.0)


# ----------------------------------------------------------------------------- Pareto


def test_pareto_frontier_hand_made_points():
    df = pd.DataFrame({
        "name": ["a", "b", "c", "d", "e", "f", "g", "h"],
        "cost": [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 5.0, np.nan],
        "fid": [10.0, 8.0, 9.0, 8.0, 6.0, 6.0, 6.0, 1.0],
    })
    front = pareto_frontier(df, "cost", "fid")
    # c: same cost as b, worse; d: same metric as b at higher cost; f, g: same metric as e at higher cost
    assert list(front["name"]) == ["a", "b", "e"]
    tied = pd.concat([df, pd.DataFrame({"name": ["e2"], "cost": [3.0], "fid": [6.0]})], ignore_index=True)
    assert list(pareto_frontier(tied, "cost", "fid")["name"]) == ["a", "b", "e", "e2"]
    best_high = pareto_frontier(df.assign(acc=-df["fid"]), "cost", "acc", minimize_metric=False)
    assert list(best_high["name"]) == ["a", "b", "e"]
    assert list(front.index) == [0, 1, 4]


def test_add_inference_cost():
    out = add_inference_cost(pd.DataFrame({"nfe": [1, 2], "model_gflops": [101.9, 405.9]}))
    assert list(out["inference_cost"]) == pytest.approx([101.9, 811.8])
    with pytest.raises(KeyError, match="model_gflops"):
        add_inference_cost(pd.DataFrame({"nfe": [1]}))


# ----------------------------------------------------------------------------- mapping schedule


def test_mapping_ratio_closed_form():
    t = np.array([0.01, 0.5, 1.0, 3.0, 80.0])
    for q, a in [(2.0, 1), (2.0, 8), (4.0, 3), (256.0, 1)]:
        expected = np.maximum(0.0, 1 - (1 + 8 / (1 + np.exp(t))) / q**a)
        assert mapping_ratio(t, a, q) == pytest.approx(expected)
    assert mapping_ratio(1.0, 1, 2.0)[()] == 0.0  # 1 - (1 + 8 sigmoid(-1)) / 2 < 0 is clamped
    sched = mapping_schedule(4, 4, t=t)
    assert list(sched.columns) == ["t", "stage", "r_over_t"] and sorted(sched["stage"].unique()) == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- figures


def assert_written(fig, tmp_path: Path, name: str) -> None:
    paths = save_figure(fig, tmp_path / "figs" / name)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"


def compute_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    fd = np.r_[263 * BUDGETS**-0.06, 164 * BUDGETS**-0.028] * np.exp(rng.normal(0, 0.005, 12))
    return pd.DataFrame({"normalized_compute": np.tile(BUDGETS, 2), "nfe": np.repeat([1, 2], 6), "fd_dinov2": fd})


def test_fig_compute_scaling(tmp_path):
    df = compute_frame()
    fig = fig_compute_scaling(df, y="fd_dinov2", paper_fits=load_reference("fig4_fits"))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training compute (× 12.8 M images)" and ax.get_ylabel() == "FD (DINOv2)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    texts = legend_texts(ax)
    for nfe in (1, 2):
        fit = fit_power_law(df.loc[df.nfe == nfe, "normalized_compute"], df.loc[df.nfe == nfe, "fd_dinov2"])
        assert any(f"α={fit.alpha:.3f}" in t and f"r={fit.r:.3f}" in t and "6 means" in t for t in texts)
    assert "paper 1-step: K=263, α=-0.060" in texts and "paper 2-step: K=164, α=-0.028" in texts
    points = next(line for line in ax.lines if line.get_label() == "1-step")
    assert list(points.get_xdata()) == list(BUDGETS)
    assert_written(fig, tmp_path, "compute_scaling")


def test_fig_compute_scaling_marks_pretraining_and_floor_verdicts():
    df = compute_frame()
    ax = fig_compute_scaling(df, y="fd_dinov2", saturating=True, pretrain_compute=50.0,
                             ylabel="FD (fd_digits, 2000 samples)").axes[0]
    mark = next(line for line in ax.lines if line.get_label() == "10 % of pretraining compute")
    assert list(mark.get_xdata()) == [5.0, 5.0]
    assert ax.get_ylabel() == "FD (fd_digits, 2000 samples)"
    texts = legend_texts(ax)
    # floor-free data: the saturating curve is not drawn, the legend says why
    for nfe in (1, 2):
        rows = df[df.nfe == nfe]
        sat = fit_saturating(rows.normalized_compute, rows.fd_dinov2)
        assert not sat.floor_identified
        assert f"{nfe}-step: no floor identified (p = {sat.floor_p_value:.2g})" in texts
    assert not any("+ K·C^" in t for t in texts)
    c = 2.0 ** np.arange(10)
    floored = pd.DataFrame({"normalized_compute": c, "nfe": 2, "fd": 50 + 300 * c**-0.7})
    assert any("+ K·C^" in t for t in legend_texts(fig_compute_scaling(floored, saturating=True).axes[0]))


def test_fit_points_means_or_seeds():
    df = seeded_frame()
    means = analysis.fit_points(df, "normalized_compute", "fd")
    assert means["fd"].tolist() == [52.0, 30.0, 20.0, 12.0] and means["n"].sum() == len(df)
    seeds = analysis.fit_points(df, "normalized_compute", "fd", "seeds")
    assert len(seeds) == len(df) and seeds["n"].sum() == len(df)
    with pytest.raises(ValueError, match="points 'runs': expected one of means, seeds"):
        analysis.fit_points(df, "normalized_compute", "fd", "runs")
    ax = fig_compute_scaling(df, y="fd", points="seeds").axes[0]
    fit = fit_power_law(df["normalized_compute"], df["fd"])
    assert any(f"α={fit.alpha:.3f}" in t and "8 seeds" in t for t in legend_texts(ax))


def test_fig_compute_scaling_with_given_fits():
    df = compute_frame()
    fits = {1: fit_power_law([1, 2, 4], [10, 8, 6.5]), 2: fit_power_law([1, 2, 4], [5, 4.5, 4.1])}
    texts = legend_texts(fig_compute_scaling(df, y="fd_dinov2", fits=fits).axes[0])
    assert any(f"α={fits[1].alpha:.3f}" in t for t in texts)


def test_table7_model_size_slopes_are_negative(tmp_path):
    long = table7_imagenet_long()
    assert len(long) == 8
    for nfe in (1, 2):
        rows = long[long.nfe == nfe]
        assert fit_power_law(rows["gflops"], rows["fid"]).alpha < 0
        assert fit_power_law(rows["mparams"], rows["fid"]).alpha < 0
    fig = fig_model_size(long, label_col="model", paper=long)
    assert [ax.get_xlabel() for ax in fig.axes] == ["model GFLOPs per forward pass", "parameters (M)"]
    assert all(ax.get_ylabel() == "FID" for ax in fig.axes)
    paper = next(c for c in fig.axes[0].collections if c.get_label() == "paper 2-step")
    assert sorted(paper.get_offsets()[:, 1]) == sorted([3.18, 2.35, 2.14, 1.96])
    two_step = next(c for c in fig.axes[0].collections if c.get_label() == "2-step")
    assert sorted(two_step.get_offsets()[:, 1]) == sorted([3.18, 2.35, 2.14, 1.96])
    sizes = two_step.get_sizes()
    assert np.all(np.diff(sizes) > 0)  # S < M < L < XL
    assert any("α=-0.3" in t for t in legend_texts(fig.axes[0]))
    assert_written(fig, tmp_path, "model_size")


def test_fig_pareto(tmp_path):
    df = add_inference_cost(table7_imagenet_long().rename(columns={"gflops": "model_gflops"}))
    fig = fig_pareto(df, "inference_cost", "fid", hue="nfe", frontier_per_hue=False)  # the cost counts the NFE
    ax = fig.axes[0]
    assert ax.get_xlabel() == "inference cost (NFE × GFLOPs)" and ax.get_ylabel() == "FID"
    front = next(line for line in ax.lines if line.get_label() == "Pareto frontier")
    expected = pareto_frontier(df, "inference_cost", "fid")
    assert list(front.get_ydata()) == list(expected["fid"])
    # the sweet spot of Sec. 4.2: 2-step ECM-M beats 1-step ECM-XL at lower inference cost
    assert {"ECM-M"} <= set(expected.loc[expected.nfe == 2, "model"])
    assert_written(fig, tmp_path, "pareto")


def test_fig_mapping_schedule_matches_closed_form(tmp_path):
    fig = fig_mapping_schedule(2, 8)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "noise level t" and ax.get_ylabel() == "r / t"
    assert len(ax.lines) == 8
    for a, line in enumerate(ax.lines, start=1):
        t, ratio = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        for i in (0, 150, 260, 399):
            expected = max(0.0, 1 - (1 + 8 / (1 + np.exp(t[i]))) / 2.0**a)
            assert ratio[i] == pytest.approx(expected, abs=1e-12)
    assert legend_texts(ax)[0] == "a = 1"
    assert_written(fig, tmp_path, "mapping")


def test_fig_dropout_and_training_curve(tmp_path):
    dropout = pd.DataFrame({"dropout": [0.1, 0.2, 0.3, 0.1, 0.2, 0.3] * 2, "nfe": [1] * 6 + [2] * 6,
                            "fid": [5.0, 4.5, 4.8, 5.2, 4.4, 4.9, 3.0, 2.8, 2.9, 3.1, 2.7, 3.0]})
    fig = fig_dropout(dropout)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "dropout rate" and ax.get_ylabel() == "FID"
    means = [list(line.get_ydata()) for line in ax.lines if len(line.get_ydata()) == 3]
    assert [5.1, 4.45, 4.85] in [pytest.approx(m) for m in means]  # 1-step: the mean over the two runs per rate
    assert sorted(legend_texts(ax)) == ["1-step (mean, min-max over seeds)", "2-step (mean, min-max over seeds)",
                                        "best 1-step: 0.2 (4.45)", "best 2-step: 0.2 (2.75)"]
    assert_written(fig, tmp_path, "dropout")

    curve = pd.DataFrame({"step": [1000, 2000, 3000] * 2, "nfe": [1, 1, 1, 2, 2, 2],
                          "fid": [9.0, 6.0, 5.0, 4.0, 3.0, 2.5]})
    fig = fig_training_curve(curve, logy=True)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training iterations" and ax.get_ylabel() == "FID" and ax.get_yscale() == "log"
    two = next(line for line in ax.lines if line.get_label() == "2-step")
    assert list(two.get_xdata()) == [1000, 2000, 3000] and list(two.get_ydata()) == [4.0, 3.0, 2.5]
    assert_written(fig, tmp_path, "training_curve")


def test_figures_reject_missing_columns():
    with pytest.raises(KeyError, match="fd"):
        fig_compute_scaling(pd.DataFrame({"normalized_compute": [1.0]}))


# ----------------------------------------------------------------------------- reference data


def test_reference_tables_load_with_sources():
    names = list_references()
    for name in ["table1_ect", "table2", "table3", "table4", "table5", "table6", "table7", "fig4_fits"]:
        assert name in names
    for name in names:
        df = load_reference(name)
        assert len(df) and "source" in df.columns and df["source"].notna().all()
    fits = load_reference("fig4_fits").set_index("nfe")
    assert fits.loc[1, "K"] == 263 and fits.loc[1, "alpha"] == pytest.approx(-0.060)
    assert fits.loc[2, "K"] == 164 and fits.loc[2, "alpha"] == pytest.approx(-0.028)
    assert fits.loc[1, "pearson_r"] == pytest.approx(-0.9940) and fits.loc[2, "pearson_r"] == pytest.approx(-0.9996)
    with pytest.raises(ValueError, match="unknown reference 'table99'"):
        load_reference("table99")


def test_reference_numbers_spot_checks():
    t1 = load_reference("table1_ect")
    cifar = t1[(t1.dataset == "CIFAR-10") & (t1.nfe == 2)].set_index("iterations")["fid"]
    assert cifar.to_dict() == {100000: 2.20, 200000: 2.15, 400000: 2.11}
    assert set(load_reference("table3")["weighting"]) == {
        "uniform", "inv_t", "inv_delta_t", "inv_t_plus_inv_sigma_data", "snr", "snr_plus_one", "edm", "soft_min_snr"}
    t7 = load_reference("table7").set_index("label")
    assert t7.loc["ECM-XL", "gflops"] == 405.9 and t7.loc["ECM-S", "mparams"] == 280.2
    assert t7.loc["Cls-Cond CIFAR-10", "fid_2step"] == 2.02
    # Table 2's last row and Table 3's EDM row are the same ECM-S run
    t2 = load_reference("table2").iloc[-1]
    t3 = load_reference("table3").set_index("weighting").loc["edm"]
    assert (t2.fid_1step, t2.fid_2step) == (t3.fid_1step, t3.fid_2step) == (5.51, 3.18)
    budgets = load_reference("fig4_compute_budgets")
    assert list(budgets["normalized_compute"]) == [1, 2, 4, 8, 16, 32]
    assert list(budgets["budget_mimg"]) == pytest.approx([12.8 * 2**e for e in range(6)])


# ----------------------------------------------------------------------------- tables


def test_ablation_table_beside_paper_and_formats(tmp_path):
    ours = pd.DataFrame({"weighting": ["edm", "uniform", "edm", "ours_only"],
                         "fid_1step": [5.0, 6.0, 6.0, 7.0], "fid_2step": [3.0, 3.5, 3.2, 4.0]})
    ref = load_reference("table3")
    table = ablation_table(ours, "weighting", ["fid_1step", "fid_2step"], ref)
    assert list(table.columns) == ["weighting", "fid_1step (ours)", "fid_1step (paper)",
                                   "fid_2step (ours)", "fid_2step (paper)"]
    row = table.set_index("weighting").loc["edm"]
    assert row["fid_1step (ours)"] == pytest.approx(5.5) and row["fid_1step (paper)"] == 5.51
    assert np.isnan(table.set_index("weighting").loc["ours_only", "fid_2step (paper)"])
    md = to_markdown(table)
    assert "| edm | 5.50 | 5.51 | 3.10 | 3.18 |" in md and "| ours_only | 7.00 | – | 4.00 | – |" in md
    assert md.splitlines()[1] == "|:---|---:|---:|---:|---:|"
    tex = to_latex(table, caption="Table 3 vs ours", label="tab:w")
    assert r"edm & 5.50 & 5.51 & 3.10 & 3.18 \\" in tex and r"ours\_only & 7.00 & -- & 4.00 & -- \\" in tex
    assert r"\begin{tabular}{lrrrr}" in tex and r"\label{tab:w}" in tex and r"fid\_1step (ours)" in tex
    text = to_csv(table, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == text and "edm,5.5,5.51,3.1,3.18" in text
    full = ablation_table(ours, "weighting", ["fid_1step"], ref, include_reference_rows=True)
    assert len(full) == 3 + 6 and full.set_index("weighting").loc["snr", "fid_1step (paper)"] == 190.80


def test_ablation_table_with_renamed_label_and_metric():
    ours = pd.DataFrame({"variant": ["+ Dropout = 0.40"], "fid1": [9.0]})
    table = ablation_table(ours, "variant", ["fid1"], load_reference("table2"), reference_label="label",
                           reference_metrics={"fid1": "fid_1step"})
    assert table.loc[0, "fid1 (paper)"] == 9.28
    with pytest.raises(ValueError, match="not unique"):
        ablation_table(ours, "variant", ["fid1"], load_reference("table1_ect"), reference_label="label")


# ----------------------------------------------------------------------------- frames


def test_latest_evaluations_and_nfe_long():
    evals = pd.DataFrame({"run_id": ["r1"] * 6, "step": [10, 10, 20, 20, 10, 20], "nfe": [1, 2, 1, 2, 1, 1],
                          "metric": ["fd", "fd", "fd", "fd", "swd", "swd"], "value": [9.0, 5.0, 7.0, 4.0, 0.3, 0.2]})
    wide = latest_evaluations(evals).set_index("nfe")
    assert wide.loc[1, "fd"] == 7.0 and wide.loc[2, "fd"] == 4.0 and wide.loc[1, "swd"] == 0.2
    assert wide.loc[1, "step"] == 20
    long = table7_imagenet_long()
    assert sorted(long["nfe"].unique()) == [1, 2] and "fid_1step" not in long.columns


def seeded_frame() -> pd.DataFrame:
    """Three seeds at the smallest and largest budgets, one in between; known means and spreads."""
    rows = [(1.0, 0, 50.0), (1.0, 1, 54.0), (1.0, 2, 52.0), (2.0, 0, 30.0), (4.0, 0, 20.0),
            (8.0, 0, 12.0), (8.0, 1, 11.0), (8.0, 2, 13.0)]
    return pd.DataFrame([{"normalized_compute": x, "seed": s, "fd": f, "nfe": 2} for x, s, f in rows])


def test_seed_summary_and_trend_vs_spread():
    summary = analysis.seed_summary(seeded_frame(), "normalized_compute", "fd")
    assert summary["normalized_compute"].tolist() == [1.0, 2.0, 4.0, 8.0]
    assert summary["fd"].tolist() == [52.0, 30.0, 20.0, 12.0]
    assert summary["fd_min"].tolist() == [50.0, 30.0, 20.0, 11.0] and summary["n"].tolist() == [3, 1, 1, 3]
    (row,) = analysis.trend_vs_spread(summary, "normalized_compute", "fd").to_dict(orient="records")
    assert row["trend"] == -40.0 and row["spread_smallest"] == 4.0 and row["spread_largest"] == 2.0
    assert row["exceeds"] is True
    noisy = seeded_frame().assign(fd=lambda d: d["fd"].where(d["seed"] != 2, 5.0))
    (row,) = analysis.trend_vs_spread(analysis.seed_summary(noisy, "normalized_compute", "fd"),
                                      "normalized_compute", "fd").to_dict(orient="records")
    assert row["exceeds"] is False  # seed 2 at the smallest budget spreads 49 > |trend|
    one_seed = analysis.seed_summary(seeded_frame().query("seed == 0"), "normalized_compute", "fd")
    assert analysis.trend_vs_spread(one_seed, "normalized_compute", "fd")["exceeds"].tolist() == [False]


def test_fig_compute_scaling_pools_seeds_and_fits_the_means():
    df = seeded_frame()
    ax = fig_compute_scaling(df, y="fd").axes[0]
    means = analysis.seed_summary(df, "normalized_compute", "fd", by=())
    fit = fit_power_law(means["normalized_compute"], means["fd"])
    assert any(f"α={fit.alpha:.3f}" in t for t in legend_texts(ax))
    assert "2-step (mean, min-max over seeds)" in legend_texts(ax)
    faint = [line for line in ax.lines if len(line.get_xdata()) == len(df)]
    assert len(faint) == 1 and sorted(faint[0].get_ydata()) == sorted(df["fd"])


def test_tuning_vs_pretraining_known_answer():
    """Budget 10 and 20 FLOPs against pretraining 150: only budgets <= 15 count; seeds are averaged."""
    runs = pd.DataFrame({"run_id": ["a", "b", "c", "a", "b", "c"], "nfe": [2, 2, 2, 1, 1, 1],
                         "train_flops": [10.0, 10.0, 20.0] * 2, "fd": [12.0, 18.0, 4.0, 30.0, 40.0, 5.0]})
    res = analysis.tuning_vs_pretraining(runs, pretrain_flops=150.0, heun=3.0, untuned=90.0)
    assert res["best"] == 15.0 and res["seeds"] == 2 and res["fraction_used"] == pytest.approx(10 / 150)
    assert res["vs_heun"] == 5.0 and res["gain_vs_untuned"] == 6.0
    generous = analysis.tuning_vs_pretraining(runs, pretrain_flops=150.0, heun=3.0, untuned=90.0, fraction=0.2)
    assert generous["best"] == 4.0  # budget 20 now fits and is better
    assert analysis.tuning_vs_pretraining(runs, 50.0, 3.0, 90.0)["best"] is None  # nothing within 5 FLOPs

    steps = analysis.fewer_steps_worse(runs)
    assert steps == {"runs": 3, "holds": True, "worst_ratio": 0.8}
    worse = runs.assign(fd=[12.0, 18.0, 6.0, 30.0, 40.0, 5.0])
    assert analysis.fewer_steps_worse(worse)["holds"] is False
