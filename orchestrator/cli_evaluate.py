"""`ect study evaluate NAME`: score the stored checkpoints of a study's runs with other samplers, metrics or sample
counts, into the study's evaluation table. It never trains. An evaluation already stored (same run, step, metric,
extractor, sampler and parameters, sample count and seed) is skipped, so running it again computes only what is
missing; each row is written in its own transaction as soon as it is measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import typer
from pydantic import ValidationError
from rich.table import Table
from sqlalchemy import select

from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint
from studies.spec import Evaluate, stored_spec
from trainer.config import (ConfigError, EvalConfig, SamplingConfig, TrainConfig, check_mid_times,
                            format_validation_error)
from trainer.data import load_dataset
from trainer.evaluation import Evaluator, extractor_name
from trainer.loop import load_model
from trainer.precond import Precond
from trainer.reporter import NullReporter
from trainer.sampling import ConsistencySampler, Sampler, params_json, sampler_for
from trainer.schedule_search import TunedSampler, default_start, search_mid_times

from .common import DB_OPTION, STORAGE_OPTION, clean_errors, open_store, out
from .store import Evaluation, Store
from .study_runner import run_dir


def _numbers(text: str, option: str, kind: type) -> list:
    """Comma-separated numbers of an option, or a usage error naming it."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{option} {text!r}: expected comma-separated {kind.__name__}s, e.g. 1,2")
    return values


def _checkpoints(store: Store, name: str, storage: Path) -> dict[str, tuple[str, Path]]:
    """{run id: (label, checkpoint file)} of every run of the study; refuses (naming them) runs still being
    trained and runs without a checkpoint, before anything is written."""
    runs = store.runs_frame(name).drop_duplicates("run_id")
    busy = runs[runs["status"] == "running"]
    if len(busy):
        raise RuntimeError(f"study {name!r}: runs {', '.join(busy['label'])} are still running; evaluate when its "
                           f"driver has finished (or after `ect study cancel {name}`)")
    found, missing = {}, []
    for r in runs.itertuples():
        stored = [Path(r.checkpoint)] if isinstance(r.checkpoint, str) else []  # NaN where none
        candidates = stored + [run_dir(storage, r.run_id) / CHECKPOINT_NAME]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(f"{r.label} ({r.run_id}, {r.status})")
        else:
            found[r.run_id] = (r.label, path)
    if missing:
        raise RuntimeError(f"study {name!r}: no checkpoint for runs {', '.join(missing)}; nothing evaluated")
    if not found:
        raise RuntimeError(f"study {name!r} has no runs")
    return found


def _samplers(cfg: TrainConfig, steps: list[int], mid_times: list[float] | None,
              heun_steps: int | None) -> list[Sampler]:
    """The requested samplers with this run's sampling settings, the given intermediate times and Heun steps."""
    sampling = cfg.sampling.model_copy(update={k: v for k, v in (("mid_times", mid_times), ("heun_steps", heun_steps))
                                               if v is not None})
    try:
        sampling = SamplingConfig.model_validate(sampling.model_dump())
        check_mid_times(sampling.mid_times, cfg.precond.sigma_min, sampling.sigma_max)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "ect study evaluate")) from None
    except ValueError as e:
        raise ConfigError(f"--mid-times: {e}") from None
    try:
        samplers = [sampler_for(sampling, n) for n in steps]
    except ValueError as e:
        raise ConfigError(f"--steps: {e} (pass --mid-times)") from None
    return samplers + ([sampler_for(sampling, heun=True)] if heun_steps is not None else [])


def _present(store: Store, run_id: str, step: int, ev: EvalConfig, sampler: Sampler) -> bool:
    """Whether this exact evaluation is stored already."""
    key = dict(run_id=run_id, step=step, metric=ev.metric, extractor=extractor_name(ev.metric), sampler=sampler.name,
               sampler_params=params_json(sampler), num_samples=ev.num_samples, seed=ev.seed)
    with store.session() as s:
        return s.scalar(select(Evaluation.id).filter_by(**key)) is not None


