"""`ect study evaluate NAME`: score the stored checkpoints of a study's runs with other samplers, metrics or sample
counts, into the study's evaluation table. It never trains. An evaluation already stored (same run, step, metric,
extractor, sampler and parameters, sample count and seed) is skipped, so running it again computes only what is
missing; each row is written in its own transaction as soon as it is measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.table import Table
from sqlalchemy import select

from trainer.config import ConfigError, EvalConfig, SamplingConfig, TrainConfig, format_validation_error

from .common import DB_OPTION, STORAGE_OPTION, clean_errors, open_store, out
from .store import Evaluation, Store
from .study_runner import run_dir

if TYPE_CHECKING:  # torch and the trainer's torch modules load when the command runs: `ect study validate` stays fast
    import torch

    from trainer.evaluation import Evaluator
    from trainer.sampling import Sampler


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
    from trainer.checkpoint import CHECKPOINT_NAME

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
    from trainer.sampling import check_mid_times, sampler_for

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
    from trainer.evaluation import extractor_name
    from trainer.sampling import params_json

    key = dict(run_id=run_id, step=step, metric=ev.metric, extractor=extractor_name(ev.metric), sampler=sampler.name,
               sampler_params=params_json(sampler), num_samples=ev.num_samples, seed=ev.seed)
    with store.session() as s:
        return s.scalar(select(Evaluation.id).filter_by(**key)) is not None


def evaluate_cmd(
    name: str = typer.Argument(..., help="Study name (as stored)."),
    steps: str = typer.Option("1,2", "--steps", help="Comma-separated consistency sampling steps (NFE), e.g. 1,2,4."),
    mid_times: Optional[str] = typer.Option(None, "--mid-times", help="Intermediate times of multistep sampling, decreasing, inside (sigma_min, sigma_max), e.g. 1.2,0.5,0.2 [default: each run's sampling.mid_times]."),
    heun_steps: Optional[int] = typer.Option(None, "--heun-steps", min=2, help="Also evaluate EDM's Heun sampler with this many steps (2n - 1 NFE)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="fd_digits, fd_inception, fd_dinov2, fd_dinov2_vitb14, swd or energy [default: each run's eval.metric]."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Samples per evaluation [default: each run's eval.num_samples]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling noise (and of the class labels)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Extractor weights file (fd_inception, fd_dinov2)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    db: Optional[str] = DB_OPTION,
    storage: Path = STORAGE_OPTION,
    tune: bool = typer.Option(False, "--tune-mid-time", help="Also search the 2-step intermediate time per run (on the noise of seed + 1) and store the tuned 2-step evaluation."),
    tune_range: str = typer.Option("0.05,20", "--tune-range", help="Bounds of the t_mid search, inside (sigma_min, sigma_max)."),
    tune_iterations: int = typer.Option(8, "--tune-iterations", min=1, help="Golden-section steps of the search (one measurement each, plus three)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score the checkpoints of a study's runs with other samplers, metrics or sample counts (never trains)."""
    from .cli import cli_device

    rows = []
    with clean_errors():
        step_list = _numbers(steps, "--steps", int)
        if min(step_list) < 1:
            raise ConfigError(f"--steps {steps!r}: each must be >= 1")
        times = _numbers(mid_times, "--mid-times", float) if mid_times is not None else None
        dev = cli_device(device)
        bounds = _numbers(tune_range, "--tune-range", float) if tune else None
        if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise ConfigError(f"--tune-range {tune_range!r}: expected LOW,HIGH with LOW < HIGH")
        store = open_store(db, create=False)
        store.study(name)
        checkpoints = _checkpoints(store, name, storage)
        evaluators: dict[str, Evaluator] = {}
        options = _eval_updates(metric, samples, seed, weights)
        plans = [_plan(store, run_id, label, path, step_list, times, heun_steps, bounds, options, evaluators, dev)
                 for run_id, (label, path) in checkpoints.items()]
        for plan in plans:  # every input was checked (and every extractor loaded) before this first write
            rows += _evaluate_run(store, evaluators, dev, *plan)
            if bounds is not None:
                rows += _tune_run(store, evaluators, dev, bounds, tune_iterations, *plan)
    _show(rows, name, json_out)


