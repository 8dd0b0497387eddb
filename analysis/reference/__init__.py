"""The paper's published numbers as CSV package data, each row with its `source` (table, figure, section).

Files (name without .csv): table1_ect, table1_baselines, table2 .. table7, fig4_fits,
fig4_compute_budgets, mapping_schedules, text_results. Only numbers printed in the paper's text
are here; figure-only values (the points of Figs. 4, 5 and 7) are absent. `weighting` columns give
the trainer's names for the paper's timestep weightings so our runs can be joined on them.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

_PACKAGE = __name__


def list_references() -> list[str]:
    """Names accepted by `load_reference`, sorted."""
    return sorted(p.name[:-4] for p in resources.files(_PACKAGE).iterdir() if p.name.endswith(".csv"))


def load_reference(name: str) -> pd.DataFrame:
    """One reference table as a DataFrame, e.g. load_reference("table7") or "fig4_fits"."""
    stem = name[:-4] if name.endswith(".csv") else name
    path = resources.files(_PACKAGE).joinpath(f"{stem}.csv")
    if not path.is_file():
        raise ValueError(f"unknown reference {name!r}; available: {', '.join(list_references())}")
    with path.open("r", encoding="utf-8") as f:
        return pd.read_csv(f)
