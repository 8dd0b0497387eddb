"""`ect runs ...`: list, show, metrics and export runs from the store."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from trainer.config import ConfigError, did_you_mean

from .cli_options import print_json
from .common import DB_OPTION, clean_errors, open_store, out
from .outputs import atomic_file, check_file_target
from .store_names import STATUSES

if TYPE_CHECKING:
    import pandas as pd

    from .store import Run, Store

# The store and its queries (SQLAlchemy), pandas and the analysis are imported inside the commands, so that
# `ect --help` does not load them.

Status = Enum("Status", {s: s for s in STATUSES}, type=str)  # the store's run statuses, as CLI choices

app = typer.Typer(help="Query runs in the store.", no_args_is_help=True)

WHERE = typer.Option([], "--where", "-w", help="Filter KEY OP VALUE (OP: = != < <= > >=); KEY is a run column or config key, e.g. dropout=0.4, ect.q>=2. Repeatable.")
COLUMNS = ["run_id", "label", "role", "status", "step"]  # then the keys the runs' studies vary and their latest evaluations
TAIL_COLUMNS = ["normalized_compute"]


def select_runs(store: Store, where: list[str], study: Optional[str], status: Optional[str], sort: str) -> pd.DataFrame:
    """Runs matching every filter (bound parameters only), as a DataFrame, sorted by `sort` (a run column, config
    key or evaluation column such as `fd_digits@2`; '-' first for descending), which is then one of its columns."""
    from sqlalchemy import select

    from .query import FilterError, condition, parse_where
    from .store import Run, StudyRun

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
        full = with_results(store, df)
        key = resolve_column(full, sort.lstrip("-"), "--sort")
        df = df.assign(**{key: full[key].values}) if key not in df.columns else df
        df = df.sort_values(key, ascending=not sort.startswith("-"), kind="mergesort")
    return df


def evaluation_columns(store: Store, run_ids: list[str]) -> pd.DataFrame:
    """Each run's latest evaluation per NFE as columns `METRIC@NFE` (`METRIC@heun` for the Heun baseline),
    indexed by run id; evaluations with other sampler parameters (`ect study evaluate`) count when measured last."""
    import pandas as pd

    from analysis import latest_evaluations

    evals = store.evaluations_frame()
    evals = evals[evals["run_id"].isin(run_ids)].drop_duplicates(["run_id", "step", "nfe", "metric", "sampler"])
    if evals.empty:
        return pd.DataFrame(index=pd.Index([], name="run_id"))
    evals = evals.assign(at=[("heun" if s == "heun" else str(n)) for s, n in zip(evals["sampler"], evals["nfe"])])
    evals = evals.assign(column=evals["metric"] + "@" + evals["at"])
    wide = latest_evaluations(evals, keys=("run_id",), metric="column").set_index("run_id")
    return wide[sorted((c for c in wide.columns if "@" in str(c)), key=_by_metric_then_nfe)]


def _by_metric_then_nfe(column: str) -> tuple:
    metric, at = column.rsplit("@", 1)
    return metric, at == "heun", int(at) if at.isdigit() else 0


def varied_columns(store: Store, studies: list[str]) -> list[str]:
    """The config keys that these studies vary (grid axes, variant overrides, seeds), from their stored specs."""
    from studies.spec import stored_spec, varied_keys

    keys: list[str] = []
    for name in dict.fromkeys(studies):
        try:
            spec = stored_spec(store.study(name).spec_yaml, f"study {name!r} (stored spec)")
        except ConfigError:  # a spec stored by an older version: its runs are listed without its keys
            continue
        keys += [k for k in varied_keys(spec) if k not in keys]
    return keys


def with_results(store: Store, runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with every flattened config key and their latest evaluations (`evaluation_columns`) as columns."""
    ids = list(runs["run_id"])
    if not ids:
        return runs
    params = store.params_frame(ids)
    out = runs.join(params[[c for c in params.columns if c not in runs.columns]], on="run_id")
    return out.join(evaluation_columns(store, ids), on="run_id")


def resolve_column(df: pd.DataFrame, name: str, option: str) -> str:
    """A column by exact name or unique config-key suffix (`lr` for optim.lr); else a usage error with the closest."""
    from .query import FilterError

    if name in df.columns:
        return name
    matches = [c for c in df.columns if str(c).endswith("." + name)]
    if name.startswith("fd@"):  # `fd@2`: the one Fréchet distance measured (as `fd` in the study's results)
        matches = [c for c in df.columns if str(c).startswith("fd_") and str(c).endswith(name[2:])]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise FilterError(f"{option} {name!r} is ambiguous: {', '.join(matches[:6])}")
    names = [str(c) for c in df.columns]
    lasts = [n.rsplit(".", 1)[-1] for n in names]
    short = [last for last in lasts if lasts.count(last) == 1 and last not in names]  # `lr` names optim.lr
    raise FilterError(f"{option} {name!r}: no such run column, config key or evaluation{did_you_mean(name, names + short)}")


