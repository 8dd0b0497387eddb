"""The saturating power law FD = E + K * C^alpha, fitted robustly on log residuals and tested against
the pure power law it contains (E = 0).

Residuals are ln FD - ln(E + K C^alpha), minimised with a Huber loss (scipy's least_squares,
`f_scale` in log units) under E >= 0 and K > 0 (K enters as ln K), alpha within +-ALPHA_BOUND.
Budgets are divided by their geometric mean inside the fit for conditioning; reported K is in the
caller's units.

A floor is *identified* only when the data support it over the pure power law: the nested F-test
on the log residual sums of squares (1 and n - 3 degrees of freedom) gives p < `level`, and AIC
prefers the saturating law. Otherwise reports and figures should use the power law and say
"no floor identified (p = ...)". The fit counts as converged only when the optimiser succeeded,
at least one residual degree of freedom is left, alpha is off its bound, the Gauss-Newton
covariance s^2 (J^T J)^-1 is finite and no parameter's standard error exceeds its value.

Intervals are t-intervals on the Gauss-Newton standard errors (t quantile with n - 3 degrees of
freedom): E +- t SE(E) clipped at E >= 0, exp(ln K +- t SE(ln K)) and alpha +- t SE(alpha).
`benchmarks/fit_coverage.py` measures their coverage against a percentile bootstrap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._checks import positive_xy
from .powerlaw import t_quantile

ALPHA_BOUND = 5.0
N_PARAMS = 3
FLOOR_LEVEL = 0.05
INTERVAL_METHOD = "t interval, Gauss-Newton SE, n - 3 dof"
_ALPHA_STARTS = (0.1, 0.5, 1.5)
_E_STARTS = (0.0, 0.5, 0.9)
_MAX_COND = 1e8


@dataclass(frozen=True)
class SaturatingFit:
    """Result of `fit_saturating`. Standard errors, covariance and intervals are None unless the
    covariance could be computed; `converged` and `floor_identified` say whether to use them.

    `cov` is the covariance of (E, ln K, alpha); `se_log_K` is the SE of ln K (K's delta-method
    SE is K * se_log_K). `floor_p_value` is the nested F-test of E = 0 (the pure power law);
    `aic` / `aic_power_law` are the two models' AIC on the log residuals.
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
    residual_var: float
    cov: tuple[tuple[float, ...], ...] | None
    c_min: float
    c_max: float
    floor_identified: bool
    floor_p_value: float
    aic: float
    aic_power_law: float
    interval: str = INTERVAL_METHOD

    @property
    def dof(self) -> int:
        """Residual degrees of freedom, n - 3."""
        return self.n - N_PARAMS

    @property
    def floor_verdict(self) -> str:
        """One line for reports: 'floor E = 12.3 [9.1, 15.5] (p = 0.002)' or 'no floor identified (p = 0.29)'."""
        if not self.floor_identified:
            return f"no floor identified (p = {self.floor_p_value:.2g})"
        span = f" [{self.E_ci[0]:.3g}, {self.E_ci[1]:.3g}]" if self.E_ci else ""
        return f"floor E = {self.E:.3g}{span} (p = {self.floor_p_value:.2g})"

    def mean(self, c: np.ndarray) -> np.ndarray:
        """Fitted FD at budget(s) c."""
        return self.E + self.K * np.asarray(c, dtype=float) ** self.alpha

    def log_prediction_se(self, c: np.ndarray) -> np.ndarray:
        """Delta-method SE of a new observation's ln FD at c (parameter covariance + residual variance)."""
        ca = np.asarray(c, dtype=float)
        if self.cov is None or not self.converged:
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
        """Plain dict of every field plus the floor verdict."""
        return {**asdict(self), "floor": self.floor_verdict}


