"""The work of `ect study evaluate`: the study's checkpoints, the samplers to measure on each, the measurements
(and intermediate-time searches) not stored yet, each row written in its own transaction as soon as measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from sqlalchemy import select

from studies.spec import Evaluate
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainer.config import (ConfigError, EvalConfig, SamplingConfig, TrainConfig, check_mid_times,
                            format_validation_error)
from trainer.data import load_dataset
from trainer.evaluation import Evaluator, extractor_name
from trainer.loop import load_model
from trainer.reporter import NullReporter
from trainer.sampling import ConsistencySampler, Sampler, params_json, sampler_for
from trainer.schedule_search import TunedSampler, default_start, search_mid_times

from .store import Evaluation, Store
from .study_runner import run_dir


def evaluate_study(store: Store, name: str, plan: Evaluate, weights: Path | None, dev: torch.device,
                   storage: Path) -> list[dict]:
    """Measure and store what `plan` asks of every run's checkpoint that is not stored yet; a row per evaluation
    asked for (stored before or new). Every input is checked, and every extractor loaded, before the first write."""
    checkpoints = _checkpoints(store, name, storage)
    evaluators: dict[str, Evaluator] = {}
    options = _eval_updates(plan.metric, plan.num_samples, plan.seed, weights)
    bounds = list(plan.tune_range) if plan.tune else None
    plans = [_plan(store, run_id, label, path, plan.steps, plan.mid_times, plan.heun_steps, bounds, options,
                   evaluators, dev) for run_id, (label, path) in checkpoints.items()]
    rows: list[dict] = []
    for p in plans:
        rows += _evaluate_run(store, evaluators, dev, *p)
        for n in plan.tune:
            rows += _tune_run(store, evaluators, dev, plan, n, *p)
    return rows


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
