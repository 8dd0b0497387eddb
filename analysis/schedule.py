"""ECT's mapping function r/t over the stages of a tuning run (paper Eq. 18, Fig. 5).

r/t = 1 - n(t) / q^a with n(t) = 1 + k * sigmoid(-b t), clamped at r >= 0; a = 1 .. stages over a
tuning run (a = ceil(iters / d), d = total / stages). This duplicates trainer.ect.mapping_r on
purpose: the one-way import rule keeps analysis free of the trainer (and of torch).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

T_MIN = 0.002
T_MAX = 80.0


def mapping_ratio(t: np.ndarray | float, a: int, q: float, k: float = 8.0, b: float = 1.0) -> np.ndarray:
    """r/t at noise level(s) t and stage a: max(0, 1 - (1 + k * sigmoid(-b t)) / q^a)."""
    from scipy.special import expit  # here, not at the top: `import analysis` need not load scipy

    n_t = 1.0 + k * expit(-b * np.asarray(t, dtype=float))
    return np.maximum(0.0, 1.0 - n_t / float(q) ** a)


def mapping_schedule(q: float, stages: int, k: float = 8.0, b: float = 1.0,
                     t: np.ndarray | None = None) -> pd.DataFrame:
    """Long table (t, stage, r_over_t) for stages a = 1 .. stages; t defaults to a log grid over [0.002, 80]."""
    if q <= 1:
        raise ValueError(f"q must be > 1, got {q}")
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    grid = np.geomspace(T_MIN, T_MAX, 400) if t is None else np.asarray(t, dtype=float)
    return pd.DataFrame({
        "t": np.tile(grid, stages),
        "stage": np.repeat(np.arange(1, stages + 1), grid.size),
        "r_over_t": np.concatenate([mapping_ratio(grid, a, q, k, b) for a in range(1, stages + 1)]),
    })
