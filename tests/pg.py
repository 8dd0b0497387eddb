"""A throwaway PostgreSQL server for the test session, from Debian's `postgresql` binaries.

It listens on 127.0.0.1 on a free port, keeps its data and socket in a temp dir, runs as a non-root
user (PostgreSQL refuses root; as root we use `runuser -u postgres` or `nobody`), and is stopped by
`pg_ctl stop` (the PID in its postmaster.pid) at the end. Each test gets a database of its own.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, if any."""
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
            if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file()]
    return max(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL server; `database()` hands out fresh, empty databases as SQLAlchemy URLs."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="ect-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if _user_exists("postgres") else "nobody"
            self.prefix = ["runuser", "-u", user, "--"]
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._names = itertools.count()

    def _run(self, *args: str, timeout: float = 120) -> None:
        res = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            log = (self.root / "server.log")
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({res.returncode}): {res.stderr.strip()[-2000:]} {tail}")

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "ect", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "120", "start")

    def stop(self) -> None:
        """Stop the server by its PID file (pg_ctl; immediate: its data is thrown away), then remove its directory."""
        try:
            if (self.data / "postmaster.pid").is_file():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        auth = f"ect:{password}" if password else "ect"
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database on this server, as a URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=ect dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name we made up, not input
        return self.url(name)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def unavailable() -> str | None:
    """Why no PostgreSQL server can be started here, or None."""
    if binaries() is None:
        return "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'ect-scaling[postgres]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser, and PostgreSQL refuses to run as root"
    return None
