"""Submitting a study: register its runs in the store, then run what is not finished, in stages.

Pretraining runs go first; a tuning run starts from its pretraining run's checkpoint. Finished runs
(completed or diverged) are never re-run; runs left `running` by a dead driver, failed or cancelled
runs are run again and resume from their own checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from studies.spec import RunSpec, StudySpec, dump_spec, expand
from trainer.checkpoint import CHECKPOINT_NAME

from .ray_backend import Job, run_jobs
from .store import FINISHED, Store, StoreError


def run_dir(storage: Path, run_id: str) -> Path:
    """Each run's directory: `<storage>/runs/<run id>`; run ids are hex digests, so it stays inside."""
    return storage.resolve() / "runs" / run_id


def adopt_run_dir(store: Store, storage: Path, run_id: str) -> Path:
    """The run's directory; one still named by a former id (store migration 0003) is renamed to it, and a stored
    checkpoint path that no longer exists (storage moved or renamed) is pointed at the directory's checkpoint."""
    target = run_dir(storage, run_id)
    run = store.run(run_id)
    if not target.exists():
        own = [Path(run.checkpoint).parent] if run.checkpoint else []
        former = own + [run_dir(storage, old) for old in store.former_ids(run_id)]
        source = next((p for p in former if p.parent == target.parent and p.is_dir()), None)
        if source is not None:
            source.rename(target)
    checkpoint = target / CHECKPOINT_NAME
    if run.checkpoint and run.checkpoint != str(checkpoint) and not Path(run.checkpoint).exists() \
            and checkpoint.is_file():
        store.update_run(run_id, checkpoint=str(checkpoint))
    return target


def register(store: Store, spec: StudySpec) -> tuple[list[RunSpec], list[str]]:
    runs = expand(spec)
    return runs, store.register_study(spec, dump_spec(spec), runs)


def plan(store: Store | None, spec: StudySpec) -> list[dict[str, Any]]:
    """What a submission would do, without writing: each run with its stored status (or 'new')."""
    out = []
    for r in expand(spec):
        try:
            status = store.run(r.run_id).status if store is not None else "new"
        except StoreError:
            status = "new"
        out.append({"run_id": r.run_id, "label": r.label, "role": r.role, "status": status,
                    "iterations": r.config.schedule.iterations, "batch_size": r.config.schedule.batch_size})
    return out


def _jobs(store: Store, runs: list[RunSpec], storage: Path) -> tuple[list[Job], list[str]]:
    """Jobs for the runs still to do; runs whose starting checkpoint is unavailable are failed instead."""
    jobs, blocked = [], []
    for r in runs:
        if store.run(r.run_id).status in FINISHED:
            continue
        init = None
        if r.depends_on is not None:
            parent = store.run(r.depends_on)
            if parent.status != "completed" or not parent.checkpoint:
                store.update_run(r.run_id, status="failed",
                                 error=f"its pretraining run {r.depends_on} is {parent.status}, not completed")
                blocked.append(r.run_id)
                continue
            adopt_run_dir(store, storage, r.depends_on)
            init = store.run(r.depends_on).checkpoint
        jobs.append(Job(run_id=r.run_id, label=r.label, config=r.config.model_dump_json(),
                        run_dir=str(adopt_run_dir(store, storage, r.run_id)), init=init,
                        cpus=r.resources.cpus, gpus=r.resources.gpus))
    return jobs, blocked


def execute(store: Store, spec: StudySpec, storage: Path,
            on_change: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, int]:
    """Run every unfinished run of a registered study; returns a count of runs per final status."""
    runs = expand(spec)
    store.set_study_status(spec.name, "running")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for role in ("pretrain", "tune", "run"):
        # longest first: with several runs at a time, the last to start is then a short one
        stage_runs = sorted((r for r in runs if r.role == role),
                            key=lambda r: -r.config.schedule.iterations * r.config.schedule.batch_size)
        jobs, _ = _jobs(store, stage_runs, storage)
        run_jobs(jobs, store, storage, f"{spec.name}-{role}-{stamp}", spec.max_failures, on_change)
        for job in jobs:  # a trial that ended without its final report (e.g. its worker died for good)
            if store.run(job.run_id).status == "running":
                store.update_run(job.run_id, status="failed", error="trial ended without a final report")
    counts: dict[str, int] = {}
    for r in runs:
        status = store.run(r.run_id).status
        counts[status] = counts.get(status, 0) + 1
    store.set_study_status(spec.name, "completed" if set(counts) <= set(FINISHED) else "incomplete")
    return counts
