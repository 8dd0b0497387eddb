"""`ect runs ...`: list, show, metrics and export runs from the store."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from .cli_options import print_json
from .common import DB_OPTION, clean_errors, open_store, out
from .outputs import atomic_file, check_file_target
from .query import FilterError, condition, parse_where
from .store import STATUSES, Run, Store, StudyRun

if TYPE_CHECKING:
    import pandas as pd

Status = Enum("Status", {s: s for s in STATUSES}, type=str)  # the store's run statuses, as CLI choices

app = typer.Typer(help="Query runs in the store.", no_args_is_help=True)

WHERE = typer.Option([], "--where", "-w", help="Filter KEY OP VALUE (OP: = != < <= > >=); KEY is a run column or config key, e.g. dropout=0.4, ect.q>=2. Repeatable.")
COLUMNS = ["run_id", "label", "role", "status", "step", "attempts", "train_flops", "normalized_compute", "wall_seconds"]


def select_runs(store: Store, where: list[str], study: Optional[str], status: Optional[str], sort: str) -> pd.DataFrame:
    """Runs matching every filter (bound parameters only), as a DataFrame with their parameters."""
    from sqlalchemy import select

    if study:
        store.study(study)  # an unknown study is an error, not an empty list
    if status and status not in STATUSES:
        raise FilterError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
    with store.session() as s:
        q = select(Run.run_id)
        if study:
            q = q.join(StudyRun, StudyRun.run_id == Run.run_id).where(StudyRun.study == study)
        if status:
            q = q.where(Run.status == status)
        for term in parse_where(where):
            q = q.where(condition(s, term))
        ids = list(dict.fromkeys(s.scalars(q)))
    df = store.runs_frame(study)
    df = df[df["run_id"].isin(ids)].drop_duplicates("run_id")
    if sort:
        key = sort.lstrip("-")
        if key not in df.columns:
            params = store.params_frame(list(df["run_id"]))
            match = [c for c in params.columns if c == key or c.endswith("." + key)]
            if not match:
                raise FilterError(f"--sort {key!r}: no such column or config key")
            df = df.join(params[[match[0]]], on="run_id")
            key = match[0]
        df = df.sort_values(key, ascending=not sort.startswith("-"))
    return df


def _one_format(json_out: bool, csv_out: bool) -> None:
    if json_out and csv_out:
        raise FilterError("--json and --csv: choose one output format")


def _emit(df: pd.DataFrame, title: str, json_out: bool, csv_out: bool) -> None:
    if json_out:
        print_json(json.loads(df.to_json(orient="records")))
    elif csv_out:
        df.to_csv(sys.stdout, index=False)
    else:
        table = Table(title=title)
        for c in df.columns:
            table.add_column(str(c))
        for _, row in df.iterrows():
            table.add_row(*("" if v is None or (isinstance(v, float) and v != v)
                            else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row))
        out.print(table)


@app.command("list")
def list_cmd(
    db: Optional[str] = DB_OPTION,
    where: list[str] = WHERE,
    study: Optional[str] = typer.Option(None, "--study", help="Only runs of this study."),
    status: Optional[Status] = typer.Option(None, "--status", show_default="any", help="Only runs with this status."),
    sort: str = typer.Option("", "--sort", show_default="store order", help="Sort by a column or config key; prefix '-' for descending."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV."),
) -> None:
    """List runs, filtered and sorted."""
    with clean_errors():
        _one_format(json_out, csv_out)
        df = select_runs(open_store(db, create=False, readonly=True), where, study, status.value if status else None, sort)
    _emit(df[[c for c in COLUMNS if c in df.columns]], f"{len(df)} runs", json_out, csv_out)


@app.command("show")
def show_cmd(run_id: str = typer.Argument(..., help="Run id (or a unique prefix of at least 4 characters)."),
             db: Optional[str] = DB_OPTION, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One run: its record, resolved config and evaluations."""
    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        run = store.run(run_id)
        evals = store.evaluations_frame()
        evals = evals[evals["run_id"] == run.run_id].drop(columns=["study", "label"]).drop_duplicates()
    record = {c.name: getattr(run, c.name) for c in Run.__table__.columns if c.name != "config_json"}
    if json_out:
        print_json({**record, "config": json.loads(run.config_json),
                    "evaluations": json.loads(evals.to_json(orient="records"))})
        return
    table = Table(title=f"run {run.run_id} ({run.label})", show_header=False)
    for k, v in record.items():
        table.add_row(k, "" if v is None else str(v))
    out.print(table)
    if len(evals):
        _emit(evals, "evaluations", False, False)


@app.command("metrics")
def metrics_cmd(run_id: str = typer.Argument(..., help="Run id or unique prefix."), db: Optional[str] = DB_OPTION,
                json_out: bool = typer.Option(False, "--json", help="Print JSON."),
                csv_out: bool = typer.Option(False, "--csv", help="Print CSV.")) -> None:
    """The training-metric time series of a run (one row per logged step)."""
    with clean_errors():
        _one_format(json_out, csv_out)
        store = open_store(db, create=False, readonly=True)
        df = store.metrics_frame(store.run(run_id).run_id)
    _emit(df, f"metrics of {run_id}", json_out, csv_out)


@app.command("export")
def export_cmd(
    out_path: Path = typer.Argument(..., help="CSV file to write (runs with evaluations and flattened config)."),
    db: Optional[str] = DB_OPTION,
    study: Optional[str] = typer.Option(None, "--study", help="Only runs of this study."),
    where: list[str] = WHERE,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write one CSV row per (run, evaluation) with every config parameter, for analysis elsewhere."""
    with clean_errors():
        check_file_target(out_path, force)
        store = open_store(db, create=False, readonly=True)
        runs = select_runs(store, where, study, None, "")
        params = store.params_frame(list(runs["run_id"]))
        evals = (store.evaluations_frame(study).drop(columns=["study", "label"]).drop_duplicates()
                 .rename(columns={"seed": "sampling_seed"}))  # `seed` is the run's training seed (a config key)
        df = runs.merge(evals, on="run_id", how="left", suffixes=("", "_eval")).join(params, on="run_id")
        with atomic_file(out_path, force) as tmp:
            df.to_csv(tmp, index=False)
    out.print(f"wrote {len(df)} rows to {out_path}")
