"""The saturating power law FD = E + K * C^alpha, fitted robustly on log residuals.

Residuals are ln FD - ln(E + K C^alpha), minimised with a Huber loss (scipy's least_squares,
`f_scale` in log units) under E >= 0 and K > 0 (K enters as ln K), alpha within +-ALPHA_BOUND.
Budgets are divided by their geometric mean inside the fit for conditioning; reported K is in the
caller's units. Several starting points are tried and the lowest cost wins. The fit counts as
converged only when the optimiser succeeded, at least one residual degree of freedom is left,
no parameter sits on a bound (E below 0.1 % of the smallest FD counts as E = 0) and the
Gauss-Newton covariance s^2 (J^T J)^-1 is finite; only then are standard errors and bootstrap
intervals reported. Bootstrap refits that fail or land on a bound are skipped; `n_bootstrap`
says how many were kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize

from ._checks import positive_xy
from .powerlaw import fit_power_law, percentile_interval

ALPHA_BOUND = 5.0
N_PARAMS = 3
_ALPHA_STARTS = (0.05, 0.2, 0.5, 1.0, 2.0)
_E_STARTS = (0.0, 0.5, 0.9)
_MAX_COND = 1e8
_E_FLOOR_TOL = 1e-3


@dataclass(frozen=True)
class SaturatingFit:
    """Result of `fit_saturating`. Standard errors, covariance and intervals are None unless converged.

    `cov` is the covariance of (E, ln K, alpha); `se_log_K` is the SE of ln K (K's delta-method
    SE is K * se_log_K).
    """

    E: float
    K: float
    alpha: float
    converged: bool
    reason: str
    n: int
    ci: float
    se_E: float | None
    se_log_K: float | None
    se_alpha: float | None
    E_ci: tuple[float, float] | None
    K_ci: tuple[float, float] | None
    alpha_ci: tuple[float, float] | None
    n_bootstrap: int
    residual_var: float
    cov: tuple[tuple[float, ...], ...] | None
    c_min: float
    c_max: float

    @property
    def dof(self) -> int:
        """Residual degrees of freedom, n - 3."""
        return self.n - N_PARAMS

    def mean(self, c: np.ndarray) -> np.ndarray:
        """Fitted FD at budget(s) c."""
        return self.E + self.K * np.asarray(c, dtype=float) ** self.alpha

    def log_prediction_se(self, c: np.ndarray) -> np.ndarray:
        """Delta-method SE of a new observation's ln FD at c (parameter covariance + residual variance)."""
        ca = np.asarray(c, dtype=float)
        if self.cov is None:
            return np.full(ca.shape, np.nan)
        power = self.K * ca**self.alpha
        m = self.E + power
        grad = np.stack([1 / m, power / m, power * np.log(ca) / m], axis=-1)
        var = np.einsum("...i,ij,...j->...", grad, np.asarray(self.cov), grad) + self.residual_var
        return np.sqrt(var)

    def inverse(self, target: float) -> float:
        """Budget at which the fitted curve reaches `target` (must lie beyond the floor E)."""
        ratio = (target - self.E) / self.K
        if self.alpha == 0 or ratio <= 0:
            raise ValueError(f"target {target:g} is unreachable: the fitted curve never goes below its "
                             f"floor E = {self.E:g}")
        return float(ratio ** (1 / self.alpha))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return asdict(self)


