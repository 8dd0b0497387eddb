"""Shared fixtures: one local Ray for the whole test session; SQLite and PostgreSQL stores."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Before anything loads OpenMP (torch): threads that wait at a barrier sleep instead of spinning. Tests share
# the cores with each other (pytest-xdist), with Ray's processes and with whatever else runs; a spinning
# 2-thread torch op beside two busy processes used 16x the CPU of a sleeping one. Inherited by subprocesses.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, torch threads in each worker process = cores / workers (1 on our 2-core machines, as a
    trial with one CPU): the workers already fill the cores, and a second thread per worker only made their
    in-process training and sampling wait on each other (about 20 % more CPU in A/B runs of those modules)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _weight(item: pytest.Item) -> int:
    """0 for a test marked `slow`, 1 for another test on Ray, 2 for the rest."""
    return 0 if item.get_closest_marker("slow") else 1 if "ray_session" in item.fixturenames else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: modules with `slow` tests, then modules with other tests on Ray, then the rest, and in each
    module its slow tests first. pytest-xdist hands tests out in this order, so the long ones start early on both
    workers and the many short ones fill the end instead of one worker finishing a long test alone. A module's
    tests stay together, so a module-scoped fixture is built once per worker, not again after other modules."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    module_weight: dict[str, int] = {}
    for item in items:
        module_weight[module(item)] = min(module_weight.get(module(item), 2), _weight(item))
    position = {item.nodeid: i for i, item in enumerate(items)}
    first = {module(item): position[item.nodeid] for item in reversed(items)}
    items.sort(key=lambda item: (module_weight[module(item)], first[module(item)], _weight(item), position[item.nodeid]))
    ahead = False
    for item in reversed(items):
        ahead = ahead or "ray_session" in item.fixturenames
        RAY_AHEAD[item.nodeid] = ahead


RAY_AHEAD: dict[str, bool] = {}  # node id -> whether it or a test after it (in the sorted order) uses ray_session


SESSION_CPUS = 2  # of the test session's Ray (ray_session)


class SessionRay:
    """One local 2-CPU Ray on loopback in its own short temp dir, started for the first test that asks for it and
    stopped when no later test will (pytest_runtest_teardown): an idle Ray still costs about 2.4 CPU-s a minute, and
    the tests on Ray come first (pytest_collection_modifyitems), so it would idle through the rest of the suite."""

    def __init__(self) -> None:
        self.tmp: str | None = None
        self.saved_tmpdir: str | None = None

    def start(self) -> None:
        if self.tmp is not None:
            return
        from orchestrator.ray_backend import init_ray

        self.tmp = tempfile.mkdtemp(prefix="ect-ray-", dir="/tmp")
        self.saved_tmpdir = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self.tmp
        init_ray(None, num_cpus=SESSION_CPUS)

    def stop(self) -> None:
        if self.tmp is None:
            return
        import ray

        ray.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.saved_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = self.saved_tmpdir
        self.tmp = None


SESSION_RAY = SessionRay()


@pytest.fixture
def ray_session():
    """The session's local Ray (SessionRay), started if it is not running."""
    SESSION_RAY.start()
    yield


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the session's Ray once no test from the next one on in the run's order uses it. Not as soon as the next
    test does not: pytest-xdist hands each worker tests in that order, but the two workers take turns, so a worker's
    tests on Ray and off it alternate, and each restart costs about 5 CPU-s."""
    if nextitem is None or not RAY_AHEAD.get(nextitem.nodeid, True):
        SESSION_RAY.stop()


@pytest.fixture(scope="session")
def one_run_at_a_time() -> dict:
    """A study's `resources:` that take every CPU of the session's Ray, for tests whose subject is not runs side by
    side: their runs go one at a time, and Tune reuses one trial process for all of them (starting one costs about
    6 CPU-s: torch, torch._dynamo, Ray Tune)."""
    return {"cpus_per_worker": SESSION_CPUS}


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server on 127.0.0.1 for the session (tests/pg.py); tests using it skip where none can run."""
    import pg

    reason = pg.unavailable()
    if reason is not None:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = pg.PgServer(pg.binaries())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """An empty database URL, once for an SQLite file and once for a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ect.db'}"
    return request.getfixturevalue("pg_server").database()


@pytest.fixture(scope="session")
def cluster_run() -> dict:
    """tests/cluster_scenario.py run once in its own namespaces (a Ray Job, a killed driver, a lost node on one
    2-node cluster); its result. The tests that read it are in one xdist_group, so one worker runs it, once."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"],
                                                          capture_output=True).returncode:
        pytest.skip("needs unshare with PID and network namespaces (root or user namespaces)")
    workdir = Path(tempfile.mkdtemp(prefix="ect-cluster-", dir="/tmp"))
    proc = subprocess.Popen(["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child",
                             sys.executable, str(Path(__file__).with_name("cluster_scenario.py")), str(workdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=3600)  # its waits are generous: a loaded machine can be many times slower
    finally:
        if proc.poll() is None:  # the namespace's processes all die with its PID 1
            proc.kill()
            proc.wait()
    result_file = workdir / "result.json"
    if not result_file.exists():
        logs = "".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(workdir.glob("*.log")))
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"the cluster scenario failed:\n{out[-5000:]}\n{logs}")
    result = json.loads(result_file.read_text())
    shutil.rmtree(workdir, ignore_errors=True)
    return result