def _eval_updates(metric: str | None, samples: int | None, seed: int, weights: Path | None) -> dict:
    """The eval-section fields the options override."""
    given = {"metric": metric, "num_samples": samples, "weights": weights}
    return {"seed": seed, **{k: v for k, v in given.items() if v is not None}}


def _plan(store: Store, run_id: str, label: str, path: Path, steps: list[int], times: list[float] | None,
          heun_steps: int | None, bounds: list[float] | None, eval_updates: dict, evaluators: dict[str, Evaluator],
          dev: torch.device) -> tuple:
    """(run id, label, checkpoint, step, eval settings, samplers still to measure) of one run; builds its evaluator
    where something is to be measured."""
    from trainer.checkpoint import load_checkpoint
    from trainer.data import load_dataset
    from trainer.evaluation import Evaluator
    from trainer.sampling import check_mid_times

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
    from trainer.loop import load_model
    from trainer.reporter import NullReporter
    from trainer.sampling import params_json

    rows = [{"label": label, "run_id": run_id, "step": step, "sampler": s.name, "sampler_params": params_json(s),
             "nfe": s.nfe, "value": None, "new": False} for s in samplers if s not in todo]
    if todo:
        net, _, _ = load_model(path, device=str(dev))
        for res in evaluators[key].evaluate_samplers(net, step, NullReporter(), todo):
            store.add_evaluation(run_id, step=step, **res.__dict__)
            rows.append({"label": label, "run_id": run_id, "step": step, "sampler": res.sampler,
                         "sampler_params": res.sampler_params, "nfe": res.nfe, "value": res.value, "new": True})
    return rows


def _tune_run(store: Store, evaluators: dict[str, Evaluator], dev: torch.device, bounds: list[float], iterations: int,
              run_id: str, label: str, path: Path, step: int, key: str, samplers: list[Sampler], todo: list[Sampler],
              cfg: TrainConfig) -> list[dict]:
    """Search t_mid of 2-step sampling on the noise of seed + 1, then measure the tuned sampler on the reported seed's
    noise and store it (skipped where this very search is stored already)."""
    from trainer.loop import load_model
    from trainer.reporter import NullReporter
    from trainer.sampling import ConsistencySampler
    from trainer.schedule_search import TunedSampler, search_mid_time

    ev = cfg.eval
    search = {"method": "golden-section on log t", "range": bounds, "iterations": iterations, "seed": ev.seed + 1,
              "num_samples": ev.num_samples}
    if _tuned_present(store, run_id, step, ev, search):
        return [{"label": label, "run_id": run_id, "step": step, "sampler": "consistency (tuned)",
                 "sampler_params": json.dumps(search), "nfe": 2, "value": None, "new": False}]
    net, _, _ = load_model(path, device=str(dev))
    evaluator = evaluators[key]

    def two_step(t: float) -> ConsistencySampler:
        return ConsistencySampler(2, cfg.sampling.model_copy(update={"mid_times": [t]}))

    t_mid, _ = search_mid_time(lambda t: evaluator.measure(net, two_step(t), seed=ev.seed + 1), bounds[0], bounds[1],
                               iterations, start=cfg.sampling.mid_times[0] if cfg.sampling.mid_times else 0.821)
    (res,) = evaluator.evaluate_samplers(net, step, NullReporter(), [TunedSampler(two_step(t_mid), search)])
    store.add_evaluation(run_id, step=step, **res.__dict__)
    return [{"label": label, "run_id": run_id, "step": step, "sampler": "consistency (tuned)",
             "sampler_params": res.sampler_params, "nfe": 2, "value": res.value, "new": True}]


def _tuned_present(store: Store, run_id: str, step: int, ev: EvalConfig, search: dict) -> bool:
    """Whether a tuned 2-step evaluation from this very search is stored already."""
    from trainer.evaluation import extractor_name

    with store.session() as s:
        params = s.scalars(select(Evaluation.sampler_params).filter_by(
            run_id=run_id, step=step, metric=ev.metric, extractor=extractor_name(ev.metric), sampler="consistency",
            num_samples=ev.num_samples, seed=ev.seed)).all()
    return any(json.loads(p).get("tuned_on") == search for p in params)


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
