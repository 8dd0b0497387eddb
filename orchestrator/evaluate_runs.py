"""The work of `ect study evaluate`: the study's checkpoints, the samplers to measure on each, the measurements
(and intermediate-time searches) not stored yet, each row written in its own transaction as soon as measured.

Runs are measured in `workers` processes at once (one CPU thread each, so a value does not depend on how many
there are: a 2-step FD of a digits UNet took 0.92 s on one thread and 0.77 s on two, a Zen 4, so two processes
measure 1.7x as fast as one process on both cores). Only this process writes the store.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from pydantic import ValidationError
from sqlalchemy import select

from studies.spec import Evaluate
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainer.config import (ConfigError, EvalConfig, SamplingConfig, TrainConfig, check_mid_times,
                            format_validation_error)
from trainer.data import load_dataset
from trainer.evaluation import EvalResult, Evaluator, extractor_name
from trainer.loop import load_model, torch_threads
from trainer.reporter import NullReporter
from trainer.sampling import ConsistencySampler, Sampler, params_json, sampler_for
from trainer.schedule_search import TunedSampler, default_start, search_mid_times

from .store import Evaluation, Store
from .study_runner import run_dir

_EVALUATORS: dict[str, Evaluator] = {}  # per process: extractor and reference statistics, built once per setting


@dataclass(frozen=True)
class RunTask:
    """What is still to be measured on one run's checkpoint (picklable: it crosses to a worker process)."""

    run_id: str
    label: str
    path: Path
    step: int
    cfg: TrainConfig
    todo: list[Sampler]
    tunes: list[tuple[int, dict]]  # (steps, search record) of each search not stored yet
    plan: Evaluate


def evaluate_study(store: Store, name: str, plan: Evaluate, weights: Path | None, dev: torch.device,
                   storage: Path, workers: int = 1) -> list[dict]:
    """Measure and store what `plan` asks of every run's checkpoint that is not stored yet, in `workers` processes;
    a row per evaluation asked for (stored before or new). Every input is checked, and every extractor loaded,
    before the first write."""
    checkpoints = _checkpoints(store, name, storage)
    options = _eval_updates(plan.metric, plan.num_samples, plan.seed, weights)
    rows: list[dict] = []
    tasks = []
    for run_id, (label, path) in checkpoints.items():
        task, stored = _task(store, run_id, label, path, plan, options, dev)
        rows += stored
        if task.todo or task.tunes:
            tasks.append(task)
    for task, results in _measured(tasks, dev, workers):
        for res in results:
            store.add_evaluation(task.run_id, step=task.step, **res.__dict__)
            tuned = "tuned_on" in json.loads(res.sampler_params)
            rows.append({"label": task.label, "run_id": task.run_id, "step": task.step, "nfe": res.nfe,
                         "sampler": f"{res.sampler} (tuned)" if tuned else res.sampler,
                         "sampler_params": res.sampler_params, "value": res.value, "new": True})
    order = {run_id: i for i, run_id in enumerate(checkpoints)}
    return sorted(rows, key=lambda r: order[r["run_id"]])


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


def _eval_updates(metric: str | None, samples: int | None, seed: int, weights: Path | None) -> dict:
    """The eval-section fields the options override."""
    given = {"metric": metric, "num_samples": samples, "weights": weights}
    return {"seed": seed, **{k: v for k, v in given.items() if v is not None}}


def _task(store: Store, run_id: str, label: str, path: Path, plan: Evaluate, eval_updates: dict,
          dev: torch.device) -> tuple[RunTask, list[dict]]:
    """(what is still to be measured on this run, a row for each requested evaluation stored already); builds the
    evaluators the run needs, so that a missing extractor fails before anything is written."""
    state = load_checkpoint(path)
    cfg = TrainConfig.from_json(state["config"])
    try:
        cfg = TrainConfig.model_validate({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), **eval_updates}})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"ect study evaluate (run {label})")) from None
    if cfg.eval.metric is None:
        raise ConfigError(f"run {label} has no eval.metric: pass --metric")
    step = int(state["step"])
    samplers = _samplers(cfg, plan.steps, plan.mid_times, plan.heun_steps)
    todo = [s for s in samplers if not _present(store, run_id, step, cfg.eval, s)]
    if plan.tune:
        try:
            check_mid_times([plan.tune_range[1], plan.tune_range[0]], cfg.precond.sigma_min, cfg.sampling.sigma_max)
        except ValueError as e:
            raise ConfigError(f"--tune-range: {e}") from None
    searches = [(n, _search(plan, cfg.eval, n)) for n in plan.tune]
    tunes = [(n, search) for n, search in searches if not _tuned_present(store, run_id, step, cfg.eval, n, search)]
    head = {"label": label, "run_id": run_id, "step": step, "value": None, "new": False}
    stored = [{**head, "sampler": s.name, "sampler_params": params_json(s), "nfe": s.nfe}
              for s in samplers if s not in todo]
    stored += [{**head, "sampler": "consistency (tuned)", "sampler_params": json.dumps(search), "nfe": n}
               for n, search in searches if (n, search) not in tunes]
    task = RunTask(run_id, label, path, step, cfg, todo, tunes, plan)
    if todo:
        _evaluator(cfg, cfg.eval.num_samples, dev)
    if tunes:
        _evaluator(cfg, plan.tune_samples or cfg.eval.num_samples, dev)
    return task, stored


