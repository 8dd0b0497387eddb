"""Checking a study's stored checkpoints against the store (`ect study verify`), and setting damaged
runs up to be trained again (`ect study resume`).

A run directory holds ONE rolling checkpoint (trainer/loop.py), so a run whose checkpoint no longer
loads has no earlier good checkpoint: `resume` moves the damaged file aside (`checkpoint.pt.damaged`)
and trains the run again from its start — from scratch, or for a tuning run from its pretraining
run's checkpoint. Training is deterministic on a CPU, so the re-run reproduces the lost run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from trainer.checkpoint import CheckpointError, load_checkpoint

from .store import Store

DAMAGED_SUFFIX = ".damaged"


@dataclass(frozen=True)
class CheckpointCheck:
    """One run's checkpoint as found on disk: `problem` is None when it loads and agrees with the store."""

    run_id: str
    label: str
    status: str
    path: str | None
    store_step: int
    file_step: int | None
    problem: str | None


def check_run(run_id: str, label: str, status: str, path: str | None, store_step: int) -> CheckpointCheck:
    """Load the run's checkpoint (weights only) and compare the step it holds with the store's (finished runs)."""
    def result(file_step: int | None, problem: str | None) -> CheckpointCheck:
        return CheckpointCheck(run_id, label, status, path, store_step, file_step, problem)

    if not path:
        return result(None, "no checkpoint recorded for a completed run" if status == "completed" else None)
    if not Path(path).is_file():
        return result(None, f"{path}: file not found")
    try:
        step = int(load_checkpoint(Path(path))["step"])
    except (CheckpointError, KeyError, TypeError, ValueError) as e:
        return result(None, str(e) if isinstance(e, CheckpointError) else f"{path}: no step in the checkpoint")
    if status == "completed" and step != store_step:
        return result(step, f"{path}: holds step {step}, the store says {store_step}")
    return result(step, None)


def verify_study(store: Store, study: str) -> list[CheckpointCheck]:
    """Every run of the study that has (or, completed, should have) a checkpoint, checked."""
    runs = store.runs_frame(study).drop_duplicates("run_id")
    checks = []
    for r in runs.itertuples():
        path = None if pd.isna(r.checkpoint) else str(r.checkpoint)
        if path is None and r.status != "completed":
            continue
        step = 0 if pd.isna(r.step) else int(r.step)
        checks.append(check_run(r.run_id, r.label, r.status, path, step))
    return checks


def damaged(checks: list[CheckpointCheck]) -> list[CheckpointCheck]:
    return [c for c in checks if c.problem is not None]


def damaged_runs(store: Store, study: str, note: Callable[[str], None]) -> list[CheckpointCheck]:
    """The study's runs whose checkpoint is damaged, each noted in one line (for reports, which leave them
    out of whatever needs the checkpoint instead of failing)."""
    bad = damaged(verify_study(store, study))
    for c in bad:
        note(f"note: run {c.label} ({c.run_id}) is damaged and left out of the sample grids: {c.problem}")
    return bad


def reset_damaged(store: Store, study: str) -> list[CheckpointCheck]:
    """Move each damaged checkpoint aside and mark its run failed, so that the next submission trains it
    again from its start (see the module docstring); returns the runs reset."""
    bad = damaged(verify_study(store, study))
    for c in bad:
        if c.path and Path(c.path).is_file():
            os.replace(c.path, c.path + DAMAGED_SUFFIX)
        store.update_run(c.run_id, status="failed", checkpoint=None,
                         error=f"checkpoint damaged ({c.problem}); trained again from its start")
    return bad
