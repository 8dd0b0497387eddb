"""`ect --help` and `ect runs list` must not pay for libraries they do not use: `--help` loads none of torch, scipy,
matplotlib, pandas, ray, SQLAlchemy, Alembic or requests, and `ect runs list` adds only SQLAlchemy (the store) and
pandas (its frames). A property, not a timing: `benchmarks/analysis.py` measures the times."""

import json
import os
import subprocess
import sys
from pathlib import Path

import synthetic_store
from orchestrator.store import Store, database_url

HEAVY = ("torch", "scipy", "matplotlib", "pandas", "ray", "sqlalchemy", "alembic", "requests")
REPO = Path(__file__).resolve().parents[1]


def run_probe(code: str) -> tuple[list[str], str]:
    """(the heavy top-level modules present in a fresh interpreter after running `code`, what `code` printed)."""
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    *printed, modules = res.stdout.strip().splitlines()
    return json.loads(modules), "\n".join(printed)


def cli(*args: str) -> str:
    """Probe code that runs `ect ARGS` and fails unless it exits 0."""
    return (f"import orchestrator.cli\ncode = orchestrator.cli.app({list(args)!r}, standalone_mode=False)\n"
            "assert code in (None, 0), code")


def test_importing_the_cli_loads_no_heavy_library():
    assert run_probe("import orchestrator.cli") == ([], "")


def test_help_loads_no_heavy_library():
    loaded, printed = run_probe(cli("--help"))
    assert loaded == [] and "runs" in printed and "study" in printed


def test_runs_list_loads_the_store_and_pandas_only(tmp_path):
    """`ect runs list` on a study's store (varied keys, evaluation columns) opens it read-only with SQLAlchemy and
    builds frames with pandas: no Alembic (the store is at the head revision), no scipy, matplotlib, torch or ray."""
    store, _ = synthetic_store.build(tmp_path / "ect.db")  # the README's main study, as if it had run
    loaded, printed = run_probe(cli("runs", "list", "--db", store.url))
    assert loaded == ["pandas", "sqlalchemy"]
    assert "runs, in store order" in printed and "fd_digits@2" in printed and "budget-2e0" in printed


def test_runs_list_on_an_empty_store_loads_the_same(tmp_path):
    db = database_url(str(tmp_path / "ect.db"))
    Store(db)
    loaded, printed = run_probe(cli("runs", "list", "--db", db))
    assert loaded == ["pandas", "sqlalchemy"] and "0 runs" in printed
