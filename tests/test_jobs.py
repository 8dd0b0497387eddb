"""Studies as Ray Jobs: `ect study submit / status / logs / cancel` against real Jobs servers.

The bad inputs run against real sockets (a closed port, a server that never answers); the end to end
test runs a 2-node loopback cluster in its own namespaces (tests/cluster_scenario.py).
"""

import json
import socket
import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.jobs import dashboard_url, driver_db_url, one_line, storage_warning
from trainer.config import ConfigError

runner = CliRunner()

SPEC = {
    "name": "jobs",
    "kind": "ablation",
    "base": {"data": {"name": "swissroll", "num_samples": 200}, "network": {"arch": "mlp", "hidden": 16, "depth": 1},
             "ect": {"mode": "pretraining"}, "schedule": {"batch_size": 16, "iterations": 4}},
    "grid": {"network.dropout": [0.0, 0.1]},
}


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_error(res, code: int, *needles: str) -> None:
    assert res.exit_code == code, res.output
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error:"), res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


def test_addresses_are_the_dashboards_url():
    assert dashboard_url("http://head:8265/") == "http://head:8265"
    assert dashboard_url(" https://10.0.0.1:443 ") == "https://10.0.0.1:443"
    for bad in ("head:8265", "127.0.0.1:6379", "ray://head:10001", "http://", "http://h:port", "http://h:8265/api"):
        with pytest.raises(ConfigError, match="--address"):
            dashboard_url(bad)


def test_ray_errors_become_one_line():
    assert one_line(RuntimeError("Request failed with status code 500: Traceback (most recent call last):\n"
                                 '  File "x.py", line 1\nValueError: Job with submission_id x already exists.\n.')) \
        == "ValueError: Job with submission_id x already exists."
    refused = ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (Caused by "
                              "NewConnectionError('<urllib3...>: Failed to establish a new connection: "
                              "[Errno 111] Connection refused'))")
    assert one_line(refused) == "Connection refused"


def test_local_storage_on_a_multi_host_cluster_is_named(tmp_path):
    warning = storage_warning(tmp_path, {"10.0.0.1", "10.0.0.2"})
    assert warning is not None and warning.startswith(f"--storage {tmp_path} is on a local file system")
    assert storage_warning(tmp_path, {"10.0.0.1"}) is None  # one host: its own disk is shared by its nodes


def test_the_drivers_sqlite_path_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert driver_db_url("ect.db") == f"sqlite:///{tmp_path / 'ect.db'}"
    assert driver_db_url("postgresql://u:secret@h/db") == "postgresql://u:secret@h/db"


