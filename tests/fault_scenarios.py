"""Fault scenarios with real processes, run by tests/cluster_scenario.py on its 2-node loopback cluster, inside
its own PID and network namespaces (every process they start dies with the namespace):

- crash_then_node_loss: SIGKILL `ect study run` mid-study, then `ect study resume`; while the resumed runs train,
  one on each node, SIGKILL the worker node's raylet and the workers it started.

It returns what the tests (tests/test_faults.py) check: the store's runs at each fault and after them.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
WAIT_S = 600  # limit of each wait: generous, a loaded 2-core machine can be many times slower than an idle one
ITERATIONS = 400  # training iterations of each run


def spec(name: str, labels: list[float], iterations: int, cpus: int) -> dict:
    return {
        "name": name,
        "kind": "ablation",
        "base": {
            "data": {"name": "swissroll", "num_samples": 2000},
            "network": {"arch": "mlp", "hidden": 64, "depth": 2},
            "ect": {"mode": "pretraining"},
            "optim": {"name": "adam", "lr": 1e-3},
            "schedule": {"batch_size": 128, "iterations": iterations, "log_interval": 20, "checkpoint_interval": 40},
        },
        "grid": {"network.dropout": labels},
        "resources": {"cpus_per_worker": cpus},
        "max_failures": 2,
    }


FAULT_ENV = {
    # a lost node is declared dead within seconds (Ray's defaults take about half a minute)
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_worker_niceness": "0",  # as orchestrator.ray_backend.init_ray: trials not starved by other processes
    "RAY_prestart_worker_first_driver": "0",  # as init_ray: no idle workers that no trial would take
    "OMP_WAIT_POLICY": "PASSIVE",
}


def runs(db: Path) -> list[dict]:
    """The store's runs, read with sqlite3 (cheap enough to poll while drivers write it); [] before a driver has
    created the database, which this never creates itself (mode=rw)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=30)
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("select run_id, label, status, step, attempts, checkpoint from runs")]
        resumed = con.execute("select run_id, step from metrics where name = 'resumed_from'").fetchall()
        con.close()
    except sqlite3.Error:
        return []
    for r in rows:
        r["resumed_from"] = sorted(s for rid, s in resumed if rid == r["run_id"])
    return rows


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if process.poll() is not None:
            raise RuntimeError(f"the driver exited ({process.returncode}) before {what}")
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def lo_up() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def raylets() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "raylet/raylet"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (from /proc: the namespace holds only our processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo.extend(children.get(p, []))
    return out


def all_pids() -> set[int]:
    return {int(p.name) for p in Path("/proc").glob("[0-9]*")}


def start_node(args: list[str], e: dict[str, str], attempts: int = 4) -> None:
    """`ray start ...`, retried with backoff: on a loaded machine a node can miss one of Ray's start-up
    deadlines. Each failure prints the command's stderr and kills what that attempt left behind; the last
    failure raises with it."""
    for attempt in range(1, attempts + 1):
        before = all_pids()
        proc = subprocess.run(args, env=e, capture_output=True, text=True)
        if proc.returncode == 0:
            return
        report = f"`ray {' '.join(args[1:3])}` attempt {attempt}/{attempts} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        print(report, flush=True)
        # what the attempt left behind: new processes that no process from before (but this one) started
        keep = set().union(*(descendants(pid) for pid in before - {os.getpid()}))
        for pid in all_pids() - before - keep - {os.getpid()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if attempt == attempts:
            raise RuntimeError(report)
        time.sleep(5 * 2 ** (attempt - 1))


def crash_then_node_loss(workdir: Path, address: str, worker_raylets: set[int], e: dict[str, str]) -> dict:
    """A driver joined to the cluster at `address` is SIGKILLed mid-study and `ect study resume` continues the study;
    while two resumed runs train, one on each node, the worker node is lost (its raylet and the workers it started
    SIGKILLed) and the run it held is retried on the head. One study for both faults: each driver and each trial
    process costs seconds of CPU."""
    db, spec_file = workdir / "faults.db", workdir / "faults.yaml"
    spec_file.write_text(yaml.safe_dump(spec("faults", [0.0, 0.1, 0.2], iterations=ITERATIONS, cpus=1)))
    common = ["--address", address, "--db", str(db), "--storage", str(workdir / "faults-store")]
    driver = subprocess.Popen([BIN / "ect", "study", "run", str(spec_file), *common],
                              env=e, stdout=open(workdir / "faults-run.log", "w"), stderr=subprocess.STDOUT)
    wait_for(lambda: any(r["status"] == "running" and r["step"] >= 120 and r["checkpoint"] for r in runs(db)),
             WAIT_S, "a run with a checkpoint past step 120", driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    at_crash = runs(db)
    # the dead driver's run claims go stale STALE_SECONDS after its last heartbeat: age them rather than wait
    con = sqlite3.connect(db, timeout=30)
    with con:
        con.execute("update runs set heartbeat_at = '2000-01-01 00:00:00.000000' where owner is not null")
    con.close()

    resume = subprocess.Popen([BIN / "ect", "study", "resume", "faults", *common], env=e,
                              stdout=open(workdir / "faults-resume.log", "w"), stderr=subprocess.STDOUT)
    crashed_at = {r["run_id"]: r["step"] or 0 for r in at_crash}
    # two runs past a checkpoint written since the resume: with one CPU on each node, one runs on each
    wait_for(lambda: len([r for r in runs(db) if r["status"] == "running"
                          and r["step"] >= crashed_at[r["run_id"]] + 40]) == 2,
             WAIT_S, "two resumed runs past a new checkpoint (one on each node)", resume)
    victims = set().union(*(descendants(pid) for pid in worker_raylets))  # the raylet and the workers it started
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    at_node_loss = runs(db)
    rc = resume.wait(timeout=WAIT_S)
    return {"at_crash": at_crash, "at_node_loss": at_node_loss, "after": runs(db), "resume_rc": rc,
            "worker_raylets": sorted(worker_raylets), "killed": len(victims)}