def evaluate_cmd(
    name: str = typer.Argument(..., help="Study name (as stored)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Comma-separated consistency sampling steps (NFE), e.g. 1,2,4 [default: the study's evaluate.steps, else 1,2]."),
    mid_times: Optional[str] = typer.Option(None, "--mid-times", help="Intermediate times of multistep sampling, decreasing, inside (sigma_min, sigma_max), e.g. 1.2,0.5,0.2 [default: the study's evaluate.mid_times, else each run's sampling.mid_times]."),
    heun_steps: Optional[int] = typer.Option(None, "--heun-steps", min=2, help="Also evaluate EDM's Heun sampler with this many steps (2n - 1 NFE) [default: the study's evaluate.heun_steps]."),
    metric: Optional[str] = typer.Option(None, "--metric", help="fd_digits, fd_inception, fd_dinov2, fd_dinov2_vitb14, swd or energy [default: the study's evaluate.metric, else each run's eval.metric]."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Samples per evaluation [default: the study's evaluate.num_samples, else each run's eval.num_samples]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the sampling noise (and of the class labels) [default: the study's evaluate.seed, else 0]."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Extractor weights file (fd_inception, fd_dinov2)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    db: Optional[str] = DB_OPTION,
    storage: Path = STORAGE_OPTION,
    tune: Optional[str] = typer.Option(None, "--tune", help="Comma-separated step counts (2 to 4) whose intermediate times are searched per run on the noise of seed + 1 (2: golden section on t_mid; 3, 4: coordinate search); the tuned evaluations are stored beside the default ones [default: the study's evaluate.tune, else none]."),
    tune_range: Optional[str] = typer.Option(None, "--tune-range", help="Bounds of the searched times, inside (sigma_min, sigma_max) [default: the study's evaluate.tune_range, else 0.05,20]."),
    tune_iterations: Optional[int] = typer.Option(None, "--tune-iterations", min=1, help="Golden-section steps per searched time (one measurement each, plus two) [default: the study's evaluate.tune_iterations, else 8]."),
    tune_rounds: Optional[int] = typer.Option(None, "--tune-rounds", min=1, help="Coordinate-search sweeps over the times of 3- and 4-step sampling [default: the study's evaluate.tune_rounds, else 2]."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score the checkpoints of a study's runs with other samplers, metrics or sample counts (never trains).
    Options not given are taken from the study's `evaluate:` section."""
    from .cli import cli_device

    rows = []
    with clean_errors():
        store = open_store(db, create=False)
        declared = stored_spec(store.study(name).spec_yaml, f"study {name!r} (stored spec)").evaluate
        plan = _settings(declared, steps, mid_times, heun_steps, metric, samples, seed, tune, tune_range,
                         tune_iterations, tune_rounds)
        dev = cli_device(device)
        checkpoints = _checkpoints(store, name, storage)
        evaluators: dict[str, Evaluator] = {}
        options = _eval_updates(plan.metric, plan.num_samples, plan.seed, weights)
        bounds = list(plan.tune_range) if plan.tune else None
        plans = [_plan(store, run_id, label, path, plan.steps, plan.mid_times, plan.heun_steps, bounds, options,
                       evaluators, dev) for run_id, (label, path) in checkpoints.items()]
        for p in plans:  # every input was checked (and every extractor loaded) before this first write
            rows += _evaluate_run(store, evaluators, dev, *p)
            for n in plan.tune:
                rows += _tune_run(store, evaluators, dev, plan, n, *p)
    _show(rows, name, json_out)


def _settings(declared: Evaluate, steps: str | None, mid_times: str | None, heun_steps: int | None,
              metric: str | None, samples: int | None, seed: int | None, tune: str | None, tune_range: str | None,
              tune_iterations: int | None, tune_rounds: int | None) -> Evaluate:
    """The study's `evaluate:` section with the options given on the command line in its place."""
    given: dict = {"heun_steps": heun_steps, "metric": metric, "num_samples": samples, "seed": seed,
                   "tune_iterations": tune_iterations, "tune_rounds": tune_rounds}
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


def _eval_updates(metric: str | None, samples: int | None, seed: int, weights: Path | None) -> dict:
    """The eval-section fields the options override."""
    given = {"metric": metric, "num_samples": samples, "weights": weights}
    return {"seed": seed, **{k: v for k, v in given.items() if v is not None}}


def _plan(store: Store, run_id: str, label: str, path: Path, steps: list[int], times: list[float] | None,
          heun_steps: int | None, bounds: list[float] | None, eval_updates: dict, evaluators: dict[str, Evaluator],
          dev: torch.device) -> tuple:
    """(run id, label, checkpoint, step, eval settings, samplers still to measure) of one run; builds its evaluator
    where something is to be measured."""
    state = load_checkpoint(path)
    cfg = TrainConfig.from_json(state["config"])
    try:
        cfg = TrainConfig.model_validate({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), **eval_updates}})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"ect study evaluate (run {label})")) from None
    if cfg.eval.metric is None:
        raise ConfigError(f"run {label} has no eval.metric: pass --metric")
    step = int(state["step"])
    samplers = _samplers(cfg, steps, times, heun_steps)
    todo = [s for s in samplers if not _present(store, run_id, step, cfg.eval, s)]
    key = json.dumps([cfg.data.model_dump(mode="json"), cfg.eval.model_dump(mode="json")])
    if bounds is not None:
        try:
            check_mid_times([bounds[1], bounds[0]], cfg.precond.sigma_min, cfg.sampling.sigma_max)
        except ValueError as e:
            raise ConfigError(f"--tune-range: {e}") from None
    if (todo or bounds is not None) and key not in evaluators:  # extractor and reference statistics, built once
        evaluators[key] = Evaluator(cfg.eval, cfg.sampling, load_dataset(cfg.data), dev)
    return run_id, label, path, step, key, samplers, todo, cfg


