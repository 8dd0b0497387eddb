"""A 2-node loopback Ray cluster in its own PID and network namespace, and what the tests do on it:

    unshare --net --pid --fork --mount-proc python tests/cluster_scenario.py WORKDIR

This script is PID 1 of the namespace, so every process it starts dies with it. The head (dashboard
and Jobs server on 127.0.0.1:8265) and the worker node (127.0.0.2, so the cluster spans two "hosts")
see the same storage directory. One cluster serves two scenarios, in this order (a Ray start costs
seconds of CPU, and the last one ends the worker node):

1. a study submitted as a Ray Job, driving the `ect` CLI as a user would (tests/test_jobs.py);
2. a driver on the cluster killed mid-study, then resumed, and the worker node lost under the resumed runs
   (tests/fault_scenarios.py, tests/test_faults.py).

It writes WORKDIR/result.json, which those tests check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]
from fault_scenarios import FAULT_ENV, crash_then_node_loss, lo_up, raylets, runs, start_node  # noqa: E402
from fault_scenarios import spec as fault_spec  # noqa: E402

BIN = Path(sys.executable).parent
DASHBOARD = "http://127.0.0.1:8265"
ADDRESS = "127.0.0.1:6380"


def spec(name: str, iterations: int) -> dict:
    """Two tiny runs, one CPU each: one on each node (the fault scenarios' study)."""
    return fault_spec(name, [0.0, 0.1], iterations, cpus=1)


def env(workdir: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update({
        "RAY_TMPDIR": str(workdir / "ray"),
        "RAY_AUTH_MODE": "disabled",  # every process of this isolated, loopback-only cluster
        "PATH": f"{BIN}{os.pathsep}{e.get('PATH', '')}",  # the job's `python` is this environment's
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")])),  # and imports this code
        "PYTHONUNBUFFERED": "1",
        **FAULT_ENV,
    })
    e.pop("RAY_ADDRESS", None)
    e.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # set to 0 by a one-node Ray of this process: it forbids multi-node
    return e


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def start_cluster(e: dict[str, str]) -> set[int]:
    """Head with the dashboard on 127.0.0.1, then a worker node on 127.0.0.2 (each retried: a start can fail under
    load); the worker node's raylet PIDs."""
    ray = str(BIN / "ray")
    node = ["--num-cpus", "1", "--memory", str(2 * 1024**3), "--object-store-memory", str(200 * 1024**2),
            "--disable-usage-stats"]
    start_node([ray, "start", "--head", "--port", ADDRESS.split(":")[1], "--node-ip-address", "127.0.0.1",
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", "8265", *node], e)
    head = raylets()
    start_node([ray, "start", "--address", ADDRESS, "--node-ip-address", "127.0.0.2", *node], e)
    from orchestrator.jobs import cluster_hosts

    wait_for(lambda: cluster_hosts(DASHBOARD) == {"127.0.0.1", "127.0.0.2"}, 120, "both nodes alive")
    return raylets() - head


def ect(e: dict[str, str], *args: str, timeout: float = 600) -> dict:
    p = subprocess.run([str(BIN / "ect"), *args], env=e, capture_output=True, text=True, timeout=timeout)
    return {"args": list(args), "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def trials_alive() -> int:
    """Tune trial processes in this namespace (a function trainable runs in a `ray::ImplicitFunc` actor)."""
    n = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            n += b"ImplicitFunc" in cmdline.read_bytes()
        except OSError:
            pass
    return n


def main(workdir: Path) -> dict:
    lo_up()
    e = env(workdir)
    worker_raylets = start_cluster(e)
    from orchestrator.jobs import connect

    client = connect(DASHBOARD)
    db, storage = workdir / "ect.db", workdir / "storage"
    common = ["--address", DASHBOARD, "--db", str(db), "--storage", str(storage)]
    stop = workdir / "stop.yaml"
    stop.write_text(yaml.safe_dump(spec("stop", iterations=1600)))
    r: dict[str, Any] = {}

    # 1. two submissions of one study at once (one is refused), see it running, then cancel it mid-run
    both = [subprocess.Popen([str(BIN / "ect"), "study", "submit", str(stop), *common], env=e, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    r["twice"] = [{"rc": p.wait(timeout=600), "stdout": p.stdout.read(), "stderr": p.stderr.read()} for p in both]
    r["status_early"] = ect(e, "study", "status", "stop", "--db", str(db), "--json")
    wait_for(lambda: len([x for x in runs(db) if x["status"] == "running" and x["checkpoint"]]) == 2, 300,
             "both runs of `stop` running past their first checkpoint")
    r["cancel"] = ect(e, "study", "cancel", "stop", "--db", str(db), "--grace", "0")  # its Ray Job is stopped at once
    wait_for(lambda: trials_alive() == 0, 120, "the trial processes to end")
    r["at_cancel"] = runs(db)
    r["job_at_cancel"] = str(client.get_job_status(json.loads(r["status_early"]["stdout"])["job"]["job_id"]))

    # 2. submit it again: it resumes from the checkpoints; follow its logs until it completes
    r["resubmit"] = ect(e, "study", "submit", str(stop), *common)
    r["logs_follow"] = ect(e, "study", "logs", "stop", "--db", str(db), "--follow")
    r["status_done"] = ect(e, "study", "status", "stop", "--db", str(db), "--json")
    r["logs"] = ect(e, "study", "logs", "stop", "--db", str(db))
    r["after"] = runs(db)

    # 3. the faults on the same cluster: a driver killed, then, under its resume, the worker node lost (last: the
    # node is gone after it)
    r["faults"] = crash_then_node_loss(workdir, ADDRESS, worker_raylets, e)
    return r


if __name__ == "__main__":
    workdir = Path(sys.argv[1])
    result = main(workdir)
    (workdir / "result.json").write_text(json.dumps(result, indent=1))
