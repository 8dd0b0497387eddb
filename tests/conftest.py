"""Shared fixtures: one local Ray for the whole test session; SQLite and PostgreSQL stores."""

import os
import shutil
import tempfile

import pytest

# Before anything loads OpenMP (torch): threads that wait at a barrier sleep instead of spinning. Tests share
# the cores with each other (pytest-xdist), with Ray's processes and with whatever else runs; a spinning
# 2-thread torch op beside two busy processes used 16x the CPU of a sleeping one. Inherited by subprocesses.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def ray_session():
    """One local 2-CPU Ray on loopback, in its own short temp dir, stopped by us at the end."""
    import ray

    from orchestrator.ray_backend import init_ray

    tmp = tempfile.mkdtemp(prefix="ect-ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


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
