"""benchmarks/gpu_check.py's CPU fallback, run as a user would, so the prepared GPU check cannot rot."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_fallback_prints_the_table_and_summary():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu"],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    for mode in ("fp32", "tf32", "bf16", "bf16+channels_last", "bf16+channels_last+compile"):
        assert any(line.startswith(f"DDPM++ CIFAR-10 {mode} ") for line in lines), res.stdout
    assert any(line.startswith("EDM2-S 64x64 bf16") for line in lines)
    summary = dict(kv.split("=") for kv in lines[-1].removeprefix("summary: ").split())
    assert lines[-1].startswith("summary: ") and summary["device"] == "cpu-fallback"
    assert lines[0].startswith("machine: ") and summary["cpu"] and summary["avx512"] in ("yes", "no")
    assert all(float(summary[k]) > 0 for k in summary if k.endswith("_img_s"))
    assert float(summary["loss_max_rel_diff"]) == 0.0  # bf16 autocast is CUDA-only: identical losses on a CPU