def _residuals(p: np.ndarray, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return ly - np.log(p[0] + np.exp(p[1] + p[2] * lx))


def _jacobian(p: np.ndarray, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        power = np.exp(p[1] + p[2] * lx)
        m = p[0] + power
        return -np.column_stack([1 / m, power / m, power * lx / m])


def _solve(x0: np.ndarray, lx: np.ndarray, ly: np.ndarray, f_scale: float) -> Any:
    from scipy import optimize  # here, not at import: `import analysis` stays light

    bounds = ([0.0, -np.inf, -ALPHA_BOUND], [np.inf, np.inf, ALPHA_BOUND])
    return optimize.least_squares(_residuals, x0, jac=_jacobian, bounds=bounds, loss="huber",
                                  f_scale=f_scale, args=(lx, ly), method="trf", max_nfev=2000)


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float]:
    """(ln K, alpha, residual sum of squares) of the pure power law on centred log budgets."""
    slope, intercept = np.polyfit(lx, ly, 1)
    rss = float(((ly - intercept - slope * lx) ** 2).sum())
    return float(intercept), float(slope), rss


def _starts(lx: np.ndarray, ly: np.ndarray, power_law: tuple[float, float, float]) -> list[np.ndarray]:
    """The power law itself (E = 0) and floors at fractions of the smallest FD with a few exponents."""
    log_k, slope, _ = power_law
    sign = np.sign(slope) or -1.0
    y = np.exp(ly)
    out = [np.array([0.0, log_k, float(np.clip(slope, -ALPHA_BOUND, ALPHA_BOUND))])]
    for frac in _E_STARTS[1:]:
        e0 = frac * y.min()
        for a in _ALPHA_STARTS:
            alpha0 = sign * a
            out.append(np.array([e0, float(np.mean(np.log(y - e0) - alpha0 * lx)), alpha0]))
    return out


def _covariance(p: np.ndarray, lx: np.ndarray, ly: np.ndarray, s2: float) -> np.ndarray | None:
    """Gauss-Newton covariance s^2 (J^T J)^-1 in (E, ln K', alpha); None when singular."""
    jac = _jacobian(p, lx, ly)
    if lx.size <= N_PARAMS or not np.all(np.isfinite(jac)) or np.linalg.cond(jac) > _MAX_COND:
        return None
    cov = s2 * np.linalg.inv(jac.T @ jac)
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
        return None
    return cov


def _aic(rss: float, n: int, k: int) -> float:
    """Gaussian AIC on log residuals, counting the residual variance as a parameter."""
    return float(n * np.log(max(rss, 1e-300) / n) + 2 * (k + 1))


def _floor_test(rss0: float, rss1: float, n: int) -> float:
    """p-value of the nested F-test of E = 0 (1 and n - 3 dof); 1 when nothing is left to test."""
    dof = n - N_PARAMS
    if dof <= 0 or rss1 >= rss0:
        return 1.0
    if rss1 <= 1e-12 * rss0:
        return 0.0
    from scipy import special  # here, not at the top: listing results need not load scipy

    return float(special.fdtrc(1, dof, (rss0 - rss1) / (rss1 / dof)))


def _weak_parameters(p: np.ndarray, se: np.ndarray) -> list[str]:
    """Reasons for parameters whose standard error exceeds their value (E, K via ln K, alpha)."""
    out = []
    if se[0] > p[0]:
        out.append(f"SE(E) = {se[0]:.3g} exceeds E = {p[0]:.3g}")
    if se[1] > 1:
        out.append(f"SE(K) = K * {se[1]:.3g} exceeds K")
    if se[2] > abs(p[2]):
        out.append(f"SE(alpha) = {se[2]:.3g} exceeds |alpha| = {abs(p[2]):.3g}")
    return out


def fit_saturating(x: Any, y: Any, ci: float = 0.95, f_scale: float = 0.1, level: float = FLOOR_LEVEL,
                   x_name: str = "x", y_name: str = "y") -> SaturatingFit:
    """Fit FD = E + K * C^alpha (x = C, y = FD) with a Huber loss on log residuals, and test E against 0.

    `f_scale` is the Huber threshold in log units (0.1: residuals beyond ~10 % count as outliers).
    `level` is the F-test's significance level for calling the floor identified.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    xa, ya = positive_xy(x, y, x_name, y_name, what="a saturating power law")
    log_scale = float(np.log(xa).mean())
    lx, ly = np.log(xa) - log_scale, np.log(ya)
    n = int(lx.size)
    power_law = _ols(lx, ly)
    results = [_solve(x0, lx, ly, f_scale) for x0 in _starts(lx, ly, power_law)]
    best = min(results, key=lambda r: r.cost if np.isfinite(r.cost) else np.inf)
    p = best.x
    rss1 = float((_residuals(p, lx, ly) ** 2).sum())
    s2 = rss1 / (n - N_PARAMS) if n > N_PARAMS else float("nan")
    p_floor = _floor_test(power_law[2], rss1, n)
    aic1, aic0 = _aic(rss1, n, N_PARAMS), _aic(power_law[2], n, 2)
    reasons = []
    if not best.success:
        reasons.append(f"optimizer did not converge: {best.message}")
    if n <= N_PARAMS:
        reasons.append(f"no degrees of freedom left for the covariance: {n} points for {N_PARAMS} parameters")
    if abs(p[2]) >= ALPHA_BOUND * (1 - 1e-6):
        reasons.append(f"alpha is at its bound {np.sign(p[2]) * ALPHA_BOUND:+g}")
    cov_n = _covariance(p, lx, ly, s2)
    if cov_n is None and n > N_PARAMS:
        reasons.append("covariance is not finite: the Jacobian is singular (parameters not identifiable)")
    log_k = float(p[1] - p[2] * log_scale)
    fields: dict[str, Any] = dict(
        E=float(p[0]), K=float(np.exp(log_k)), alpha=float(p[2]), n=n, ci=ci, residual_var=s2,
        c_min=float(xa.min()), c_max=float(xa.max()), floor_p_value=p_floor, aic=aic1, aic_power_law=aic0)
    if cov_n is None:
        return SaturatingFit(converged=False, reason="; ".join(reasons), se_E=None, se_log_K=None, se_alpha=None,
                             E_ci=None, K_ci=None, alpha_ci=None, cov=None, floor_identified=False, **fields)
    to_orig = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -log_scale], [0.0, 0.0, 1.0]])
    cov = to_orig @ cov_n @ to_orig.T
    se = np.sqrt(np.diag(cov))
    reasons += _weak_parameters(p, np.sqrt(np.diag(cov_n)))
    tq = t_quantile(ci, n - N_PARAMS)
    converged = not reasons
    with np.errstate(over="ignore"):  # a K that the points barely constrain has an unbounded interval: inf
        K_ci = (float(np.exp(log_k - tq * se[1])), float(np.exp(log_k + tq * se[1])))
    return SaturatingFit(
        converged=converged, reason="; ".join(reasons), se_E=float(se[0]), se_log_K=float(se[1]),
        se_alpha=float(se[2]), E_ci=(max(0.0, float(p[0] - tq * se[0])), float(p[0] + tq * se[0])), K_ci=K_ci,
        alpha_ci=(float(p[2] - tq * se[2]), float(p[2] + tq * se[2])),
        cov=tuple(tuple(float(v) for v in row) for row in cov),
        floor_identified=converged and p_floor < level and aic1 < aic0, **fields)
