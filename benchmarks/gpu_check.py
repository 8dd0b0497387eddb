"""A prepared check of the training step on a GPU, in one call of under 8 minutes.

Prints a table of ECT training-step throughput for the paper's DDPM++ CIFAR-10 network (55.7 M
parameters) at batch 128 in fp32, TF32, bf16 autocast, + channels_last and + torch.compile; an
EDM2-S step at 64x64 in bf16; peak GPU memory of each; and how closely bf16 follows fp32 in loss
over 50 steps from the same seed. The goal is >= 5x the official code's >= 284 img/s (A100, fp32).

    python benchmarks/gpu_check.py            # on a GPU machine (CPU fallback when there is none)
    python benchmarks/gpu_check.py --cpu      # the CPU fallback: one step each at batch 2, shrunken networks

Without a GPU, the same code runs once per mode with networks shrunk to a few channels, a batch of
2 and one thread (the CUDA-only options are then no-ops, so bf16 and fp32 losses agree exactly):
the test suite calls it so that the script cannot rot. Its numbers say nothing about GPU speed.

Dependencies: torch, numpy, pydantic and PyYAML only. A GPU machine with its own PyTorch but no
registry access can be given the rest as a git-ignored folder `.gpu_wheels/` at the repository root,
which this script puts on `sys.path` when present. Prepare it where a registry is reachable, for
the GPU machine's Python version (e.g. 3.11) and platform:

    pip install --target .gpu_wheels --only-binary=:all: --python-version 3.11 \\
        --platform manylinux2014_x86_64 pydantic pyyaml numpy

(leave torch out: the GPU machine's own build matches its driver).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if (REPO / ".gpu_wheels").is_dir():
    sys.path.insert(0, str(REPO / ".gpu_wheels"))

import torch  # noqa: E402

from machine import describe, summary_fields  # noqa: E402
from trainer.config import TrainConfig, load_config  # noqa: E402
from trainer.data import Dataset  # noqa: E402
from trainer.loop import RunState  # noqa: E402

OFFICIAL_IMG_S = 284.0  # the official ECT code, DDPM++ CIFAR-10, A100, fp32
MODES = {  # name: (precision, tf32, channels_last, compile)
    "fp32": ("fp32", False, False, False),
    "tf32": ("fp32", True, False, False),
    "bf16": ("bf16", True, False, False),
    "bf16+channels_last": ("bf16", True, True, False),
    "bf16+channels_last+compile": ("bf16", True, True, True),
}


def synthetic(shape: tuple[int, ...], classes: int, n: int = 1024) -> Dataset:
    """Random uint8 images and labels: a step's cost does not depend on the pixels."""
    g = torch.Generator().manual_seed(0)
    return Dataset(torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8),
                   torch.randint(classes, (n,), generator=g) if classes else None, classes, "synthetic")


def with_mode(cfg: TrainConfig, mode: str, device: str, batch: int) -> TrainConfig:
    precision, tf32, channels_last, compile_ = MODES[mode]
    tree = cfg.model_dump(mode="json")
    tree.update(device=device, precision=precision, init=None)
    tree["gpu"] = {"tf32": tf32, "channels_last": channels_last, "compile": compile_}
    tree["schedule"].update(batch_size=batch, iterations=10**9)  # a constant stage (a = 1) throughout
    return TrainConfig.model_validate(tree)


def shrink(cfg: TrainConfig) -> TrainConfig:
    """The CPU fallback's networks: the same architectures with a few channels."""
    tree = cfg.model_dump(mode="json")
    tree["network"].update(model_channels=8 if tree["network"]["arch"] == "songunet" else 16)
    return TrainConfig.model_validate(tree)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(cfg: TrainConfig, data: Dataset, steps: int, warmup: int) -> dict[str, float]:
    """images/s of the ECT step and the peak GPU memory (GiB) of a fresh run of `cfg`."""
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with TemporaryDirectory() as tmp:
        run = RunState(cfg, Path(tmp), data, device)
        for _ in range(warmup):
            run.advance()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            if not run.advance().finite:
                raise RuntimeError(f"non-finite loss in the {cfg.precision} benchmark run")
        sync(device)
        seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"img_s": cfg.schedule.batch_size / seconds, "ms": seconds * 1e3, "peak_gib": peak}


def losses(cfg: TrainConfig, data: Dataset, steps: int) -> list[float]:
    with TemporaryDirectory() as tmp:
        run = RunState(cfg, Path(tmp), data, torch.device(cfg.device))
        return [run.advance().loss.loss.item() for _ in range(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run the CPU fallback even where a GPU exists")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode on a GPU")
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and not args.cpu
    device, batch = ("cuda", 128) if gpu else ("cpu", 2)
    steps, warmup, agree_steps = (args.steps, 5, 50) if gpu else (1, 0, 2)
    print(describe())
    print(f"GPU: {torch.cuda.get_device_name() if gpu else 'none (CPU fallback: shrunken networks, batch 2)'}")
    cifar = load_config(REPO / "configs/paper/cifar10_ect.yaml")
    edm2 = load_config(REPO / "configs/paper/imagenet64_ecm_s.yaml")
    if not gpu:
        cifar, edm2 = shrink(cifar), shrink(edm2)
        torch.set_num_threads(1)  # a code-path check: no threads to oversubscribe a busy machine with
    cifar_data, edm2_data = synthetic((3, 32, 32), 0), synthetic((3, 64, 64), 1000)
    rows = []
    for mode in MODES:
        r = time_step(with_mode(cifar, mode, device, batch), cifar_data, steps, warmup + (3 if "compile" in mode else 0))
        rows.append((f"DDPM++ CIFAR-10 {mode}", batch, r))
    r = time_step(with_mode(edm2, "bf16+channels_last", device, batch), edm2_data, steps, warmup)
    rows.append(("EDM2-S 64x64 bf16+channels_last", batch, r))
    print(f"{'step':<44}{'batch':>6}{'img/s':>10}{'ms/step':>10}{'peak GiB':>10}")
    for name, b, r in rows:
        print(f"{name:<44}{b:>6}{r['img_s']:>10.1f}{r['ms']:>10.1f}{r['peak_gib']:>10.2f}")
    fp32 = losses(with_mode(cifar, "fp32", device, batch), cifar_data, agree_steps)
    bf16 = losses(with_mode(cifar, "bf16", device, batch), cifar_data, agree_steps)
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(fp32, bf16)]
    print(f"bf16 vs fp32 loss over {agree_steps} steps: max rel diff {max(rel):.3g}, "
          f"mean rel diff {sum(rel) / len(rel):.3g} (final {fp32[-1]:.4g} vs {bf16[-1]:.4g})")
    best = max(r["img_s"] for name, _, r in rows if name.startswith("DDPM++"))
    print(f"best DDPM++ step: {best / OFFICIAL_IMG_S:.2f}x the official code's {OFFICIAL_IMG_S:.0f} img/s (goal 5x)"
          + ("" if gpu else " [CPU fallback: not comparable]"))
    named = {"fp32": 0, "tf32": 1, "bf16": 2, "bf16_cl": 3, "bf16_cl_compile": 4, "edm2s_bf16": 5}
    fields = " ".join(f"{k}_img_s={rows[i][2]['img_s']:.1f}" for k, i in named.items())
    peak = max(r["peak_gib"] for _, _, r in rows)
    print(f"summary: {summary_fields()} device={'cuda' if gpu else 'cpu-fallback'} {fields} peak_gib={peak:.2f} "
          f"loss_max_rel_diff={max(rel):.3g} speedup_vs_official={best / OFFICIAL_IMG_S:.2f}")


if __name__ == "__main__":
    main()
