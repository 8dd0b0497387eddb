"""The machine a benchmark ran on, told the same way by every benchmark: the CPU model, whether it has
AVX-512 (without it our convolutions run 2-3x slower), the cores, and torch's kernels where the
benchmark uses torch. Benchmarks print `describe()` first and start their summary line with `summary_fields()`,
so figures from different sessions can be compared like with like. Run alone, it names this machine:

    python benchmarks/machine.py
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu(cpuinfo: str | None = None) -> tuple[str, bool]:
    """(CPU model name, whether it has AVX-512F) from /proc/cpuinfo's text; platform's guess where there is none."""
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.exists() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    return model, "avx512f" in fields.get("flags", "").split()


def _torch_kernels() -> tuple[str, str | None] | None:
    """(torch's CPU kernel level, the oneDNN ISA cap if one is set), only where the benchmark has imported torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return torch.backends.cpu.get_cpu_capability(), os.environ.get("ONEDNN_MAX_CPU_ISA")


def describe() -> str:
    """One line naming the machine: cores, CPU model, AVX-512, torch and its kernels, Python."""
    model, avx512 = cpu()
    kernels = _torch_kernels()
    torch_part = ""
    if kernels:
        torch_part = f", torch {sys.modules['torch'].__version__} kernels {kernels[0]}"
        torch_part += f", oneDNN ISA <= {kernels[1]}" if kernels[1] else ""
    return (f"machine: {os.cpu_count()} cores, {model}, AVX-512 {'yes' if avx512 else 'no'}{torch_part}, "
            f"Python {platform.python_version()}")


def summary_fields() -> str:
    """The machine as `name=value` pairs for the head of a benchmark's summary line; values keep only
    letters, digits and `._+-` (others become `_`), so the line splits on spaces and `=`."""
    model, avx512 = cpu()
    pairs = {"cpu": model, "cores": str(os.cpu_count()), "avx512": "yes" if avx512 else "no"}
    kernels = _torch_kernels()
    if kernels:
        pairs["kernels"] = kernels[0]
        if kernels[1]:
            pairs["onednn_isa"] = kernels[1]
    return " ".join(f"{k}={re.sub(r'[^A-Za-z0-9._+-]+', '_', v).strip('_')}" for k, v in pairs.items())


def main() -> None:
    """This machine as every benchmark names it, torch's kernels included, and its summary line."""
    import torch  # noqa: F401  (imported, so the line names torch's kernels)

    print(describe())
    print(f"summary: {summary_fields()} python={platform.python_version()}")


if __name__ == "__main__":
    main()
