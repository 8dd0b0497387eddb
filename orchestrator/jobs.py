"""Studies as Ray Jobs: `ect study submit` runs a study's driver on a cluster and returns; `status`,
`logs` and `cancel` follow and stop it through the cluster's Jobs server (part of the Ray dashboard,
so the cluster needs `ray[default]`).

The driver is `python -m orchestrator study resume NAME` on the cluster's head. It reads the study's
spec from the store that `submit` registered it in, so no spec file travels; it needs the store's URL
(given to the job as $ECT_DB), a `--storage` root that every node sees, and `python` on the head with
this package installed (the environment that runs `ray start`).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import re
import shlex
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import requests
from sqlalchemy.engine import make_url

from studies.spec import StudySpec
from trainer.config import ConfigError

from .store import Store, Study, database_url, redact
from .study_runner import register

STOP_WAIT_S = 60.0  # then the time Ray gets to end the job (SIGTERM, then SIGKILL after 3 s)
TIMEOUT_S = 5.0  # connect and answer timeout of the checks before the Jobs client is used (which has none)
LIVE = ("PENDING", "RUNNING")
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
# File systems that several hosts can mount as one directory; anything else is this machine's own disk.
SHARED_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "9p",
             "virtiofs", "afs", "panfs", "wekafs", "orangefs"}


class JobsError(RuntimeError):
    """A Jobs server that cannot be used, or a job it refused; the message is one line."""


CLIENT_ERRORS = (RuntimeError, ValueError, ConnectionError, requests.exceptions.RequestException)


@dataclass
class JobRef:
    """A study's Ray Job: its submission id, the Jobs server's URL and the job's state there."""

    job_id: str
    address: str
    state: str  # a Ray JobStatus (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), or why it is unknown
    new: bool = False  # submitted by this call (False: an earlier submission, still live)

    def as_dict(self) -> dict[str, str]:
        return {"job_id": self.job_id, "address": self.address, "state": self.state}


# --------------------------------------------------------------------------- talking to a Jobs server


def dashboard_url(address: str) -> str:
    """`--address` as the Jobs server's URL: http(s)://HOST:PORT, the dashboard (port 8265 by default)."""
    parsed = urllib.parse.urlsplit(address.strip())
    try:
        _ = parsed.port
    except ValueError:
        parsed = parsed._replace(netloc="")
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path.strip("/") or parsed.query:
        raise ConfigError(f"--address {address!r}: expected the Ray dashboard's URL, e.g. http://HEAD:8265")
    return f"{parsed.scheme}://{parsed.netloc}"


def one_line(e: BaseException) -> str:
    """Ray's and requests' error texts (tracebacks, nested reprs) as one short line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() not in ("", ".")]
    if not lines:
        return type(e).__name__
    text = lines[-1] if "Traceback (most recent call last)" in str(e) else lines[0]
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return (errno.group(1) if errno else text)[:300]


def _check_answers(url: str) -> None:
    """Fail in one line unless a Ray dashboard answers at `url` within the timeout (Ray's client has none)."""
    try:
        r = requests.get(url + "/api/version", timeout=TIMEOUT_S)
    except requests.exceptions.Timeout:
        raise JobsError(f"cannot reach the Ray Jobs server at {url}: no answer within {TIMEOUT_S:g} s") from None
    except requests.exceptions.RequestException as e:
        raise JobsError(f"cannot reach the Ray Jobs server at {url}: {one_line(e)}") from None
    if r.status_code not in (200, 401, 403):  # with token auth, the client below sends the token
        raise JobsError(f"{url}/api/version answered HTTP {r.status_code}: is this the Ray dashboard (port 8265)?")


@contextmanager
def _explicit_address() -> Iterator[None]:
    """Ray lets $RAY_ADDRESS / $RAY_API_SERVER_ADDRESS override a client's address; ours is always explicit."""
    saved = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str) -> Any:
    """A `JobSubmissionClient` for the Jobs server at `address`, after a quick check that it answers."""
    url = dashboard_url(address)
    _check_answers(url)
    from ray.job_submission import JobSubmissionClient

    with _explicit_address():
        return _call(JobSubmissionClient, url)


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the Jobs client, turning its errors into one line."""
    try:
        return fn(*args, **kwargs)
    except CLIENT_ERRORS as e:
        raise JobsError(one_line(e)) from None


def cluster_hosts(url: str) -> set[str]:
    """The IP addresses of the cluster's alive nodes (from the dashboard's state API)."""
    from ray.util.state import list_nodes

    with _explicit_address():
        nodes = _call(list_nodes, address=url, timeout=int(TIMEOUT_S) * 6, raise_on_missing_output=False)
    return {n.node_ip for n in nodes if n.state == "ALIVE"}


def _state(client: Any, job_id: str) -> str | None:
    """The job's status on this server, or None if the server does not know the job."""
    try:
        return str(client.get_job_status(job_id))
    except RuntimeError as e:
        if "does not exist" in str(e):
            return None
        raise JobsError(one_line(e)) from None
    except (ConnectionError, requests.exceptions.RequestException) as e:
        raise JobsError(one_line(e)) from None


# --------------------------------------------------------------------------- what a cluster needs to see


def filesystem(path: Path) -> str:
    """The type of the file system holding `path` (or its nearest existing parent), from /proc/mounts."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    real = os.path.realpath(probe)
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def require_absolute(storage: Path) -> None:
    """Refuse a relative `--storage`: the driver runs on the cluster's head, in a working directory of its own."""
    if not storage.is_absolute():
        raise ConfigError(f"--storage {storage}: a relative path; the driver runs on the cluster's head in a "
                          "directory of its own: give an absolute path that every node sees")


