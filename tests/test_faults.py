"""Faults with real processes: a killed driver and a lost Ray node (on the 2-node cluster of
tests/cluster_scenario.py, in its own PID and network namespaces, so every process they start is gone when
it ends), and a checkpoint write killed half-way."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from trainer.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.slow


@pytest.mark.xdist_group("two-node-cluster")  # with tests/test_jobs.py: one worker runs them, one cluster
def test_driver_crash_then_resume_loses_no_run(cluster_run):
    r = cluster_run["faults"]
    assert r["resume_rc"] == 0
    after = {x["run_id"]: x for x in r["after"]}
    assert len(after) == 3 and all(x["status"] == "completed" and x["step"] == 400 for x in after.values())
    interrupted = [x for x in r["at_crash"] if x["status"] == "running"]
    assert any(x["checkpoint"] for x in interrupted)
    for x in interrupted:
        again = after[x["run_id"]]
        assert again["attempts"] >= x["attempts"] + 1  # one more again for the run on the node lost later
        if x["checkpoint"]:  # from its checkpoint, not step 0 (a run started just before the kill may have none yet)
            assert again["resumed_from"] and again["resumed_from"][0] >= 40, (x, again)
    finished_before = [x for x in r["at_crash"] if x["status"] == "completed"]
    for x in finished_before:
        assert after[x["run_id"]]["attempts"] == x["attempts"]  # never re-run


@pytest.mark.xdist_group("two-node-cluster")
def test_node_loss_retries_from_checkpoint(cluster_run):
    r = cluster_run["faults"]
    assert r["worker_raylets"] and r["killed"] > len(r["worker_raylets"]), "the worker node was not found"
    after = {x["run_id"]: x for x in r["after"]}
    at_loss = {x["run_id"]: x for x in r["at_node_loss"]}
    running = [x for x in at_loss.values() if x["status"] == "running"]
    assert len(running) == 2  # one on each node
    retried = [x for x in running if after[x["run_id"]]["attempts"] > x["attempts"]]
    assert len(retried) == 1, (at_loss, after)  # the lost node's run, once; the head's run went on
    again = after[retried[0]["run_id"]]
    assert again["attempts"] == retried[0]["attempts"] + 1 and again["status"] == "completed"
    assert max(again["resumed_from"]) >= retried[0]["step"] - 40  # the last checkpoint before the loss


def test_checkpoint_write_killed_midway_keeps_the_previous_one(tmp_path):
    """A real process SIGKILLed while it writes a large checkpoint: the old file still loads."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(4)})
    code = (
        "import torch, sys; from trainer.checkpoint import save_checkpoint; "
        "save_checkpoint(sys.argv[1], {'step': 2, 'w': torch.randn(64, 1024, 1024)})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
    deadline = time.time() + 600  # a generous limit: importing torch on a loaded machine can take minutes
    writing = False
    while not writing and time.time() < deadline and proc.poll() is None:
        writing = any(p.name.startswith(".checkpoint.pt.tmp") and p.stat().st_size > 1 << 20 for p in tmp_path.iterdir())
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert writing, "the writer was not caught half-way through its checkpoint"
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(4))
