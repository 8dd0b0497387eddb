"""`ect --help` and `ect runs list` must not pay for the heavy libraries: importing the CLI loads none of torch,
scipy, matplotlib, pandas or ray (each is imported by the command that uses it). A property, not a timing: the
times are measured by `python -X importtime` (see the README)."""

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "scipy", "matplotlib", "pandas", "ray")
REPO = Path(__file__).resolve().parents[1]


def loaded_after(code: str) -> list[str]:
    """The heavy top-level modules present in a fresh interpreter after running `code`."""
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_library():
    assert loaded_after("import orchestrator.cli") == []


def test_runs_list_loads_pandas_only(tmp_path):
    """`ect runs list` builds a DataFrame (pandas) from a store it opens (Alembic reads every migration): no more."""
    db = f"sqlite:///{tmp_path / 'ect.db'}"
    code = (f"from orchestrator.store import Store\nStore({db!r})\nimport orchestrator.cli\n"
            f"orchestrator.cli.app(['runs', 'list', '--db', {db!r}], standalone_mode=False)")
    assert loaded_after(code) == ["pandas"]
