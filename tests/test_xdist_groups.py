"""The suite's own scheduling: tests marked with one xdist_group run on one worker under `--dist loadgroup`
(scripts/test.sh), so a cluster or server that a group's tests share is started once. pytest-xdist 3.8 loses
the marks on pytest 9.2 without a word (pytest-dev/pytest-xdist#1386); this fails instead."""

import subprocess
import sys
from pathlib import Path

TESTS = '''
import os
from pathlib import Path

import pytest


def record(name):
    Path(name).write_text(os.environ.get("PYTEST_XDIST_WORKER", "none"))
''' + "".join(f'''

@pytest.mark.xdist_group("shared")
def test_grouped_{i}():
    record("grouped_{i}")


def test_free_{i}():
    record("free_{i}")
''' for i in range(4))


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path):
    (tmp_path / "test_groups.py").write_text(TESTS)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), "test_groups.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    grouped = {(tmp_path / f"grouped_{i}").read_text() for i in range(4)}
    free = {(tmp_path / f"free_{i}").read_text() for i in range(4)}
    assert len(grouped) == 1 and grouped <= {"gw0", "gw1"}, grouped
    assert free <= {"gw0", "gw1"}
