"""Input checks shared by the fits: clear errors that name the column and the condition."""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_POINTS = 3


def positive_xy(x: Any, y: Any, x_name: str = "x", y_name: str = "y",
                what: str = "a power law") -> tuple[np.ndarray, np.ndarray]:
    """Return (x, y) as 1-D float arrays after checking they can enter a log-log fit.

    Raises ValueError for unequal lengths, fewer than 3 points, non-finite, non-positive or
    constant values, each message naming the column and the condition.
    """
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.size != ya.size:
        raise ValueError(f"{x_name} and {y_name} differ in length ({xa.size} vs {ya.size})")
    if xa.size < MIN_POINTS:
        raise ValueError(f"need at least {MIN_POINTS} points to fit {what}, got {xa.size}")
    for name, arr in ((x_name, xa), (y_name, ya)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf); drop those rows first")
        nonpos = int(np.count_nonzero(arr <= 0))
        if nonpos:
            raise ValueError(f"{name} must be positive for a log-log fit: {nonpos} value(s) <= 0 "
                             f"(min {arr.min():g})")
        if np.all(arr == arr[0]):
            raise ValueError(f"{name} is constant (every value is {arr[0]:g}): "
                             f"{what} needs at least two distinct {name} values")
    return xa, ya
