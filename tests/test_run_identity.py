"""A run is what determines its weights: run ids and resume ignore evaluation, device, GPU options and paths;
stores and run directories written before (ids over the whole config) are re-keyed by migration 0003."""

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import torch
from sqlalchemy import MetaData, create_engine, insert

from orchestrator.store import Store
from orchestrator.study_runner import StopRequest, StudyWork
from studies.spec import StudySpec, apply_overrides, expand, run_id_of
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.loop import SetupError, train
from trainer.reporter import RecordingReporter

from test_store_shared import upgrade_to

THEN = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)
TINY = {
    "data": {"name": "swissroll", "num_samples": 256},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 4, "log_interval": 1, "checkpoint_interval": 2},
}
NOT_WEIGHTS = {
    "eval.num_samples": 64, "eval.metric": "swd", "eval.nfe": [1, 3], "eval.seed": 5, "eval.cache_dir": "/elsewhere",
    "sampling.mid_times": [1.5, 0.5], "device": "cpu", "gpu.tf32": False, "gpu.compile": True, "gpu.channels_last": True,
    "schedule.batch_per_device": 16, "schedule.log_interval": 3, "schedule.eval_interval": 2,
    "schedule.checkpoint_interval": 1,
}
WEIGHTS = {"ect.q": 4.0, "seed": 1, "network.hidden": 32, "schedule.iterations": 5, "schedule.batch_size": 16,
           "optim.lr": 1e-3, "ema.beta": 0.9, "data.noise": 0.1, "precision": "bf16"}


def tiny(**over) -> TrainConfig:
    return apply_overrides(TrainConfig.model_validate(TINY), over)


@pytest.mark.parametrize("key", sorted(NOT_WEIGHTS))
def test_settings_that_do_not_determine_weights_keep_the_run_id(key):
    assert run_id_of(tiny(**{key: NOT_WEIGHTS[key]}), "p") == run_id_of(tiny(), "p")


@pytest.mark.parametrize("key", sorted(WEIGHTS))
def test_settings_that_determine_weights_change_the_run_id(key):
    assert run_id_of(tiny(**{key: WEIGHTS[key]}), None) != run_id_of(tiny(), None)


def test_init_counts_by_run_id_and_data_by_content_not_location():
    assert run_id_of(tiny(), "parent-a") != run_id_of(tiny(), "parent-b") != run_id_of(tiny(), None)
    base = TrainConfig.model_validate({"data": {"name": "cifar10", "path": "/mnt/a/cifar-10-python.tar.gz"}})
    moved = apply_overrides(base, {"data.path": "/scratch/b/cifar-10-batches-py"})
    assert run_id_of(base, None) == run_id_of(moved, None)
    folder = apply_overrides(base, {"data.name": "image_folder", "data.path": "/mnt/a/ffhq.zip"})
    assert run_id_of(folder, None) == run_id_of(apply_overrides(folder, {"data.path": "/b/ffhq.zip"}), None)
    assert run_id_of(folder, None) != run_id_of(apply_overrides(folder, {"data.path": "/mnt/a/afhq.zip"}), None)


def _interrupted(cfg: TrainConfig, run_dir: Path, at: int) -> None:
    class Crash(RecordingReporter):
        def checkpoint(self, step, path):
            if step == at:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir, Crash())


def test_resume_ignores_settings_that_do_not_determine_weights(tmp_path):
    cfg = tiny(**{"eval.metric": "swd", "eval.num_samples": 64})
    straight = load_checkpoint(train(cfg, tmp_path / "straight").checkpoint)
    _interrupted(cfg, tmp_path / "run", 2)
    changed = apply_overrides(cfg, {k: v for k, v in NOT_WEIGHTS.items() if k != "schedule.batch_per_device"})
    rep = RecordingReporter()
    result = train(changed, tmp_path / "run", rep)
    assert result.status == "completed" and rep.metric_rows[0] == (2, {"resumed_from": 2.0})
    resumed = load_checkpoint(result.checkpoint)
    assert all(torch.equal(straight["net"][k], resumed["net"][k]) for k in straight["net"])
    _interrupted(cfg, tmp_path / "micro", 2)  # micro-batching changes float rounding only: the run resumes
    assert train(apply_overrides(cfg, {"schedule.batch_per_device": 8}), tmp_path / "micro").status == "completed"
    _interrupted(cfg, tmp_path / "seed", 2)
    with pytest.raises(SetupError, match="different config"):  # a CheckpointError, found before the first step
        train(apply_overrides(cfg, {"seed": 3}), tmp_path / "seed")


def test_resume_checks_the_init_weights_not_their_path(tmp_path):
    parent = train(tiny(), tmp_path / "parent").checkpoint
    moved = tmp_path / "moved" / "weights.pt"
    moved.parent.mkdir()
    moved.write_bytes(parent.read_bytes())
    _interrupted(tiny(init=str(parent)), tmp_path / "child", 2)
    rep = RecordingReporter()
    assert train(tiny(init=str(moved)), tmp_path / "child", rep).status == "completed"
    assert rep.metric_rows[0] == (2, {"resumed_from": 2.0})
    other = train(tiny(seed=7), tmp_path / "other").checkpoint
    _interrupted(tiny(init=str(parent)), tmp_path / "child2", 2)
    with pytest.raises(SetupError, match="different config"):  # a CheckpointError, found before the first step
        train(tiny(init=str(other)), tmp_path / "child2")
    with pytest.raises(SetupError, match="different config"):  # a CheckpointError, found before the first step
        train(tiny(), tmp_path / "child2")


