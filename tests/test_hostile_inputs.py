"""Hostile YAML and oversized studies are refused in bounded time and memory (issue 18, item 3).

Each case loads a file the way `ect study validate` / `ect train` do (`load_study` / `load_config`) in a
child process that imports only the spec modules (no torch), under an address-space limit, and
measures its wall time and peak memory (getrusage of that child). The limits are guards, generous
for a loaded machine: before the bounded loader an alias bomb took over 60 s and 1.1 GB here.
The CLI side of the same classes (one line, exit 2, store unchanged) is in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_bad_inputs import DEEP_FLOW, DUP_KEY_CONFIG, DUP_KEY_STUDY, MILLION, RECURSIVE, STUDY, alias_bomb, deep_block

WALL_LIMIT_S = 30.0  # the child's whole life, Python start-up and imports included
RSS_LIMIT_MB = 300.0  # pydantic + PyYAML + the case itself; the refused input must not add to it
AS_LIMIT = 2 << 30  # the child cannot take the machine down if a bound is missing

CHILD = """
import atexit, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
# this process image's own peak RSS (the kernel's maxrss would include the forked parent's pages)
atexit.register(lambda: open(sys.argv[4], "w").write(
    next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))))
from studies.spec import load_study
from trainer.config import ConfigError, load_config
try:
    (load_study if sys.argv[1] == "study" else load_config)(sys.argv[2])
except ConfigError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
print("accepted")
"""


def run_bounded(kind: str, path: Path) -> tuple[int, str, float, float]:
    """(exit code, stderr, wall seconds, peak RSS in MB) of loading `path` in a limited child process."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    err_path, hwm_path = path.with_name("stderr.txt"), path.with_name("vmhwm.txt")
    start = time.perf_counter()
    with open(err_path, "w") as err_file:
        # the limit is set by the child itself: a preexec_fn would fork this (large) test process, and the
        # forked copy's pages would count in the child's peak RSS
        proc = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(path), str(AS_LIMIT), str(hwm_path)],
                                stdout=subprocess.DEVNULL, stderr=err_file, env=env)
    deadline = start + WALL_LIMIT_S * 4  # far past the assertion below: a hang fails the test, not the suite
    while True:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            pytest.fail(f"loading {path} did not finish in {WALL_LIMIT_S * 4:.0f} s")
        time.sleep(0.05)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err_path.read_text(), wall, int(hwm_path.read_text()) / 1024


def study_yaml(**top) -> str:
    return yaml.safe_dump({**STUDY, **top}, sort_keys=False)


CASES = {
    "study-alias-bomb": ("study", "name: bomb\n" + alias_bomb(), "aliases"),
    "study-alias-bomb-wide": ("study", "name: bomb\n" + alias_bomb(levels=30, fan=3), "aliases"),
    "study-expansion-bomb": ("study", "name: bomb\n" + alias_bomb(levels=6, fan=9), "expands to more than"),
    "study-recursive-alias": ("study", RECURSIVE, "recursive alias"),
    "study-deep-flow": ("study", DEEP_FLOW, "nest"),
    "study-deep-block": ("study", deep_block(), "nested more than"),
    "study-duplicate-key": ("study", DUP_KEY_STUDY, "duplicate key 'seeds' (first at line 2, again at line 4)"),
    "study-too-large": ("study", "name: big\n" + "# padding\n" * 40_000, "KiB"),
    "study-grid-million": ("study", study_yaml(grid=MILLION), "1000000 runs exceed the limit of 10000"),
    "study-seeds-20000": ("study", study_yaml(seeds=list(range(20_000))), "40000 runs exceed the limit of 10000"),
    "config-alias-bomb": ("config", alias_bomb(), "aliases"),
    "config-deep-block": ("config", deep_block(), "nested more than"),
    "config-duplicate-key": ("config", DUP_KEY_CONFIG, "duplicate key 'hidden' (first at line 4, again at line 5)"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refused_in_bounded_time_and_memory(name: str, tmp_path: Path):
    kind, text, needle = CASES[name]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    code, err, wall, rss = run_bounded(kind, path)
    assert code == 2, f"exit {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(path)) and needle in lines[0], err
    assert wall < WALL_LIMIT_S, f"{wall:.1f} s"
    assert rss < RSS_LIMIT_MB, f"peak RSS {rss:.0f} MB"


def test_a_study_within_the_bounds_is_accepted(tmp_path: Path):
    """The bounds leave real studies alone: anchors, aliases, merge keys and a long seed list load."""
    path = tmp_path / "ok.yaml"
    path.write_text("name: ok\nbase:\n  data: {name: swissroll}\n  network: {arch: mlp, hidden: 16}\n"
                    "variants:\n  - {label: a, overrides: &o {network.hidden: 8}}\n"
                    "  - {label: b, overrides: {<<: *o, network.depth: 2}}\n"
                    "seeds: [" + ", ".join(map(str, range(500))) + "]\n")
    code, err, _, _ = run_bounded("study", path)
    assert code == 0, err
