"""Dependency scheduling without Ray: the pure queue, the in-process backend on a simulated clock, and
the study driver's bookkeeping in a real SQLite store."""

import signal

import pytest

from orchestrator.backend import InProcessBackend, QueueWork
from orchestrator.scheduling import DependencyQueue, Task
from orchestrator.store import Store
from orchestrator.study_runner import StopRequest, StudyWork, execute, register
from studies.spec import StudySpec

BASE = {
    "data": {"name": "swissroll", "num_samples": 1000},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 12, "log_interval": 4, "checkpoint_interval": 6},
}


def test_child_waits_for_its_parent_and_the_longest_ready_goes_first():
    q = DependencyQueue([Task("p", None, 10), Task("a", "p", 1), Task("b", "p", 5), Task("x", None, 3)])
    assert [t.run_id for t in q.ready()] == ["p", "x"]
    assert q.take().run_id == "p" and q.take().run_id == "x" and q.take() is None
    assert q.end("x", "completed") == {} and q.take() is None  # p still runs: its children wait
    q.end("p", "completed")
    assert [q.take().run_id, q.take().run_id] == ["b", "a"]  # longest first
    assert not q.done()
    q.end("a", "completed"), q.end("b", "failed")
    assert q.done()


def test_a_requeued_task_waits_again_and_is_released_again():
    q = DependencyQueue([Task("p", None, 10), Task("c", "p", 1)])
    assert q.take().run_id == "p"
    q.requeue("p")  # e.g. another driver owned it; now it is this driver's to start
    assert q.in_flight == set() and [t.run_id for t in q.ready()] == ["p"] and not q.done()
    assert q.take().run_id == "p" and q.take() is None
    with pytest.raises(KeyError, match="c is not in flight"):
        q.requeue("c")


def test_take_skips_what_does_not_fit():
    q = DependencyQueue([Task("big", None, 10, gpus=8), Task("small", None, 1, gpus=1)])
    assert q.take(lambda t: t.gpus <= 2).run_id == "small"
    assert q.take(lambda t: t.gpus <= 1) is None and q.take().run_id == "big"


def test_a_failed_or_diverged_parent_blocks_its_descendants_with_an_error():
    q = DependencyQueue([Task("p", None, 10), Task("c", "p", 1), Task("g", "c", 1), Task("q", None, 2)])
    q.take(), q.take()
    blocked = q.end("p", "diverged")
    assert set(blocked) == {"c", "g"} and "p is diverged, not completed" in blocked["c"]
    assert "c is failed" in blocked["g"] and q.status["g"] == "failed"
    q.end("q", "completed")
    assert q.done() and q.take() is None


def test_runs_finished_before_are_never_released_and_their_children_start_at_once():
    q = DependencyQueue([Task("c1", "p", 1), Task("c2", "f", 1)], {"p": "completed", "f": "failed"})
    assert [t.run_id for t in q.ready()] == ["c1"] and set(q.blocked) == {"c2"}


def makespan(tasks, barrier: bool) -> float:
    backend = InProcessBackend(lambda t: ("completed", t.cost), cpus=8, gpus=2)
    stages = [[t for t in tasks if t.parent is None], [t for t in tasks if t.parent]] if barrier else [tasks]
    done = {}
    for stage in stages:
        work = QueueWork(DependencyQueue(stage, done))
        backend.run(work)
        done.update(work.queue.status)
    return backend.now


def test_dependency_scheduling_beats_the_barrier_on_a_known_example():
    # two GPUs; pretraining A lasts 10 s, B 2 s; B's two tuning runs 3 s each, A's one 1 s.
    tasks = [Task("A", None, 10, gpus=1), Task("B", None, 2, gpus=1), Task("b1", "B", 3, gpus=1),
             Task("b2", "B", 3, gpus=1), Task("a1", "A", 1, gpus=1)]
    assert makespan(tasks, barrier=False) == 11  # b1 at 2-5, b2 at 5-8 beside A; a1 at 10-11
    assert makespan(tasks, barrier=True) == 14  # b1, b2 at 10-13 on both GPUs, then a1 at 13-14


def test_a_job_that_can_never_fit_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="can never start"):
        InProcessBackend(lambda t: ("completed", 1), cpus=1, gpus=1).run(QueueWork(DependencyQueue([Task("x", None, 1, gpus=2)])))


def study(tmp_path):
    spec = StudySpec.model_validate({"name": "sched", "kind": "custom", "base": BASE,
                                     "pretrain": {"overrides": {}, "inherit": ["network.hidden"]},
                                     "grid": {"network.hidden": [8, 16], "ect.q": [2, 4]}})
    store = Store(f"sqlite:///{tmp_path / 'ect.db'}")
    runs, _ = register(store, spec)
    return spec, store, runs


def test_driver_records_attempts_statuses_and_blocks_children_of_a_failed_pretraining(tmp_path):
    spec, store, runs = study(tmp_path)
    pre = {r.run_id: r for r in runs if r.role == "pretrain"}
    bad = min(pre)

    def run(job):
        if job.run_id in pre:
            store.update_run(job.run_id, checkpoint=f"/ckpt/{job.run_id}")
        else:
            assert job.init == f"/ckpt/{store.run(job.run_id).depends_on}"  # starts from its parent's checkpoint
        return ("failed" if job.run_id == bad else "completed"), 1.0

    counts = execute(store, spec, tmp_path / "store", InProcessBackend(run, cpus=2))
    frame = store.runs_frame("sched").set_index("run_id")
    children = [r.run_id for r in runs if r.depends_on == bad]
    assert counts == {"completed": 3, "failed": 3} and store.study("sched").status == "incomplete"
    assert all(f"{bad} is failed" in frame.loc[c, "error"] for c in children)
    assert (frame.loc[children, "attempts"] == 0).all()
    again = execute(store, spec, tmp_path / "store", InProcessBackend(run, cpus=2))
    assert again == counts  # completed runs are never re-run; the failed pretraining fails again
    assert frame.drop(index=[bad, *children])["attempts"].eq(1).all()


def test_a_signal_marks_the_started_runs_and_the_study_interrupted(tmp_path):
    spec, store, runs = study(tmp_path)
    stop = StopRequest()

    started = []

    def run(job):
        started.append(job.run_id)
        if len(started) == 2:
            stop.set("interrupted", signal.SIGTERM)  # as the handler does, while the first two runs train
        return "completed", 5.0

    counts = execute(store, spec, tmp_path / "store", InProcessBackend(run, cpus=2), stop)
    assert counts == {"interrupted": 2, "pending": 4} and stop.exit_code == 143
    assert {store.run(r).status for r in started} == {"interrupted"}
    assert store.study("sched").status == "interrupted"


def test_the_driver_notices_a_cancel_in_the_store_at_its_next_poll(tmp_path):
    spec, store, runs = study(tmp_path)
    now = [0.0]
    work = StudyWork(store, spec, runs, tmp_path / "store", StopRequest(), clock=lambda: now[0])
    assert work.poll() is None
    store.cancel_study("sched")
    now[0] = 1.0
    assert work.poll() is None  # polls the store every POLL_SECONDS only
    now[0] = 2.5
    assert work.poll() == "cancelled" and work.take(lambda c, g: True) is None
