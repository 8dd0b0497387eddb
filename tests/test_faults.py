"""Faults with real processes (see tests/fault_scenarios.py): a killed driver, a lost Ray node,
a checkpoint write killed half-way. Each scenario runs in its own PID and network namespace, so
every process it starts is gone when it ends."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import load_checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow

needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode,
    reason="needs unshare with PID and network namespaces (root or user namespaces)",
)


def scenario(name: str) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"ect-{name}-", dir="/tmp"))
    proc = subprocess.Popen(["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child",
                             sys.executable, str(HERE / "fault_scenarios.py"), name, str(workdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=3 * 600 + 300)  # three waits of fault_scenarios.WAIT_S at most
    finally:
        if proc.poll() is None:  # the namespace's processes all die with its PID 1
            proc.kill()
            proc.wait()
    result_file = workdir / "result.json"
    if not result_file.exists():
        logs = "".join(p.read_text()[-3000:] for p in workdir.glob("*.log"))
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"scenario {name} failed:\n{out[-3000:]}\n{logs}")
    result = json.loads(result_file.read_text())
    shutil.rmtree(workdir, ignore_errors=True)
    return result


@needs_unshare
def test_driver_crash_then_resume_loses_no_run():
    r = scenario("driver_crash")
    assert r["resume_rc"] == 0
    after = {x["run_id"]: x for x in r["after"]}
    assert len(after) == 3 and all(x["status"] == "completed" and x["step"] == 400 for x in after.values())
    interrupted = [x for x in r["at_kill"] if x["status"] == "running"]
    assert any(x["checkpoint"] for x in interrupted)
    for x in interrupted:
        again = after[x["run_id"]]
        assert again["attempts"] == x["attempts"] + 1
        if x["checkpoint"]:  # from its checkpoint, not step 0 (a run started just before the kill may have none yet)
            assert again["resumed_from"] and again["resumed_from"][0] >= 40, (x, again)
    finished_before = [x for x in r["at_kill"] if x["status"] == "completed"]
    for x in finished_before:
        assert after[x["run_id"]]["attempts"] == x["attempts"]  # never re-run


@needs_unshare
def test_node_loss_retries_from_checkpoint():
    r = scenario("node_loss")
    assert r["worker_raylets"], "the worker node's raylet was not found"
    assert r["driver_rc"] == 0
    after = r["after"]
    assert len(after) == 2 and all(x["status"] == "completed" and x["step"] == 400 for x in after)
    retried = [x for x in after if x["attempts"] == 2]
    assert len(retried) == 1, after
    assert retried[0]["resumed_from"][0] >= 120 - 40  # the last checkpoint before the kill


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