def _residuals(p: np.ndarray, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return ly - np.log(p[0] + np.exp(p[1] + p[2] * lx))


def _jacobian(p: np.ndarray, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        power = np.exp(p[1] + p[2] * lx)
        m = p[0] + power
        return -np.column_stack([1 / m, power / m, power * lx / m])


def _solve(x0: np.ndarray, lx: np.ndarray, ly: np.ndarray, f_scale: float) -> optimize.OptimizeResult:
    bounds = ([0.0, -np.inf, -ALPHA_BOUND], [np.inf, np.inf, ALPHA_BOUND])
    return optimize.least_squares(_residuals, x0, jac=_jacobian, bounds=bounds, loss="huber",
                                  f_scale=f_scale, args=(lx, ly), method="trf", max_nfev=2000)


def _starts(lx: np.ndarray, ly: np.ndarray) -> list[np.ndarray]:
    sign = np.sign(fit_power_law(np.exp(lx), np.exp(ly), bootstrap=0).alpha) or -1.0
    y = np.exp(ly)
    out = []
    for frac in _E_STARTS:
        e0 = frac * y.min()
        for a in _ALPHA_STARTS:
            alpha0 = sign * a
            out.append(np.array([e0, float(np.mean(np.log(y - e0) - alpha0 * lx)), alpha0]))
    return out


def _at_bound(p: np.ndarray, y_min: float) -> list[str]:
    """Reasons a solution counts as on a bound; E below 0.1 % of the smallest FD counts as E = 0."""
    out = []
    if p[0] <= _E_FLOOR_TOL * y_min:
        out.append("E is at its lower bound 0: no floor is identified (the pure power law fits as well)")
    if abs(p[2]) >= ALPHA_BOUND * (1 - 1e-6):
        out.append(f"alpha is at its bound {np.sign(p[2]) * ALPHA_BOUND:+g}")
    return out


def _covariance(p: np.ndarray, lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Gauss-Newton covariance in (E, ln K', alpha) and the residual variance; None when singular."""
    dof = lx.size - N_PARAMS
    resid = _residuals(p, lx, ly)
    s2 = float((resid**2).sum() / dof) if dof > 0 else float("nan")
    jac = _jacobian(p, lx, ly)
    if dof <= 0 or not np.all(np.isfinite(jac)) or np.linalg.cond(jac) > _MAX_COND:
        return None, s2
    cov = s2 * np.linalg.inv(jac.T @ jac)
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
        return None, s2
    return cov, s2


def _bootstrap(best: np.ndarray, lx: np.ndarray, ly: np.ndarray, resamples: int, seed: int,
               f_scale: float) -> np.ndarray:
    """Refits on resampled points (start: the best fit); rows (E, ln K', alpha) of the successes."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(resamples):
        idx = rng.integers(0, lx.size, size=lx.size)
        if np.unique(lx[idx]).size < N_PARAMS:
            continue
        res = _solve(best, lx[idx], ly[idx], f_scale)
        if res.success and not _at_bound(res.x, float(np.exp(ly[idx]).min())):
            rows.append(res.x)
    return np.array(rows).reshape(-1, N_PARAMS)


def fit_saturating(x: Any, y: Any, bootstrap: int = 200, seed: int = 0, ci: float = 0.95,
                   f_scale: float = 0.1, x_name: str = "x", y_name: str = "y") -> SaturatingFit:
    """Fit FD = E + K * C^alpha (x = C, y = FD) with a Huber loss on log residuals.

    `f_scale` is the Huber threshold in log units (0.1: residuals beyond ~10 % count as outliers).
    `bootstrap` refits on resampled points give percentile intervals, only when the fit converged.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    xa, ya = positive_xy(x, y, x_name, y_name, what="a saturating power law")
    log_scale = float(np.log(xa).mean())
    lx, ly = np.log(xa) - log_scale, np.log(ya)
    results = [_solve(x0, lx, ly, f_scale) for x0 in _starts(lx, ly)]
    best = min(results, key=lambda r: r.cost if np.isfinite(r.cost) else np.inf)
    p = best.x
    reasons = []
    if not best.success:
        reasons.append(f"optimizer did not converge: {best.message}")
    if lx.size <= N_PARAMS:
        reasons.append(f"no degrees of freedom left for the covariance: {lx.size} points for {N_PARAMS} parameters")
    reasons += _at_bound(p, float(ya.min()))
    cov_n, s2 = _covariance(p, lx, ly)
    if cov_n is None and lx.size > N_PARAMS:
        reasons.append("covariance is not finite: the Jacobian is singular (parameters not identifiable)")
    log_k = float(p[1] - p[2] * log_scale)
    fields: dict[str, Any] = dict(E=float(p[0]), K=float(np.exp(log_k)), alpha=float(p[2]), n=int(lx.size),
                                  ci=ci, residual_var=s2, c_min=float(xa.min()), c_max=float(xa.max()))
    if reasons:
        return SaturatingFit(converged=False, reason="; ".join(reasons), se_E=None, se_log_K=None,
                             se_alpha=None, E_ci=None, K_ci=None, alpha_ci=None, n_bootstrap=0, cov=None,
                             **fields)
    to_orig = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -log_scale], [0.0, 0.0, 1.0]])
    cov = to_orig @ cov_n @ to_orig.T
    se = np.sqrt(np.diag(cov))
    e_ci = k_ci = a_ci = None
    draws = _bootstrap(p, lx, ly, bootstrap, seed, f_scale) if bootstrap > 0 else np.empty((0, N_PARAMS))
    if len(draws) >= 2:
        e_ci = percentile_interval(draws[:, 0], ci)
        lo, hi = percentile_interval(draws[:, 1] - draws[:, 2] * log_scale, ci)
        k_ci = (float(np.exp(lo)), float(np.exp(hi)))
        a_ci = percentile_interval(draws[:, 2], ci)
    return SaturatingFit(converged=True, reason="", se_E=float(se[0]), se_log_K=float(se[1]),
                         se_alpha=float(se[2]), E_ci=e_ci, K_ci=k_ci, alpha_ci=a_ci, n_bootstrap=len(draws),
                         cov=tuple(tuple(float(v) for v in row) for row in cov), **fields)