# --------------------------------------------------------------------------- a store written before 0003


def legacy_run_id(config: TrainConfig, depends_on: str | None) -> str:
    """How run ids were computed up to store revision 0002: a hash of the whole config."""
    payload = json.dumps({"config": json.loads(config.model_dump_json()), "init_run": depends_on}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def spec_of(name: str, **base_over) -> StudySpec:
    return StudySpec.model_validate({
        "name": name, "base": {**TINY, "eval": {"metric": "swd", "num_samples": 64, **base_over}},
        "pretrain": {"overrides": {"schedule.iterations": 4}}, "variants": [{"label": "a"}],
    })


def write_legacy_store(url: str, storage: Path) -> dict[str, dict[str, str]]:
    """A 0002 store and run directories as the code before 0003 left them: study `one` (pretraining completed, its
    tuning run interrupted at step 2) and study `two`, the same runs with another eval.num_samples (so other ids),
    never run. Returns {study: {role: legacy id}}."""
    upgrade_to(url, "0002")
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    t = meta.tables
    ids: dict[str, dict[str, str]] = {}
    with engine.begin() as conn:
        for spec, done in ((spec_of("one"), True), (spec_of("two", num_samples=32), False)):
            conn.execute(insert(t["studies"]).values(name=spec.name, kind="custom", description="", spec_yaml="",
                                                     status="incomplete", created_at=THEN))
            old = ids[spec.name] = {}
            for r in expand(spec):
                rid = old[r.role] = legacy_run_id(r.config, old.get("pretrain") if r.role == "tune" else None)
                status, step, checkpoint = "pending", 0, None
                if done:
                    checkpoint = _legacy_run_dir(r, storage / "runs" / rid, storage / "runs" / old["pretrain"])
                    status, step = ("completed", 4) if r.role == "pretrain" else ("running", 2)
                conn.execute(insert(t["runs"]).values(
                    run_id=rid, label=r.label, role=r.role, status=status, attempts=int(done),
                    config_json=r.config.to_json(), depends_on=old["pretrain"] if r.role == "tune" else None,
                    created_at=THEN, step=step, total_steps=4, checkpoint=checkpoint))
                conn.execute(insert(t["study_runs"]).values(study=spec.name, run_id=rid, label=r.label))
                conn.execute(insert(t["metrics"]).values(run_id=rid, step=1, name="loss", value=float(done)))
                conn.execute(insert(t["evaluations"]).values(
                    run_id=rid, step=4, nfe=1, metric="swd", value=float(done), extractor="points",
                    num_samples=spec.base.eval.num_samples, sampler="consistency"))
    engine.dispose()
    return ids


def _legacy_run_dir(r, run_dir: Path, parent_dir: Path) -> str:
    """Train (pretraining) or interrupt at step 2 (tuning) as the driver did, with the checkpoint of that time."""
    cfg = r.config if r.role == "pretrain" else r.config.model_copy(update={"init": parent_dir / CHECKPOINT_NAME})
    if r.role == "pretrain":
        train(cfg, run_dir)
    else:
        _interrupted(cfg, run_dir, 2)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    del state["init_digest"], state["format"]  # checkpoints of that time had no init digest
    save_checkpoint(run_dir / CHECKPOINT_NAME, state)
    return str(run_dir / CHECKPOINT_NAME)


def test_a_store_and_run_dirs_from_before_are_found_under_the_new_ids(store_url, tmp_path):
    old_storage, new_storage = tmp_path / "old-mount", tmp_path / "new-mount"
    legacy = write_legacy_store(store_url, old_storage)
    store = Store(store_url, create=False)
    assert store.migrated_from == "0002"
    runs = expand(spec_of("one", num_samples=128, nfe=[1]))  # resubmitted with other evaluation settings
    pre, tune = runs
    assert [r.run_id for r in runs] == [r.run_id for r in expand(spec_of("two", num_samples=32))]
    for r in runs:
        stored = store.run(r.run_id)
        assert store.former_ids(r.run_id) == sorted([legacy["one"][r.role], legacy["two"][r.role]])
        assert legacy["one"][r.role] in stored.checkpoint  # the kept row is the advanced one
    assert store.run(tune.run_id).depends_on == pre.run_id and store.run(pre.run_id).status == "completed"
    both = store.runs_frame()
    assert sorted(both["study"]) == ["one", "one", "two", "two"] and both["run_id"].nunique() == 2
    assert store.evaluations_frame("two")["value"].tolist() == [1.0, 1.0]  # the kept run's evaluations won
    evals = store.evaluations_frame("one")  # their sampler parameters and seed, from the runs' configs
    assert [json.loads(p) for p in evals["sampler_params"]] == [{"steps": 1, "sigma_max": 80.0, "mid_times": []}] * 2
    assert evals["seed"].tolist() == [0, 0]
    assert store.metrics_frame(tune.run_id)["loss"].tolist() == [1.0]

    old_storage.rename(new_storage)  # --storage on another mount: stored checkpoint paths are stale now
    work = StudyWork(store, spec_of("one", num_samples=128, nfe=[1]), runs, new_storage, StopRequest())
    job = work.take(lambda cpus, gpus: True)
    assert job is not None and job.run_id == tune.run_id  # the completed pretraining is not re-run
    assert work.take(lambda cpus, gpus: True) is None and work.queue.blocked == {}
    assert job.init == str(new_storage / "runs" / pre.run_id / CHECKPOINT_NAME) == store.run(pre.run_id).checkpoint
    assert Path(job.run_dir) == new_storage / "runs" / tune.run_id and Path(job.init).is_file()
    assert sorted(p.name for p in (new_storage / "runs").iterdir()) == sorted([pre.run_id, tune.run_id])
    rep = RecordingReporter()
    cfg = TrainConfig.from_json(job.config).model_copy(update={"init": Path(job.init)})
    result = train(cfg, Path(job.run_dir), rep)
    assert result.status == "completed" and rep.metric_rows[0] == (2, {"resumed_from": 2.0})


def test_compute_accounting_adds_the_init_chain(tmp_path):
    from orchestrator.study_frames import study_frame
    from orchestrator.study_runner import register

    store = Store(f"sqlite:///{tmp_path / 'ect.db'}")
    pre, tune = register(store, spec_of("one"))[0]
    store.update_run(pre.run_id, status="completed", train_flops=1.0e12)
    frame = study_frame(store, "one").set_index("role")
    assert frame.loc["tune", "init_chain_flops"] == 1.0e12 and frame.loc["pretrain", "init_chain_flops"] == 0.0
    assert pd.isna(frame.loc["tune", "total_flops"])  # the tuning run has no count of its own yet
    assert frame.loc["pretrain", "total_flops"] == 1.0e12
    store.update_run(tune.run_id, status="completed", train_flops=2.5e11)
    frame = study_frame(store, "one").set_index("role")
    assert frame.loc["tune", "total_flops"] == 1.25e12 and frame.loc["pretrain", "total_flops"] == 1.0e12
    run = store.run(tune.run_id)  # recorded with the run, not only computed for the frame
    assert (run.train_flops, run.init_chain_flops, run.total_flops) == (2.5e11, 1.0e12, 1.25e12)
    store.update_run(tune.run_id, flops_per_sample=3.0e6)  # sampling cost per image: NFE x forward FLOPs
    store.add_evaluation(tune.run_id, step=4, nfe=2, metric="swd", value=0.5, extractor="points", num_samples=64)
    assert store.evaluations_frame("one")["sampling_flops"].tolist() == [6.0e6]


def test_a_store_at_0003_gains_compute_accounting_filled_from_its_rows(store_url):
    """Migration 0004: each run's init-chain and total FLOPs, each evaluation's sampling FLOPs per image."""
    upgrade_to(store_url, "0003")
    engine = create_engine(store_url)
    meta = MetaData()
    meta.reflect(engine)
    t = meta.tables
    runs = {"pre": (1.0e12, None, 5.0e6), "tune": (2.5e11, "pre", 5.0e6), "late": (None, "pre", None),
            "grandchild": (1.0e11, "tune", 5.0e6)}
    with engine.begin() as conn:
        conn.execute(insert(t["studies"]).values(name="one", kind="custom", description="", spec_yaml="",
                                                 status="completed", created_at=THEN))
        for rid, (flops, parent, per_sample) in runs.items():
            conn.execute(insert(t["runs"]).values(
                run_id=rid, label=rid, role="pretrain" if parent is None else "tune", status="completed", attempts=1,
                config_json="{}", depends_on=parent, created_at=THEN, step=4, total_steps=4, train_flops=flops,
                flops_per_sample=per_sample))
            conn.execute(insert(t["study_runs"]).values(study="one", run_id=rid, label=rid))
            conn.execute(insert(t["evaluations"]).values(
                run_id=rid, step=4, nfe=2, metric="swd", value=1.0, extractor="points", num_samples=64,
                sampler="consistency", sampler_params="{}", seed=0))
    engine.dispose()
    store = Store(store_url, create=False)
    assert store.migrated_from == "0003"
    got = {rid: (store.run(rid).init_chain_flops, store.run(rid).total_flops) for rid in runs}
    assert got == {"pre": (0.0, 1.0e12), "tune": (1.0e12, 1.25e12), "late": (1.0e12, None),
                   "grandchild": (1.25e12, 1.35e12)}
    evals = store.evaluations_frame("one").set_index("run_id")["sampling_flops"]
    assert evals["pre"] == 1.0e7 and evals["tune"] == 1.0e7 and pd.isna(evals["late"])
