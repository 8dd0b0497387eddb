"""`ect study evaluate NAME`: score the stored checkpoints of a study's runs with other samplers, metrics or sample
counts, into the study's evaluation table. It never trains. An evaluation already stored (same run, step, metric,
extractor, sampler and parameters, sample count and seed) is skipped, so running it again computes only what is
missing; each row is written in its own transaction as soon as it is measured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from studies.spec import Evaluate, stored_spec
from trainer.config import ConfigError, format_validation_error

from .cli_options import print_json
from .common import DB_OPTION, STORAGE_OPTION, clean_errors, open_store, out

# torch and the trainer are imported by the command (orchestrator.evaluate_runs), not by `ect --help`.
DEFAULTS = Evaluate()  # what a study without an `evaluate:` section declares


def _listed(values: object) -> str:
    return ",".join(map(str, values)) if isinstance(values, (list, tuple)) else str(values)


def _numbers(text: str, option: str, kind: type) -> list:
    """Comma-separated numbers of an option, or a usage error naming it."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{option} {text!r}: expected comma-separated {kind.__name__}s, e.g. 1,2")
    return values


def evaluate_cmd(
    name: str = typer.Argument(..., help="Study name (as stored)."),
    steps: Optional[str] = typer.Option(None, "--steps", show_default=f"the study's evaluate.steps, else {_listed(DEFAULTS.steps)}", help="Comma-separated consistency sampling steps (NFE), e.g. 1,2,4."),
    mid_times: Optional[str] = typer.Option(None, "--mid-times", show_default="the study's evaluate.mid_times, else each run's sampling.mid_times", help="Intermediate times of multistep sampling, decreasing, inside (sigma_min, sigma_max), e.g. 1.2,0.5,0.2."),
    heun_steps: Optional[int] = typer.Option(None, "--heun-steps", min=2, show_default="the study's evaluate.heun_steps", help="Also evaluate EDM's Heun sampler with this many steps (2n - 1 NFE)."),
    metric: Optional[str] = typer.Option(None, "--metric", show_default="the study's evaluate.metric, else each run's eval.metric", help="fd_digits, fd_inception, fd_dinov2, fd_dinov2_vitb14, swd or energy."),
    samples: Optional[int] = typer.Option(None, "--samples", show_default="the study's evaluate.num_samples, else each run's eval.num_samples", help="Samples per evaluation."),
    seed: Optional[int] = typer.Option(None, "--seed", show_default=f"the study's evaluate.seed, else {_listed(DEFAULTS.seed)}", help="Seed of the sampling noise (and of the class labels)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Extractor weights file (fd_inception, fd_dinov2)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    db: Optional[str] = DB_OPTION,
    storage: Path = STORAGE_OPTION,
    tune: Optional[str] = typer.Option(None, "--tune", show_default="the study's evaluate.tune, else none", help="Comma-separated step counts (2 to 4) whose intermediate times are searched per run on the noise of seed + 1 (2: golden section on t_mid; 3, 4: coordinate search); the tuned evaluations are stored beside the default ones."),
    tune_range: Optional[str] = typer.Option(None, "--tune-range", show_default=f"the study's evaluate.tune_range, else {_listed(DEFAULTS.tune_range)}", help="Bounds of the searched times, inside (sigma_min, sigma_max)."),
    tune_iterations: Optional[int] = typer.Option(None, "--tune-iterations", min=1, show_default=f"the study's evaluate.tune_iterations, else {_listed(DEFAULTS.tune_iterations)}", help="Golden-section steps per searched time (one measurement each, plus two)."),
    tune_rounds: Optional[int] = typer.Option(None, "--tune-rounds", min=1, show_default=f"the study's evaluate.tune_rounds, else {_listed(DEFAULTS.tune_rounds)}", help="Coordinate-search sweeps over the times of 3- and 4-step sampling."),
    tune_samples: Optional[int] = typer.Option(None, "--tune-samples", min=2, show_default="the study's evaluate.tune_samples, else --samples", help="Samples per measurement of the search (the tuned sampler is then measured with --samples)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, show_default="the number of CPU cores; 1 on a GPU", help="Runs measured at once, each in its own process on one CPU thread."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score the checkpoints of a study's runs with other samplers, metrics or sample counts (never trains).
    Options not given are taken from the study's `evaluate:` section."""
    from .cli import cli_device
    from .evaluate_runs import evaluate_study

    with clean_errors():
        store = open_store(db, create=False)
        declared = stored_spec(store.study(name).spec_yaml, f"study {name!r} (stored spec)").evaluate
        plan = _settings(declared, steps, mid_times, heun_steps, metric, samples, seed, tune, tune_range,
                         tune_iterations, tune_rounds, tune_samples)
        dev = cli_device(device)
        rows = evaluate_study(store, name, plan, weights, dev, storage,
                              workers or (1 if dev.type == "cuda" else os.cpu_count() or 1))
    _show(rows, name, json_out)


def _settings(declared: Evaluate, steps: str | None, mid_times: str | None, heun_steps: int | None,
              metric: str | None, samples: int | None, seed: int | None, tune: str | None, tune_range: str | None,
              tune_iterations: int | None, tune_rounds: int | None, tune_samples: int | None) -> Evaluate:
    """The study's `evaluate:` section with the options given on the command line in its place."""
    given: dict = {"heun_steps": heun_steps, "metric": metric, "num_samples": samples, "seed": seed,
                   "tune_iterations": tune_iterations, "tune_rounds": tune_rounds, "tune_samples": tune_samples}
    if steps is not None:
        given["steps"] = _numbers(steps, "--steps", int)
        if min(given["steps"]) < 1:
            raise ConfigError(f"--steps {steps!r}: each must be >= 1")
    if mid_times is not None:
        given["mid_times"] = _numbers(mid_times, "--mid-times", float)
    if tune is not None:
        given["tune"] = _numbers(tune, "--tune", int) if tune.strip() else []
        if any(not 2 <= n <= 4 for n in given["tune"]):
            raise ConfigError(f"--tune {tune!r}: expected step counts from 2 to 4")
    if tune_range is not None:
        bounds = _numbers(tune_range, "--tune-range", float)
        if len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ConfigError(f"--tune-range {tune_range!r}: expected LOW,HIGH with LOW < HIGH")
        given["tune_range"] = tuple(bounds)
    try:
        return Evaluate.model_validate({**declared.model_dump(), **{k: v for k, v in given.items() if v is not None}})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "ect study evaluate")) from None


def _show(rows: list[dict], name: str, json_out: bool) -> None:
    new = sum(r["new"] for r in rows)
    if json_out:
        print_json({"study": name, "added": new, "evaluations": rows})
        return
    table = Table(title=f"study {name}: {new} evaluations added, {len(rows) - new} already stored")
    cols = ("label", "step", "sampler", "sampler_params", "nfe", "value")
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*("stored" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                        for c in cols))
    out.print(table)
