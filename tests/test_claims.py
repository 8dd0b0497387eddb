"""Run claims between drivers that share a store: two studies' `StudyWork`s on one SQLite store, driven
by hand (no Ray), and two real `ect study run` drivers that start overlapping studies at the same moment."""

import itertools
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from orchestrator.backend import InProcessBackend
from orchestrator.store import STALE_SECONDS, Store, database_url, now
from orchestrator.study_runner import POLL_SECONDS, WATCHING, StopRequest, StudyWork, execute, register
from studies.spec import StudySpec, expand

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "data": {"name": "swissroll", "num_samples": 1000},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 12, "log_interval": 4, "checkpoint_interval": 6},
}


def spec_of(name: str, q: list[int], hidden: tuple[int, ...] = (8,)) -> StudySpec:
    """A study whose pretraining per width is shared with any other study of that width (same config)."""
    return StudySpec.model_validate({"name": name, "kind": "custom", "base": BASE,
                                     "pretrain": {"overrides": {}, "inherit": ["network.hidden"]},
                                     "grid": {"network.hidden": list(hidden), "ect.q": q}})


class Driver:
    """One driver's `StudyWork` on the shared store, with a clock that lets every `poll` read the store."""

    def __init__(self, store: Store, tmp_path: Path, spec: StudySpec, stop: StopRequest | None = None) -> None:
        self.spec, self.changes = spec, []
        self.runs, _ = register(store, spec)
        self.work = StudyWork(store, spec, self.runs, tmp_path / "store", stop or StopRequest(),
                              on_change=lambda rid, info: self.changes.append((rid, info)),
                              clock=itertools.count(0, POLL_SECONDS).__next__)

    def take(self):
        job = self.work.take(lambda cpus, gpus: True)
        if job is not None:
            self.work.started(job.run_id)
        return job

    def pre(self) -> str:
        return next(r.run_id for r in self.runs if r.role == "pretrain")

    def tuning(self) -> set[str]:
        return {r.run_id for r in self.runs if r.role != "pretrain"}


@pytest.fixture
def two(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'ect.db'}")
    a, b = Driver(store, tmp_path, spec_of("a", [2])), Driver(store, tmp_path, spec_of("b", [4]))
    assert a.pre() == b.pre() and not a.tuning() & b.tuning()  # one shared pretraining, own tuning runs
    return store, a, b


def test_a_run_another_driver_owns_is_watched_then_ends_here_when_it_completes(two):
    store, a, b = two
    pre = a.pre()
    assert a.take().run_id == pre and a.work.owner != b.work.owner
    assert b.take() is None and b.work.watched == {pre} and not b.work.done()
    assert (pre, {"status": WATCHING}) in b.changes
    assert store.claims([pre])[pre].owner == a.work.owner
    assert b.work.poll() is None and b.work.watched == {pre}  # a live owner keeps it
    store.update_run(pre, checkpoint="/ckpt/pre")
    a.work.ended(pre, "completed", {})
    assert store.claims([pre])[pre].owner is None  # released after its final status
    b.work.poll()
    assert b.work.watched == set() and (pre, {"status": "completed", "step": 0}) in b.changes
    job = b.take()
    assert job.run_id in b.tuning() and job.init == "/ckpt/pre"
    run = store.run(pre)
    assert run.status == "completed" and run.attempts == 1  # trained once, by a


def test_a_run_finished_between_its_release_and_its_claim_is_not_run_again(two):
    store, a, b = two
    pre = a.pre()
    assert a.take().run_id == pre  # b's queue was built while pre was still to run
    store.update_run(pre, checkpoint="/ckpt/pre")
    a.work.ended(pre, "completed", {})
    job = b.take()  # b claims pre, sees it completed, ends it here and goes on to its child
    assert job.run_id in b.tuning() and store.run(pre).attempts == 1
    assert store.claims([pre])[pre].owner is None and b.work.watched == set()


def test_a_run_whose_owner_went_silent_is_taken_over(two):
    store, a, b = two
    pre = a.pre()
    a.take()
    assert b.take() is None
    store.update_run(pre, heartbeat_at=now() - timedelta(seconds=STALE_SECONDS + 30))  # a stopped beating
    b.work.poll()
    assert b.work.watched == set() and store.claims([pre])[pre].owner == b.work.owner
    assert b.take().run_id == pre and store.run(pre).attempts == 2  # b resumes it: its second attempt
    a.work.poll()  # a was only slow: its next heartbeat learns that b owns the run now
    lost = [info for rid, info in a.changes if rid == pre and "error" in info]
    assert len(lost) == 1 and f"taken over by driver {b.work.owner}" in lost[0]["error"]
    a.work.poll()
    assert len([info for rid, info in a.changes if rid == pre and "error" in info]) == 1  # reported once


