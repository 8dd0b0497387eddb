"""The notebook API: a store's studies, runs and results as pandas DataFrames and matplotlib figures.

Every function calls the code behind the matching CLI command, so filters, fits and figures mean the
same in a notebook as on the command line; every expected error (unknown study, bad `where` key,
nothing to fit) is an `ApiError` carrying the CLI's one-line message.

    from orchestrator import api
    api.studies("ect.db")                                   # ect study list
    api.runs("ect.db", "mini-compute-scaling", where="schedule.iterations>=400")   # ect runs list
    api.results("ect.db", "mini-compute-scaling")           # the frame fits and figures use
    api.fit("ect.db", "mini-compute-scaling", nfe=2)["fit"]["alpha"]               # ect analyze fit
    api.figure("ect.db", "mini-compute-scaling", "compute_scaling")                # ect figures regenerate

`db` is an SQLAlchemy URL or an SQLite file path; None means $ECT_DB, else ./ect.db (as `--db`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd
from matplotlib.figure import Figure

from studies.spec import StudySpec, stored_spec

from .cli_analysis import figure_makers, fit_study, pareto_study
from .cli_runs import select_runs
from .cli_study import study_rows
from .common import error_code, error_message, open_store
from .store import Store
from .study_frames import study_frame

Db = str | Path | None


class ApiError(Exception):
    """An expected error of a notebook API call, with the same one-line message the CLI prints."""


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if error_code(e) is None:
            raise
        raise ApiError(error_message(e)) from None


def _store(db: Db) -> Store:
    return open_store(None if db is None else str(db), create=False, readonly=True)


def studies(db: Db = None) -> pd.DataFrame:
    """The studies in the store (`ect study list`): name, kind, status, runs, created_at."""
    with _errors():
        return pd.DataFrame(study_rows(_store(db)), columns=["name", "kind", "status", "runs", "created_at"])


def runs(db: Db = None, study: str | None = None, where: str | Sequence[str] = (), status: str | None = None,
         sort: str = "") -> pd.DataFrame:
    """Runs matching every filter (`ect runs list --where ... --status ... --sort ...`), one row per run with
    its record and every flattened config key."""
    with _errors():
        store = _store(db)
        df = select_runs(store, [where] if isinstance(where, str) else list(where), study, status, sort)
        params = store.params_frame(list(df["run_id"]))
        return df.join(params[[c for c in params.columns if c not in df.columns]], on="run_id")


def evaluations(db: Db, study: str) -> pd.DataFrame:
    """Every evaluation of the study's runs, at every step: run_id, label, step, nfe, sampler, metric, value,
    extractor, num_samples."""
    with _errors():
        store = _store(db)
        store.study(study)
        return store.evaluations_frame(study)


def results(db: Db, study: str) -> pd.DataFrame:
    """The frame that fits and figures use: each run's latest evaluation per (NFE, sampler), one column per
    metric (and `fd`), with run facts and config keys (see orchestrator/study_frames.py)."""
    with _errors():
        store = _store(db)
        store.study(study)
        return study_frame(store, study)


def metrics(db: Db, run_id: str) -> pd.DataFrame:
    """A run's training-metric time series, one row per logged step (`ect runs metrics`); a run-id prefix works."""
    with _errors():
        store = _store(db)
        return store.metrics_frame(store.run(run_id).run_id)


def fit(db: Db, study: str, x: str = "tuning", y: str = "fd", nfe: int | None = None, sampler: str = "consistency",
        form: str = "loglinear", points: str = "means") -> dict:
    """`ect analyze fit --json` as a dict: study, x (column) and x_label, y, nfe, sampler (e.g. consistency-2-tuned),
    form, points (per-budget "means" or per-seed "seeds"), data, fit (K, alpha, intervals, r, p_value, ...) and
    notes on the runs left out."""
    with _errors():
        return fit_study(_store(db), study, x, y, nfe, sampler, form, points)


def pareto(db: Db, study: str, cost: str = "tuning", y: str = "fd", nfe: int | None = None,
           sampler: str = "consistency") -> pd.DataFrame:
    """The non-dominated runs (`ect analyze pareto`): label, nfe, cost, metric."""
    with _errors():
        return pareto_study(_store(db), study, cost, y, nfe, sampler=sampler)[0]


def figure_kinds(db: Db, study: str) -> list[str]:
    """The figures `figure` can draw for this study (those `ect figures regenerate` writes)."""
    with _errors():
        store = _store(db)
        return list(figure_makers(study_frame(store, study), _spec(store, study)))


def figure(db: Db, study: str, kind: str) -> Figure:
    """One of the study's figures as a matplotlib Figure, drawn exactly as `ect figures regenerate` draws it."""
    with _errors():
        store = _store(db)
        makers = figure_makers(study_frame(store, study), _spec(store, study))
        if kind not in makers:
            raise ValueError(f"figure {kind!r}: expected one of {', '.join(makers)} for study {study!r}")
        fig = makers[kind]()
        if fig is None:
            raise ValueError(f"figure {kind!r}: nothing to draw for study {study!r} (no completed run with a checkpoint)")
        return fig


def _spec(store: Store, study: str) -> StudySpec:
    return stored_spec(store.study(study).spec_yaml, f"study {study!r} (stored spec)")