def _search(plan: Evaluate, ev: EvalConfig, n: int) -> dict:
    """The record of an n-step intermediate-time search, stored with the tuned sampler's parameters."""
    search = {"method": "golden-section on log t", "range": list(plan.tune_range), "iterations": plan.tune_iterations,
              "seed": ev.seed + 1, "num_samples": plan.tune_samples or ev.num_samples}
    if n > 2:
        search.update(method="coordinate search, golden-section on log t", rounds=plan.tune_rounds)
    return search


def _evaluator(cfg: TrainConfig, num_samples: int, dev: torch.device) -> Evaluator:
    """This process's evaluator for a run's data and metric with `num_samples` samples."""
    ev = cfg.eval.model_copy(update={"num_samples": num_samples})
    key = json.dumps([cfg.data.model_dump(mode="json"), ev.model_dump(mode="json"), str(dev)])
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(ev, cfg.sampling, load_dataset(cfg.data), dev)
    return _EVALUATORS[key]


def _measure(task: RunTask, dev: torch.device) -> list[EvalResult]:
    """Every measurement still to be made on one run: its samplers, then its searches (each tuned sampler measured
    on the reported seed's noise with eval.num_samples)."""
    net, _, _ = load_model(task.path, device=str(dev))
    evaluator = _evaluator(task.cfg, task.cfg.eval.num_samples, dev)
    results = evaluator.evaluate_samplers(net, task.step, NullReporter(), task.todo) if task.todo else []
    for n, search in task.tunes:
        results += evaluator.evaluate_samplers(net, task.step, NullReporter(), [_tuned(task, net, n, search, dev)])
    return results


def _tuned(task: RunTask, net: torch.nn.Module, n: int, search: dict, dev: torch.device) -> TunedSampler:
    """n-step sampling at the n - 1 intermediate times searched on the noise of seed + 1 (`search` samples)."""
    lo, hi = task.plan.tune_range
    searcher = _evaluator(task.cfg, search["num_samples"], dev)

    def n_step(times: list[float]) -> ConsistencySampler:
        return ConsistencySampler(n, task.cfg.sampling.model_copy(update={"mid_times": times}))

    start = default_start(task.plan.mid_times or task.cfg.sampling.mid_times, n - 1, lo, hi)
    times, _ = search_mid_times(lambda t: searcher.measure(net, n_step(t), seed=search["seed"]), lo, hi,
                                task.plan.tune_iterations, start, task.plan.tune_rounds)
    return TunedSampler(n_step(times), search)


def _measured(tasks: list[RunTask], dev: torch.device, workers: int) -> Iterator[tuple[RunTask, list[EvalResult]]]:
    """(task, results) as each run's measurements finish: in this process when one worker suffices, else in a pool
    of fresh (spawned) processes; one CPU thread each either way."""
    if min(workers, len(tasks)) <= 1:
        with torch_threads(1):
            for task in tasks:
                yield task, _measure(task, dev)
        return
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {pool.submit(_measure, task, dev): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _tuned_present(store: Store, run_id: str, step: int, ev: EvalConfig, n: int, search: dict) -> bool:
    """Whether a tuned n-step evaluation from this very search is stored already."""
    with store.session() as s:
        params = s.scalars(select(Evaluation.sampler_params).filter_by(
            run_id=run_id, step=step, metric=ev.metric, extractor=extractor_name(ev.metric), sampler="consistency",
            num_samples=ev.num_samples, seed=ev.seed)).all()
    return any(p.get("tuned_on") == search and p.get("steps") == n for p in map(json.loads, params))
