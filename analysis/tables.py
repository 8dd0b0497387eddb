"""Ablation tables (paper Tables 2-4 style): our numbers beside the paper's, as Markdown, LaTeX or CSV.

The formatters need no optional dependency (pandas' to_markdown wants `tabulate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def ablation_table(ours: pd.DataFrame, label: str, metrics: Sequence[str], reference: pd.DataFrame | None = None,
                   reference_label: str | None = None, reference_metrics: Mapping[str, str] | None = None,
                   include_reference_rows: bool = False, ours_name: str = "ours",
                   paper_name: str = "paper") -> pd.DataFrame:
    """One row per label: "<metric> (ours)" and, where the reference has it, "<metric> (paper)".

    Rows of `ours` sharing a label (seeds) are averaged; rows keep their first-seen order. The
    paper's value is joined on `label` == `reference_label` (default: the same column name);
    `reference_metrics` maps our metric name to the reference's column when they differ.
    `include_reference_rows` appends the paper's rows we have no run for.
    """
    missing = [c for c in (label, *metrics) if c not in ours.columns]
    if missing:
        raise KeyError(f"missing column(s) {missing} in our results; available: {list(ours.columns)}")
    agg = ours.groupby(label, sort=False)[list(metrics)].mean()
    ref = _reference_index(reference, reference_label or label) if reference is not None else None
    labels = list(agg.index)
    if ref is not None and include_reference_rows:
        labels += [v for v in ref.index if v not in agg.index]
    out = pd.DataFrame({label: labels})
    for m in metrics:
        out[f"{m} ({ours_name})"] = out[label].map(agg[m])
        ref_col = (reference_metrics or {}).get(m, m)
        if ref is not None and ref_col in ref.columns:
            out[f"{m} ({paper_name})"] = out[label].map(ref[ref_col])
    return out


def _reference_index(reference: pd.DataFrame, key: str) -> pd.DataFrame:
    if key not in reference.columns:
        raise KeyError(f"reference has no label column {key!r}; available: {list(reference.columns)}")
    dup = reference[key][reference[key].duplicated()].unique()
    if len(dup):
        raise ValueError(f"reference labels in {key!r} are not unique ({list(dup)}); filter the reference first")
    return reference.set_index(key)


def _cell(value: Any, floatfmt: str, na: str) -> str:
    if not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value):
        return na
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        return format(float(value), floatfmt)
    return str(value)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f", na: str = "–") -> str:
    """GitHub pipe table; numeric columns right-aligned, missing values shown as `na`."""
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"
    align = ["---:" if _is_numeric(df[c]) else ":---" for c in df.columns]
    body = [row([_cell(v, floatfmt, na) for v in rec]) for rec in df.itertuples(index=False)]
    return "\n".join([row([str(c) for c in df.columns]), "|" + "|".join(align) + "|", *body]) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(df: pd.DataFrame, floatfmt: str = ".2f", na: str = "--", caption: str | None = None,
             label: str | None = None) -> str:
    """booktabs tabular (wrapped in a table environment when `caption` or `label` is given)."""
    spec = "".join("r" if _is_numeric(df[c]) else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    for rec in df.itertuples(index=False):
        cells = [_cell(v, floatfmt, na) for v in rec]
        lines.append(" & ".join(c if c == na else latex_escape(c) for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption is None and label is None:
        return "\n".join(lines) + "\n"
    wrap = [r"\begin{table}[t]", r"\centering"]
    if caption is not None:
        wrap.append(rf"\caption{{{latex_escape(caption)}}}")
    if label is not None:
        wrap.append(rf"\label{{{label}}}")
    return "\n".join(wrap + lines + [r"\end{table}"]) + "\n"


def to_csv(df: pd.DataFrame, path: str | Path | None = None) -> str:
    """CSV text without the index; also written to `path` when given."""
    text = df.to_csv(index=False)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return text
