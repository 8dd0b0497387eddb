"""Shared fixtures: one local Ray for the whole test session."""

import os
import shutil
import tempfile

import pytest


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
