"""The pure power law FD = K * C^alpha, fitted by ordinary least squares on log-log data.

ln FD = ln K + alpha ln C + noise. Standard errors come from the OLS covariance. The SE of
ln K is the natural one (the intercept's); `se_K` is its delta-method image K * SE(ln K).
Intervals are OLS t-intervals (t quantile with n - 2 degrees of freedom): alpha +- t SE(alpha) and
exp(ln K +- t SE(ln K)). `benchmarks/fit_coverage.py` measured them against a paired BCa bootstrap:
the t-interval holds its nominal coverage at n = 6 where the bootstrap does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._checks import positive_xy

# scipy is imported inside the functions that need it (a p-value, a quantile): `import analysis` stays light.

INTERVAL_METHOD = "t interval, OLS SE, n - 2 dof"


@dataclass(frozen=True)
class PowerLawFit:
    """Result of `fit_power_law`; `interval` names how K_ci and alpha_ci were computed."""

    K: float
    alpha: float
    se_log_K: float
    se_alpha: float
    r: float
    p_value: float
    n: int
    K_ci: tuple[float, float]
    alpha_ci: tuple[float, float]
    ci: float
    log_c_mean: float
    log_c_sxx: float
    residual_var: float
    c_min: float
    c_max: float
    interval: str = INTERVAL_METHOD

    @property
    def converged(self) -> bool:
        """Always True: OLS has a closed form (kept for symmetry with SaturatingFit)."""
        return True

    @property
    def se_K(self) -> float:
        """Delta-method standard error of K: K * SE(ln K)."""
        return self.K * self.se_log_K

    @property
    def dof(self) -> int:
        """Residual degrees of freedom, n - 2."""
        return self.n - 2

    def mean(self, c: np.ndarray) -> np.ndarray:
        """Fitted FD at budget(s) c."""
        return self.K * np.asarray(c, dtype=float) ** self.alpha

    def log_prediction_se(self, c: np.ndarray) -> np.ndarray:
        """SE of a new observation's ln FD at c: s * sqrt(1 + 1/n + (ln c - mean)^2 / Sxx)."""
        lc = np.log(np.asarray(c, dtype=float))
        return np.sqrt(self.residual_var * (1 + 1 / self.n + (lc - self.log_c_mean) ** 2 / self.log_c_sxx))

    def inverse(self, target: float) -> float:
        """Budget at which the fitted curve reaches `target`."""
        if self.alpha == 0:
            raise ValueError("alpha is 0: the fitted curve is flat and never reaches another value")
        return float((target / self.K) ** (1 / self.alpha))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly) of every field plus se_K."""
        return {**asdict(self), "se_K": self.se_K, "converged": True}


def pearson_loglog(x: Any, y: Any, x_name: str = "x", y_name: str = "y") -> tuple[float, float]:
    """Pearson r of (ln x, ln y) and its two-sided p-value (as scipy.stats.pearsonr)."""
    xa, ya = positive_xy(x, y, x_name, y_name, what="a log-log correlation")
    return _pearson(np.log(xa), np.log(ya))


def _pearson(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """r and its two-sided p-value under independence: r is Beta(n/2 - 1, n/2 - 1) on [-1, 1], the
    distribution scipy.stats.pearsonr uses; scipy.special keeps scipy.stats' import cost out."""
    from scipy import special

    da, db = a - a.mean(), b - b.mean()
    r = float(np.clip((da * db).sum() / np.sqrt((da**2).sum() * (db**2).sum()), -1.0, 1.0))
    ab = a.size / 2 - 1
    return r, float(2 * special.betainc(ab, ab, 0.5 * (1 - abs(r))))


def t_quantile(ci: float, dof: int) -> float:
    """The two-sided `ci` quantile of Student's t with `dof` degrees of freedom."""
    from scipy import special

    return float(special.stdtrit(dof, 0.5 * (1 + ci)))


def fit_power_law(x: Any, y: Any, ci: float = 0.95, x_name: str = "x", y_name: str = "y") -> PowerLawFit:
    """Fit FD = K * C^alpha (x = C, y = FD) by least squares on ln y vs ln x, with `ci` t-intervals.

    `x_name` / `y_name` only label error messages. Needs at least 3 positive, non-constant points.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    xa, ya = positive_xy(x, y, x_name, y_name)
    lx, ly = np.log(xa), np.log(ya)
    n = lx.size
    mx = lx.mean()
    sxx = float(((lx - mx) ** 2).sum())
    alpha = float(((lx - mx) * (ly - ly.mean())).sum() / sxx)
    log_k = float(ly.mean() - alpha * mx)
    resid = ly - (log_k + alpha * lx)
    s2 = float((resid**2).sum() / (n - 2))
    se_alpha, se_log_k = float(np.sqrt(s2 / sxx)), float(np.sqrt(s2 * (1 / n + mx**2 / sxx)))
    tq = t_quantile(ci, n - 2)
    r, p_value = _pearson(lx, ly)
    return PowerLawFit(
        K=float(np.exp(log_k)), alpha=alpha, se_log_K=se_log_k, se_alpha=se_alpha,
        r=r, p_value=p_value, n=n,
        K_ci=(float(np.exp(log_k - tq * se_log_k)), float(np.exp(log_k + tq * se_log_k))),
        alpha_ci=(alpha - tq * se_alpha, alpha + tq * se_alpha), ci=ci,
        log_c_mean=float(mx), log_c_sxx=sxx, residual_var=s2,
        c_min=float(xa.min()), c_max=float(xa.max()),
    )