def test_submit_to_a_closed_port_is_one_line(spec_file, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    res = runner.invoke(app, ["study", "submit", str(spec_file), "--address", url, "--db", str(tmp_path / "e.db"),
                              "--storage", str(tmp_path / "st")])
    one_line_error(res, 1, f"cannot reach the Ray Jobs server at {url}", "refused")
    assert not (tmp_path / "e.db").exists()  # nothing written


def test_submit_to_a_server_that_never_answers_is_one_line(spec_file, tmp_path):
    """A peer that accepts the connection and then says nothing: the timeout, not a hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        res = runner.invoke(app, ["study", "submit", str(spec_file), "--address", url, "--db", str(tmp_path / "e.db"),
                                  "--storage", str(tmp_path / "st")])
    finally:
        for s in (*accepted, server):
            s.close()
    assert accepted, "the client never connected: this is not the silent-peer case"
    one_line_error(res, 1, f"cannot reach the Ray Jobs server at {url}: no answer within 5 s")
    assert not (tmp_path / "e.db").exists()  # nothing written


@pytest.mark.parametrize("args,code,needle", [
    (["--address", "127.0.0.1:8265", "--storage", "/abs"], 2, "--address '127.0.0.1:8265': expected the Ray dashboard's URL"),
    (["--address", "http://127.0.0.1:1", "--storage", "ect-store"], 2, "--storage ect-store: a relative path"),
])
def test_submit_usage_errors(spec_file, tmp_path, args, code, needle):
    res = runner.invoke(app, ["study", "submit", str(spec_file), "--db", str(tmp_path / "e.db"), *args])
    one_line_error(res, code, needle)


def test_logs_of_a_study_never_submitted(spec_file, tmp_path):
    from orchestrator.store import Store
    from orchestrator.study_runner import register
    from studies.spec import load_study

    register(Store(f"sqlite:///{tmp_path / 'e.db'}"), load_study(spec_file))
    res = runner.invoke(app, ["study", "logs", "jobs", "--db", str(tmp_path / "e.db")])
    one_line_error(res, 1, "study jobs has no Ray Job")
    status = runner.invoke(app, ["study", "status", "jobs", "--db", str(tmp_path / "e.db"), "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["job"] is None


# --------------------------------------------------------------------------- end to end on a 2-node cluster

def ok(step: dict) -> dict:
    assert step["rc"] == 0, step
    return step


def status(step: dict) -> dict:
    return json.loads(ok(step)["stdout"])


@pytest.mark.slow
@pytest.mark.xdist_group("two-node-cluster")  # with tests/test_faults.py: one worker runs them, one cluster
def test_second_submission_reports_the_first_and_cancel_stops_the_job(cluster_run):
    r = cluster_run
    first, second = sorted(r["twice"], key=lambda p: p["rc"])
    assert first["rc"] == 0 and second["rc"] == 1, r["twice"]
    job_id = first["stdout"].strip()
    assert job_id.startswith("ect-stop-") and "\n" not in job_id
    assert "warning: --storage" in first["stderr"] and "2 hosts" in first["stderr"]  # 127.0.0.1 and 127.0.0.2
    *warnings, error = second["stderr"].strip().splitlines()  # the --storage warning, then one error line
    assert error.startswith(f"error: study stop is already submitted: job {job_id} at http://127.0.0.1:8265 is ")
    assert all(w.startswith("warning: --storage") for w in warnings)
    early = status(r["status_early"])
    assert early["job"]["job_id"] == job_id and early["job"]["state"] in ("PENDING", "RUNNING")
    cancel = ok(r["cancel"])
    assert "2 runs cancelled" in cancel["stdout"] and f"job {job_id}: STOPPED" in cancel["stdout"]
    assert r["job_at_cancel"] == "STOPPED"
    at_cancel = r["at_cancel"]
    assert len(at_cancel) == 2 and all(x["status"] == "cancelled" and x["checkpoint"] for x in at_cancel)
    assert all(40 <= x["step"] < 1600 for x in at_cancel)  # stopped mid-run, with a checkpoint kept


@pytest.mark.slow
@pytest.mark.xdist_group("two-node-cluster")
def test_resubmitted_study_resumes_from_its_checkpoints_and_is_followed_to_the_end(cluster_run):
    r = cluster_run
    job_id = sorted(r["twice"], key=lambda p: p["rc"])[0]["stdout"].strip()
    resubmitted = ok(r["resubmit"])["stdout"].strip()
    assert resubmitted != job_id and resubmitted.startswith("ect-stop-")
    ok(r["logs_follow"])  # returns when the job ends
    done = status(r["status_done"])
    assert done["job"] == {**done["job"], "job_id": resubmitted, "state": "SUCCEEDED"} and done["status"] == "completed"
    assert [x["status"] for x in done["runs"]] == ["completed", "completed"] and all(x["step"] == 1600 for x in done["runs"])
    assert "done: 2 completed" in r["logs_follow"]["stdout"] and r["logs_follow"]["stdout"] == ok(r["logs"])["stdout"]
    after = {x["run_id"]: x for x in r["after"]}
    for x in r["at_cancel"]:
        again = after[x["run_id"]]
        assert again["status"] == "completed" and again["step"] == 1600
        assert again["resumed_from"] and again["resumed_from"][0] >= 40  # from its checkpoint, not step 0