def test_a_watched_run_that_failed_is_run_here_and_one_that_diverged_blocks_its_children(two, tmp_path):
    store, a, b = two
    c = Driver(store, tmp_path, spec_of("c", [3]))  # a third study with the same pretraining
    pre = a.pre()
    a.take()
    assert b.take() is None and c.take() is None
    a.work.ended(pre, "failed", {"message": "boom"})
    b.work.poll()  # a let it go unfinished: b claims it and runs it again, as a later submission would
    c.work.poll()  # c was a moment late: b owns it now, c watches b
    assert b.take().run_id == pre and store.run(pre).attempts == 2 and b.take() is None
    assert c.work.watched == {pre} and store.claims([pre])[pre].owner == b.work.owner
    b.work.ended(pre, "diverged", {})
    c.work.poll()
    assert c.work.done() and store.run(pre).status == "diverged" and store.run(pre).attempts == 2
    child = c.tuning().pop()
    assert store.run(child).status == "failed" and f"{pre} is diverged" in store.run(child).error


def test_a_stopped_driver_releases_its_runs_and_leaves_the_watched_ones_alone(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'ect.db'}")
    b = Driver(store, tmp_path, spec_of("b", [4]))
    shared = b.take().run_id
    a_spec = spec_of("a", [2], hidden=(8, 16))  # width 8 shares b's pretraining, width 16 is a's own
    stop = StopRequest()

    def run(job):
        stop.set("interrupted", signal.SIGTERM)  # a signal while a's own pretraining trains
        return "completed", 1.0

    register(store, a_spec)
    counts = execute(store, a_spec, tmp_path / "store", InProcessBackend(run, cpus=4), stop)
    own = next(r for r in expand(a_spec) if r.role == "pretrain" and r.run_id != shared).run_id
    assert store.run(own).status == "interrupted" and store.claims([own])[own].owner is None
    assert store.run(shared).status == "running" and store.claims([shared])[shared].owner == b.work.owner
    assert counts["interrupted"] == 1


# ----------------------------------------------------------------------------- two real drivers

DRIVER_BASE = {
    "data": {"name": "swissroll", "num_samples": 1000},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 1000, "log_interval": 250, "checkpoint_interval": 500},
}


def driver(tmp_path: Path, *args: str) -> subprocess.Popen:
    """`ect ARGS` as a driver process in its own session (it joins the Ray given by `--address`)."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.slow
def test_two_drivers_of_overlapping_studies_train_each_shared_run_once(tmp_path, ray_session):
    import ray

    # two drivers on one cluster, as a submitted job and a foreground run would be (the session's 2-CPU Ray)
    address = ray.get_runtime_context().gcs_address
    db, storage = str(tmp_path / "ect.db"), str(tmp_path / "store")
    files = []
    for name, steps in (("left", 40), ("right", 60)):  # one shared pretraining, one tuning run each
        spec = {"name": name, "kind": "custom", "base": DRIVER_BASE, "max_failures": 0,
                "pretrain": {"overrides": {}, "inherit": []},
                "variants": [{"label": f"tune{steps}", "overrides": {"schedule.iterations": steps}}]}
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(spec))
    Store(database_url(db))  # the store exists before both drivers register their studies in it
    procs = [driver(tmp_path, "study", "run", str(f), "--db", db, "--storage", storage, "--address", address)
             for f in files]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=400))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stdout + stderr
    store = Store(database_url(db))
    left, right = store.runs_frame("left").set_index("label"), store.runs_frame("right").set_index("label")
    pre = set(left["run_id"]) & set(right["run_id"])
    assert len(pre) == 1
    pre = pre.pop()
    runs = store.runs_frame().drop_duplicates("run_id").set_index("run_id")
    assert (runs["status"] == "completed").all() and (runs["attempts"] == 1).all(), runs[["status", "attempts"]]
    assert store.study("left").status == store.study("right").status == "completed"
    assert runs["owner"].isna().all()  # every claim released
    # one trainer: exactly one driver started the shared run (its Tune trial); the other watched it or, where
    # the first finished it before the second got to it (an idle fast machine), found it finished
    trials = [p for p in (Path(storage) / "ray").glob(f"*/*-{pre[:8]}")]
    assert len(trials) == 1, trials
    started = [any(f"({pre[:8]}): running" in ln for ln in out.splitlines()) for out, _ in outs]
    watched = [any(f"({pre[:8]}): {WATCHING}" in ln for ln in out.splitlines()) for out, _ in outs]
    assert sorted(started) == [False, True] and not any(w and s for w, s in zip(watched, started)), outs
    assert [d.name for d in (Path(storage) / "runs").iterdir()].count(pre) == 1