def _one_format(json_out: bool, csv_out: bool) -> None:
    from .query import FilterError

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
    sort: str = typer.Option("", "--sort", show_default="store order", help="Sort by a column, config key or evaluation (e.g. fd_digits@2); prefix '-' for descending."),
    columns: str = typer.Option("", "--columns", "-c", show_default="run facts, the keys the study varies and the latest evaluation per NFE", help="Comma-separated columns: run columns, config keys (or a unique last part, e.g. lr) and evaluations METRIC@NFE."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV."),
) -> None:
    """List runs, filtered and sorted: by default with the keys their study varies and each run's latest
    evaluation per NFE (`fd_digits@1`, `fd_digits@2`, ...)."""
    with clean_errors():
        _one_format(json_out, csv_out)
        store = open_store(db, create=False, readonly=True)
        df = select_runs(store, where, study, status.value if status else None, "")
        full = with_results(store, df)
        if sort:
            key = resolve_column(full, sort.lstrip("-"), "--sort")
            full = full.sort_values(key, ascending=not sort.startswith("-"), kind="mergesort")
        if columns:
            shown = [resolve_column(full, c.strip(), "--columns") for c in columns.split(",") if c.strip()]
        else:
            evals = [c for c in full.columns if "@" in str(c)]
            shown = COLUMNS + varied_columns(store, list(df["study"].dropna())) + evals + TAIL_COLUMNS
            shown = list(dict.fromkeys(c for c in shown if c in full.columns))
    order = f"sorted by {sort.lstrip('-')}{' (descending)' if sort.startswith('-') else ''}" if sort else "in store order"
    _emit(full[shown], f"{len(full)} runs, {order}", json_out, csv_out)


def config_diff(store: Store, run: Run) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """(the run's first study, {config key: {"base": value, "run": value}} where the run's resolved config differs
    from that study's base config); (None, every key) for a run of no study."""
    from sqlalchemy import select

    from studies.spec import stored_spec

    from .store import StudyRun, flatten

    with store.session() as s:
        study = s.scalar(select(StudyRun.study).where(StudyRun.run_id == run.run_id).order_by(StudyRun.study))
    mine = flatten(json.loads(run.config_json))
    if study is None:
        return None, {k: {"base": None, "run": v} for k, v in mine.items()}
    base = flatten(json.loads(stored_spec(store.study(study).spec_yaml, f"study {study!r} (stored spec)")
                              .base.model_dump_json()))
    keys = list(dict.fromkeys([*base, *mine]))
    return study, {k: {"base": base.get(k), "run": mine.get(k)} for k in keys if base.get(k) != mine.get(k)}


@app.command("show")
def show_cmd(run_id: str = typer.Argument(..., help="Run id or a prefix of it (at least 4 characters, or one that lists the runs it matches)."),
             db: Optional[str] = DB_OPTION, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One run: its record, its resolved config as a diff against its study's base config, and every evaluation."""
    from .store import Run

    with clean_errors():
        store = open_store(db, create=False, readonly=True)
        run = store.run(run_id)
        study, diff = config_diff(store, run)
        evals = store.evaluations_frame()
        evals = evals[evals["run_id"] == run.run_id].drop(columns=["study", "label"]).drop_duplicates()
    record = {c.name: getattr(run, c.name) for c in Run.__table__.columns if c.name != "config_json"}
    if json_out:
        print_json({**record, "config": json.loads(run.config_json), "study": study, "config_diff": diff,
                    "evaluations": json.loads(evals.to_json(orient="records"))})
        return
    table = Table(title=f"run {run.run_id} ({run.label})", show_header=False)
    for k, v in record.items():
        table.add_row(k, "" if v is None else str(v))
    out.print(table)
    title = f"config: differences from study {study}'s base" if study else "config (no study)"
    changes = Table(title=title if diff else f"{title}: none")
    for col in ("key", "base", "run"):
        changes.add_column(col)
    for k, v in diff.items():
        changes.add_row(k, json.dumps(v["base"]), json.dumps(v["run"]))
    out.print(changes)
    if len(evals):
        _emit(evals, f"evaluations ({len(evals)})", False, False)
    else:
        out.print("evaluations: none")


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
