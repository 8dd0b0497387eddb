"""The benchmarks tell the machine they ran on one way (benchmarks/machine.py), and every one of them says it:
first line `machine: ...`, summary line headed by the machine's fields, so sessions on different CPUs compare."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if p.name != "machine.py")


def _load(name: str):
    """A module of benchmarks/ by path: putting benchmarks/ on sys.path would let its analysis.py shadow the package."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


machine = _load("machine")
sys.modules.setdefault("machine", machine)  # what suite.py imports, as a script, from beside it
suite = _load("suite")

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse2 avx2 avx512bw avx512vl
processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse2 avx2 avx512bw avx512vl
"""


def test_cpu_reads_the_model_and_needs_the_avx512f_flag_itself():
    assert machine.cpu(CPUINFO) == ("AMD EPYC 7B13 64-Core Processor", False)  # avx512bw alone is not AVX-512F
    with_f = CPUINFO.replace("avx512bw", "avx512f avx512bw")
    assert machine.cpu(with_f) == ("AMD EPYC 7B13 64-Core Processor", True)


def test_cpu_without_cpuinfo_still_names_something():
    model, avx512 = machine.cpu("")
    assert model and avx512 is False


def test_summary_fields_split_on_spaces_and_equals(monkeypatch):
    monkeypatch.setattr(machine, "cpu", lambda: ("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", True))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    import torch  # noqa: F401  (so the torch kernels are part of the line)

    fields = dict(kv.split("=") for kv in machine.summary_fields().split())
    assert fields["cpu"] == "Intel_R_Xeon_R_Platinum_8481C_CPU_2.70GHz"
    assert fields["avx512"] == "yes" and fields["onednn_isa"] == "AVX2" and fields["kernels"]
    assert int(fields["cores"]) >= 1


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_prints_the_machine_and_heads_its_summary_with_it(path):
    source = path.read_text()
    assert "from machine import describe, summary_fields" in source
    assert re.search(r"print\(.*describe\(\)", source)
    summaries = [line for line in source.splitlines() if '"summary: ' in line]
    assert summaries and all('f"summary: {summary_fields()} ' in line for line in summaries), summaries


def test_a_benchmark_run_starts_with_the_machine_and_ends_with_its_summary():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scheduling.py")],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    model, avx512 = machine.cpu()
    assert lines[0].startswith("machine: ") and model in lines[0]
    summary = dict(kv.split("=") for kv in lines[-1].removeprefix("summary: ").split())
    assert summary["avx512"] == ("yes" if avx512 else "no") and float(summary["makespan_saved_pct"]) > 0


def test_machine_run_alone_names_this_machine_and_ends_with_its_summary():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "machine.py")],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    model, avx512 = machine.cpu()
    assert len(lines) == 2 and lines[0].startswith("machine: ") and model in lines[0] and " kernels " in lines[0]
    summary = dict(kv.split("=") for kv in lines[1].removeprefix("summary: ").split())
    assert lines[1].startswith("summary: ") and summary["avx512"] == ("yes" if avx512 else "no")
    assert summary["kernels"] and summary["python"] == ".".join(map(str, sys.version_info[:3]))


def test_busy_cpu_seconds_counts_work_not_idle_or_steal():
    # user nice system idle iowait irq softirq steal: 100 + 20 + 30 + 10 + 5 busy ticks, at the kernel's tick rate
    stat = "cpu  100 20 30 9999 77 10 5 888 0 0\ncpu0 50 10 15 5000 40 5 2 444 0 0\n"
    assert suite.busy_cpu_seconds(stat) == pytest.approx(165 / os.sysconf("SC_CLK_TCK"))


def test_pytest_counts_reads_the_closing_line():
    lines = ["....F....", "FAILED tests/test_x.py::test_y - assert 1 == 2",
             "= 1 failed, 735 passed, 3 skipped, 2 deselected, 1 error in 437.12s (0:07:17) ="]
    assert suite.pytest_counts(lines) == {"failed": 1, "passed": 735, "skipped": 3, "deselected": 2, "errors": 1}
    assert suite.pytest_counts(["737 passed in 401.50s (0:06:41)"]) == {"passed": 737}
    assert suite.pytest_counts(["collecting ...", "no tests ran in 0.01s"]) == {}


def test_the_suite_benchmark_runs_the_readme_command_and_stops_its_burner():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not a worker of this session
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "suite.py"), "--burners", "1", "--",
                          "-n", "0", "-p", "no:cacheprovider", "tests/test_config.py"],
                         capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    lines = res.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    pids = [int(p) for p in next(l for l in lines if l.startswith("burners: pids ")).split()[2:]]
    assert len(pids) == 1 and not Path(f"/proc/{pids[0]}").exists()  # stopped and reaped
    summary = dict(kv.split("=") for kv in lines[-1].removeprefix("summary: ").split())
    assert summary["all_passed"] == "yes" and summary["burners"] == "1" and summary["runs"] == "1"
    assert int(summary["passed_1"]) > 10 and float(summary["cpu_s_1"]) > 0
    assert "within_budget" not in summary  # a budget speaks of an idle machine only