def _evaluate_run(store: Store, evaluators: dict[str, Evaluator], dev: torch.device, run_id: str, label: str,
                  path: Path, step: int, key: str, samplers: list[Sampler], todo: list[Sampler],
                  cfg: TrainConfig) -> list[dict]:
    """Measure and store one run's evaluations that are not stored yet; a row for each requested one."""
    rows = [{"label": label, "run_id": run_id, "step": step, "sampler": s.name, "sampler_params": params_json(s),
             "nfe": s.nfe, "value": None, "new": False} for s in samplers if s not in todo]
    if todo:
        net, _, _ = load_model(path, device=str(dev))
        for res in evaluators[key].evaluate_samplers(net, step, NullReporter(), todo):
            store.add_evaluation(run_id, step=step, **res.__dict__)
            rows.append({"label": label, "run_id": run_id, "step": step, "sampler": res.sampler,
                         "sampler_params": res.sampler_params, "nfe": res.nfe, "value": res.value, "new": True})
    return rows


def _tune_run(store: Store, evaluators: dict[str, Evaluator], dev: torch.device, plan: Evaluate, n: int,
              run_id: str, label: str, path: Path, step: int, key: str, samplers: list[Sampler], todo: list[Sampler],
              cfg: TrainConfig) -> list[dict]:
    """Search the n - 1 intermediate times of n-step sampling on the noise of seed + 1, then measure the tuned
    sampler on the reported seed's noise and store it (skipped where this very search is stored already)."""
    ev = cfg.eval
    lo, hi = plan.tune_range
    search = {"method": "golden-section on log t", "range": [lo, hi], "iterations": plan.tune_iterations,
              "seed": ev.seed + 1, "num_samples": ev.num_samples}
    if n > 2:
        search.update(method="coordinate search, golden-section on log t", rounds=plan.tune_rounds)
    head = {"label": label, "run_id": run_id, "step": step, "sampler": "consistency (tuned)", "nfe": n}
    if _tuned_present(store, run_id, step, ev, n, search):
        return [{**head, "sampler_params": json.dumps(search), "value": None, "new": False}]
    net, _, _ = load_model(path, device=str(dev))
    evaluator = evaluators[key]

    def n_step(times: list[float]) -> ConsistencySampler:
        return ConsistencySampler(n, cfg.sampling.model_copy(update={"mid_times": times}))

    start = default_start(plan.mid_times or cfg.sampling.mid_times, n - 1, lo, hi)
    times, _ = search_mid_times(lambda t: evaluator.measure(net, n_step(t), seed=ev.seed + 1), lo, hi,
                                plan.tune_iterations, start, plan.tune_rounds)
    (res,) = evaluator.evaluate_samplers(net, step, NullReporter(), [TunedSampler(n_step(times), search)])
    store.add_evaluation(run_id, step=step, **res.__dict__)
    return [{**head, "sampler_params": res.sampler_params, "value": res.value, "new": True}]


def _tuned_present(store: Store, run_id: str, step: int, ev: EvalConfig, n: int, search: dict) -> bool:
    """Whether a tuned n-step evaluation from this very search is stored already."""
    with store.session() as s:
        params = s.scalars(select(Evaluation.sampler_params).filter_by(
            run_id=run_id, step=step, metric=ev.metric, extractor=extractor_name(ev.metric), sampler="consistency",
            num_samples=ev.num_samples, seed=ev.seed)).all()
    return any(p.get("tuned_on") == search and p.get("steps") == n for p in map(json.loads, params))


def _show(rows: list[dict], name: str, json_out: bool) -> None:
    new = sum(r["new"] for r in rows)
    if json_out:
        out.print_json(json.dumps({"study": name, "added": new, "evaluations": rows}))
        return
    table = Table(title=f"study {name}: {new} evaluations added, {len(rows) - new} already stored")
    cols = ("label", "step", "sampler", "sampler_params", "nfe", "value")
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*("stored" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                        for c in cols))
    out.print(table)
