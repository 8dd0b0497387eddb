"""Full disks (issue 18, item 2): a small tmpfs inside a private mount namespace (root only).

- `ect train` onto a full disk: one line that says the disk is full and names the checkpoint; no temp file left.
- `ect study run` with `--storage` on a full disk: each run is stored `failed` with a one-line "disk full"
  error naming its run directory, and is NOT retried (one attempt, although max_failures allows two
  more); with space again, `ect study resume` completes the study.
- `ect study run` with `--db` on a disk that fills during the study: one line naming the database, no
  traceback; the SQLite file stays intact and the study is left unfinished, to be resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                       reason="needs root and unshare for a tmpfs in a private mount namespace"),
]
ECT = f"{sys.executable} -m orchestrator"
runner = CliRunner()


def in_namespace(script: str, tmp: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a bash script in a private mount namespace (its tmpfs mounts vanish with it)."""
    ray_tmp = tempfile.mkdtemp(prefix="ect-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp, "ECT_CACHE_DIR": str(tmp / "cache")}
    env.pop("RAY_ADDRESS", None)
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-euc", script], cwd=tmp,
                              env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def study(tmp: Path, name: str, hidden: int, iterations: int, resources: dict) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "kind": "ablation", "max_failures": 2, "grid": {"ect.q": [2, 4]},
        "resources": resources,
        "base": {"data": {"name": "swissroll", "num_samples": 200}, "network": {"arch": "mlp", "hidden": hidden, "depth": 3},
                 "schedule": {"batch_size": 16, "iterations": iterations, "log_interval": 1}}}))
    return path


def status(db: Path, name: str) -> dict:
    res = runner.invoke(app, ["study", "status", name, "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_train_onto_a_full_disk(tmp_path: Path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "swissroll", "num_samples": 200},
                                   "network": {"arch": "mlp", "hidden": 64, "depth": 3}, "ect": {"mode": "pretraining"},
                                   "schedule": {"batch_size": 16, "iterations": 2, "log_interval": 1}}))
    small = tmp_path / "small"
    small.mkdir()
    res = in_namespace(f"mount -t tmpfs -o size=64k tmpfs {small}\n"
                       f"{ECT} train {cfg} --out {small}/run 2> err.txt && exit 9 || echo rc=$?\n"
                       f"ls -A {small}/run > left.txt", tmp_path)
    assert res.returncode == 0 and "rc=1" in res.stdout, res.stdout + res.stderr
    err = (tmp_path / "err.txt").read_text().strip().splitlines()[-1]  # above it: the progress bar
    assert err.startswith("error: disk full") and f"{small}/run/checkpoint.pt" in err, err
    assert "Traceback" not in (tmp_path / "err.txt").read_text()
    assert (tmp_path / "left.txt").read_text() == ""  # the partial temp checkpoint was removed


def test_storage_full_fails_runs_once_and_resume_completes(tmp_path: Path, ray_session, one_run_at_a_time: dict):
    # ~3 MB checkpoints into a 1 MB tmpfs; the driver's own Ray in the namespace as large as the session's
    spec = study(tmp_path, "sfull", hidden=256, iterations=4, resources=one_run_at_a_time)
    cpus = f"{one_run_at_a_time['cpus_per_worker']:g}"
    store, db = tmp_path / "store", tmp_path / "ect.db"
    store.mkdir()
    res = in_namespace(f"mount -t tmpfs -o size=1m tmpfs {store}\n"
                       f"{ECT} study run {spec} --db {db} --storage {store} --cpus {cpus} > out.txt 2> err.txt "
                       f"&& exit 9 || echo rc=$?\n"
                       f"find {store}/runs -type f > left.txt", tmp_path)
    assert res.returncode == 0 and "rc=1" in res.stdout, res.stdout + res.stderr + _read(tmp_path, "err.txt")
    assert "Traceback" not in _read(tmp_path, "out.txt", "err.txt")
    first = status(db, "sfull")
    for r in first["runs"]:
        assert r["status"] == "failed" and r["attempts"] == 1, r  # not retried on the full disk
        assert r["error"].startswith(f"disk full: no space left on the device holding {store}/runs/"), r["error"]
    assert (tmp_path / "left.txt").read_text().strip() == ""  # no partial checkpoint left in the run directories
    # the tmpfs is gone with its namespace: the same --storage path now has space (this session's Ray)
    resumed = runner.invoke(app, ["study", "resume", "sfull", "--db", str(db), "--storage", str(store)])
    assert resumed.exit_code == 0, resumed.output
    after = status(db, "sfull")
    assert after["status"] == "completed" and [r["status"] for r in after["runs"]] == ["completed"] * 2
    assert runner.invoke(app, ["study", "verify", "sfull", "--db", str(db)]).exit_code == 0


def test_database_disk_fills_during_a_study(tmp_path: Path, ray_session, one_run_at_a_time: dict):
    import ray

    # a metrics row per step: the WAL grows
    spec = study(tmp_path, "dfull", hidden=16, iterations=200, resources=one_run_at_a_time)
    # only the driver writes the database: its trials run on this session's Ray, outside the namespace (no Ray start)
    address = ray.get_runtime_context().gcs_address
    dbdir = tmp_path / "dbdir"
    dbdir.mkdir()
    db = dbdir / "ect.db"
    register = (f"{sys.executable} -c \"from orchestrator.store import Store, database_url; "
                f"from orchestrator.study_runner import register; from studies.spec import load_study; "
                f"register(Store(database_url('{db}')), load_study('{spec}'))\"")
    res = in_namespace(f"mount -t tmpfs -o size=256k tmpfs {dbdir}\n{register}\n"
                       f"avail=$(df -k --output=avail {dbdir} | tail -1)\n"
                       f"dd if=/dev/zero of={dbdir}/fill bs=1k count=$((avail - 64)) 2>/dev/null || true\n"
                       f"{ECT} study run {spec} --db {db} --storage {tmp_path}/store --address {address} > out.txt 2> err.txt "
                       f"&& exit 9 || echo rc=$?\n"
                       f"rm {dbdir}/fill\ncp {db} {tmp_path}/copy.db\ncp {db}-wal {tmp_path}/copy.db-wal || true", tmp_path)
    assert res.returncode == 0 and "rc=1" in res.stdout, res.stdout + res.stderr + _read(tmp_path, "err.txt")
    err = (tmp_path / "err.txt").read_text()
    assert "Traceback" not in err + (tmp_path / "out.txt").read_text()
    last = err.strip().splitlines()[-1]
    assert "error: disk full: no space left on the device holding" in last and str(db) in last, err
    con = sqlite3.connect(tmp_path / "copy.db")
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    statuses = [s for (s,) in con.execute("select status from runs")]
    con.close()
    assert len(statuses) == 2 and "completed" not in statuses  # unfinished, left for `resume`


def _read(tmp: Path, *names: str) -> str:
    return "\n".join((tmp / n).read_text() for n in names if (tmp / n).exists())