def storage_warning(storage: Path, hosts: set[str]) -> str | None:
    """A warning if `--storage` is on this machine's own disk while the cluster's nodes span several hosts."""
    kind = filesystem(storage)
    if len(hosts) > 1 and kind not in SHARED_FS:
        return (f"--storage {storage} is on a local file system here ({kind}) but the cluster's nodes are on "
                f"{len(hosts)} hosts: every node must see this directory (a shared mount such as NFS), or a run "
                "cannot resume from its checkpoint on another node")
    return None


def driver_db_url(db: str | None) -> str:
    """The store's URL as the driver on the head must open it: an SQLite path made absolute."""
    url = make_url(database_url(db))
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).expanduser().resolve()))
    return url.render_as_string(hide_password=False)


def _job_prefix(name: str, db_url: str) -> str:
    """Submission ids of one study in one store: `ect-<name>-<hash>-`; the generation number follows."""
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", name)[:48]
    tag = hashlib.sha256(f"{db_url}\0{name}".encode()).hexdigest()[:8]
    return f"ect-{slug}-{tag}-"


def _generation(job_id: str | None, prefix: str) -> int:
    if job_id and job_id.startswith(prefix) and job_id[len(prefix):].isdigit():
        return int(job_id[len(prefix):])
    return 0


# --------------------------------------------------------------------------- the commands' work


def submit(spec: StudySpec, address: str, db: str | None, storage: Path,
           warn: Callable[[str], None]) -> JobRef:
    """Register the study and submit its driver as a Ray Job; a live earlier job of the study is returned instead.

    Submission ids are `<prefix><generation>`, one generation after the study's last job, so two
    submissions at once ask Ray for the same id: Ray accepts one, and the other reports that job.
    """
    url = dashboard_url(address)
    require_absolute(storage)
    client = connect(url)
    problem = storage_warning(storage, cluster_hosts(url))
    if problem:
        warn(problem)
    db_url = driver_db_url(db)
    store = Store(db_url)
    register(store, spec)
    study = store.study(spec.name)
    earlier = job_state(study)
    if earlier is not None and earlier.state in LIVE:
        return earlier
    prefix = _job_prefix(spec.name, db_url)
    entrypoint = shlex.join(["python", "-m", "orchestrator", "study", "resume", spec.name, "--storage", str(storage)])
    runtime_env = {"env_vars": {"ECT_DB": db_url, "PYTHONUNBUFFERED": "1"}}
    for generation in itertools.count(_generation(study.job_id, prefix) + 1):
        job_id = f"{prefix}{generation}"
        try:
            client.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env,
                              metadata={"ect_study": spec.name, "ect_store": redact(db_url)})
        except CLIENT_ERRORS as e:  # whether a job of that id exists now decides what the refusal was
            state = _state(client, job_id)
            if state is None:
                raise JobsError(f"{url} refused study {spec.name}'s driver: {one_line(e)}") from None
            if state in LIVE:  # another submission of this study took this id a moment ago
                store.set_study_job(spec.name, job_id, url)
                return JobRef(job_id, url, state)
            continue  # a finished job the store never heard of: the next generation
        store.set_study_job(spec.name, job_id, url)
        return JobRef(job_id, url, "PENDING", new=True)


def job_state(study: Study) -> JobRef | None:
    """The study's recorded Ray Job with its current state (None if it was never submitted)."""
    if not study.job_id or not study.job_address:
        return None
    try:
        state = _state(connect(study.job_address), study.job_id)
    except JobsError as e:
        return JobRef(study.job_id, study.job_address, f"unknown ({e})")
    return JobRef(study.job_id, study.job_address, state or "unknown (the cluster no longer has it)")


def _wait(client: Any, job_id: str, seconds: float) -> str | None:
    """Poll until the job is no longer live or `seconds` pass; returns its last state."""
    end = time.monotonic() + seconds
    while True:
        state = _state(client, job_id)
        if state not in LIVE or time.monotonic() >= end:
            return state
        time.sleep(1.0)


def stop_submitted(store: Store, name: str, grace: float) -> JobRef | None:
    """After `cancel` has marked the study: give its submitted driver `grace` seconds to stop, then stop its job.

    Returns the job with its final state (or why it is unknown), None if the study has no job that may be live.
    """
    ref = job_state(store.study(name))
    if ref is None or ref.state in ENDED:
        return None
    if ref.state not in LIVE:
        return ref
    client = connect(ref.address)
    state = _wait(client, ref.job_id, grace)
    if state in LIVE:
        _call(client.stop_job, ref.job_id)
        state = _wait(client, ref.job_id, STOP_WAIT_S)
    return JobRef(ref.job_id, ref.address, state or "unknown")


def logs(study: Study, follow: bool, write: Callable[[str], None]) -> None:
    """Write the study's driver log; with `follow`, keep streaming it until the job ends."""
    if not study.job_id or not study.job_address:
        raise JobsError(f"study {study.name} has no Ray Job (it was not started with `ect study submit`); "
                        "a foreground driver's output is in its own terminal")
    client = connect(study.job_address)
    if not follow:
        write(_call(client.get_job_logs, study.job_id))
        return

    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)  # not "WebSocket closed" at the end

    async def tail() -> None:
        async for chunk in client.tail_job_logs(study.job_id):
            write(chunk)

    _call(asyncio.run, tail())
