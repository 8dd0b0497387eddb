"""Prediction at a new budget and its inverse, for either fit (PowerLawFit or SaturatingFit).

The interval is a prediction interval for a new observation, built in log space and
exponentiated: ln FD_hat +- t_{dof} * SE_pred. For the pure power law SE_pred is the OLS
prediction SE; for the saturating law it is the delta-method SE plus the residual variance.
A saturating fit that did not converge gives NaN bounds. The inverse interval is the set of
budgets whose prediction interval contains the target (classical calibration); a side that
never closes is reported as 0 or inf.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .powerlaw import t_quantile

_GRID = 2001
_MAX_LOG = 700.0


class PredictiveFit(Protocol):
    """What `predict` needs from a fit."""

    c_min: float
    c_max: float

    @property
    def dof(self) -> int: ...

    def mean(self, c: np.ndarray) -> np.ndarray: ...

    def log_prediction_se(self, c: np.ndarray) -> np.ndarray: ...

    def inverse(self, target: float) -> float: ...


def _as_output(a: np.ndarray) -> float | np.ndarray:
    return float(a) if a.ndim == 0 else a


def predict(fit: PredictiveFit, c: float | np.ndarray, ci: float = 0.95
            ) -> tuple[float | np.ndarray, float | np.ndarray, float | np.ndarray]:
    """(value, lo, hi): fitted FD at budget(s) c and its `ci` prediction interval."""
    ca = np.asarray(c, dtype=float)
    if np.any(ca <= 0):
        raise ValueError("budget c must be positive")
    value = fit.mean(ca)
    se = fit.log_prediction_se(ca)
    tq = t_quantile(ci, fit.dof) if fit.dof > 0 else np.nan
    with np.errstate(invalid="ignore"):
        lo, hi = value * np.exp(-tq * se), value * np.exp(tq * se)
    return _as_output(value), _as_output(lo), _as_output(hi)


def _outside(fit: PredictiveFit, lc: np.ndarray, log_target: float, ci: float) -> np.ndarray:
    """> 0 where the target lies outside the prediction interval at budget exp(lc)."""
    _, lo, hi = predict(fit, np.exp(lc), ci)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(np.log(lo) - log_target, log_target - np.log(hi))


def _edge(fit: PredictiveFit, lc0: float, direction: float, span: float, log_target: float, ci: float) -> float:
    """Log budget where the target leaves the band going `direction` from lc0 (+-inf if it never does)."""
    grid = lc0 + direction * np.linspace(0.0, span, _GRID)
    grid = grid[np.abs(grid) <= _MAX_LOG]
    h = _outside(fit, grid, log_target, ci)
    out = np.flatnonzero(h > 0)
    if out.size == 0:
        return direction * np.inf
    i = out[0]
    from scipy import optimize  # here, not at import: `import analysis` stays light

    return optimize.brentq(lambda v: float(_outside(fit, np.array(v), log_target, ci)), grid[i - 1], grid[i])


def compute_for_target(fit: PredictiveFit, target: float, ci: float = 0.95) -> tuple[float, float, float]:
    """(c, lo, hi): budget at which the fit reaches `target` and the range of budgets whose
    `ci` prediction interval contains the target."""
    if target <= 0:
        raise ValueError(f"target must be positive, got {target:g}")
    c = fit.inverse(target)
    se0 = float(fit.log_prediction_se(np.array(c)))
    if not np.isfinite(se0) or fit.dof <= 0:
        return c, float("nan"), float("nan")
    if se0 == 0:
        return c, c, c
    lc0, log_target = float(np.log(c)), float(np.log(target))
    span = max(10.0 * float(np.log(fit.c_max / fit.c_min)), 20.0)
    lo, hi = sorted(float(np.exp(_edge(fit, lc0, d, span, log_target, ci))) for d in (-1.0, 1.0))
    return c, lo, hi
