"""Time the README's test command, `bash scripts/test.sh`, idle or beside CPU-bound processes, run after run.

    python benchmarks/suite.py                          # the whole suite once, on an idle machine
    python benchmarks/suite.py --quick                  # the quick loop: -m "not slow"
    python benchmarks/suite.py --burners 2 --repeat 3   # three runs in a row beside two busy processes
    python benchmarks/suite.py -- tests/test_store.py   # arguments after -- go to pytest

The suite's output streams through as it runs. For each run: the wall time, pytest's counts, and the busy
CPU-seconds of the whole machine over the run (/proc/stat; with burners, theirs are in it too, so the figure
means what the suite used only on an otherwise idle machine). Burners (`python -c "while True: pass"`) are
started here and stopped by their PIDs, whatever happens. Exits 1 if a run fails. Ends with `summary: ...`.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from machine import describe, summary_fields

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 300  # the idle suite's budget on a 2-core machine
COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")


def busy_cpu_seconds(stat: str | None = None) -> float:
    """CPU-seconds the machine has spent busy since boot: user + nice + system + irq + softirq of /proc/stat's
    `cpu` line (guest time is inside user; idle, iowait and steal are not work done here)."""
    if stat is None:
        stat = Path("/proc/stat").read_text()
    fields = [int(v) for v in stat.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def pytest_counts(lines: list[str]) -> dict[str, int]:
    """pytest's closing counts ("2 failed, 735 passed, 3 skipped in 437.12s") by outcome; {} if it printed none."""
    for line in reversed(lines):
        if re.search(r"\bin [0-9.]+s\b", line) and COUNTS.search(line):
            return {("errors" if kind.startswith("error") else kind): int(n) for n, kind in COUNTS.findall(line)}
    return {}


def run_suite(pytest_args: list[str]) -> tuple[int, float, float, dict[str, int]]:
    """One run of scripts/test.sh, its output passed through: (exit code, wall s, busy CPU-s, pytest's counts)."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    cpu0, start = busy_cpu_seconds(), time.perf_counter()
    with subprocess.Popen(["bash", "scripts/test.sh", *pytest_args], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip("\n"))
    wall, cpu = time.perf_counter() - start, busy_cpu_seconds() - cpu0
    return proc.returncode, wall, cpu, pytest_counts(list(tail))


def start_burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_burners(burners: list[subprocess.Popen]) -> None:
    for b in burners:
        b.kill()
    for b in burners:
        b.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help='the quick loop: pass -m "not slow" to pytest')
    parser.add_argument("--burners", type=int, default=0, help="CPU-bound processes running beside the suite")
    parser.add_argument("--repeat", type=int, default=1, help="runs in a row; stops at the first failure")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    args = parser.parse_args()
    if args.repeat < 1 or args.burners < 0:
        parser.error("--repeat must be at least 1 and --burners at least 0")
    pytest_args = (["-m", "not slow"] if args.quick else []) + args.pytest_args
    print(describe(), flush=True)
    runs: list[tuple[int, float, float, dict[str, int]]] = []
    burners = start_burners(args.burners)
    try:
        if burners:
            print(f"burners: pids {' '.join(str(b.pid) for b in burners)}", flush=True)
        for i in range(args.repeat):
            runs.append(run_suite(pytest_args))
            rc, wall, cpu, counts = runs[-1]
            minutes, seconds = divmod(round(wall), 60)
            print(f"run {i + 1}/{args.repeat}: exit {rc}, {minutes} min {seconds} s, {cpu:.0f} busy CPU-s, "
                  f"{', '.join(f'{n} {k}' for k, n in counts.items()) or 'no pytest counts'}", flush=True)
            if rc != 0:
                break
    finally:
        stop_burners(burners)
    ok = len(runs) == args.repeat and all(r[0] == 0 for r in runs)
    walls = [r[1] for r in runs]
    per_run = " ".join(f"wall_s_{i + 1}={r[1]:.0f} cpu_s_{i + 1}={r[2]:.0f} passed_{i + 1}={r[3].get('passed', 0)}"
                       for i, r in enumerate(runs))
    budget = f" budget_s={BUDGET_S} within_budget={'yes' if max(walls) <= BUDGET_S else 'no'}" if not burners else ""
    print(f"summary: {summary_fields()} tier={'quick' if args.quick else 'full'} burners={args.burners} "
          f"runs={len(runs)} all_passed={'yes' if ok else 'no'} wall_s_max={max(walls):.0f} {per_run}{budget}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
