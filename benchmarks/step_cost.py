"""Cost of an ECT training step against a plain diffusion (r = 0) step, measured side by side.

The ECT step adds one no-grad forward (the target f(x_r)) to forward + backward, so its floor is
about 4/3 of the diffusion step. Both are timed in interleaved blocks on the same network, batch
and machine; the script prints images/s for each and `ratio <ect / diffusion>`.

    python benchmarks/step_cost.py                   # CPU presets (digits UNet, swiss-roll MLP)
    python benchmarks/step_cost.py --config my.yaml  # any TrainConfig
    python benchmarks/step_cost.py --gpu             # CIFAR-10 DDPM++ (55.7 M) at batch 128 on CUDA
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from machine import describe, summary_fields
from trainer.config import TrainConfig, load_config
from trainer.data import Dataset, load_dataset
from trainer.loop import RunState, resolve_device

REPO = Path(__file__).resolve().parents[1]
PRESETS = [REPO / "configs/mini/digits_ect.yaml", REPO / "configs/mini/swissroll_ect.yaml"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(run: RunState, steps: int) -> float:
    """Seconds per training step over `steps` iterations."""
    _sync(run.device)
    start = time.perf_counter()
    for _ in range(steps):
        if not run.advance().finite:
            raise RuntimeError("benchmark run diverged")
    _sync(run.device)
    return (time.perf_counter() - start) / steps


def synthetic_cifar(n: int = 2048) -> Dataset:
    """CIFAR-10-shaped random images and labels: the step cost does not depend on the pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, 3, 32, 32), generator=g) * 2 - 1
    return Dataset(x, torch.randint(10, (n,), generator=g), 10, "synthetic-cifar10")


def measure(cfg: TrainConfig, steps: int, rounds: int, data: Dataset | None = None) -> dict[str, float]:
    """Median seconds per step of the ECT step (stage >= 1) and the diffusion step (stage 0)."""
    cfg = cfg.model_copy(deep=True)
    cfg.init = None
    cfg.schedule.iterations = 10**9  # keep the stage constant (a = 1) for the whole benchmark
    data = data or load_dataset(cfg.data)
    device = resolve_device(cfg.device)
    with TemporaryDirectory() as tmp:
        ect = RunState(cfg.model_copy(update={"ect": cfg.ect.model_copy(update={"mode": "tuning"})}), Path(tmp), data, device)
        diff = RunState(cfg.model_copy(update={"ect": cfg.ect.model_copy(update={"mode": "pretraining"})}), Path(tmp), data, device)
        for run in (ect, diff):
            time_steps(run, max(2, steps // 5))  # warm-up
        times: dict[str, list[float]] = {"ect": [], "diffusion": []}
        for _ in range(rounds):
            times["ect"].append(time_steps(ect, steps))
            times["diffusion"].append(time_steps(diff, steps))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="TrainConfig YAML (repeatable)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved blocks per mode (median taken)")
    parser.add_argument("--gpu", action="store_true", help="CIFAR-10 DDPM++ ECT step at batch 128 on CUDA")
    parser.add_argument("--compile", action="store_true", help="with --gpu: torch.compile the network")
    args = parser.parse_args()
    if args.gpu:
        gpu(args)
        return
    print(f"{describe()}; {torch.get_num_threads()} threads")
    ratios = []
    for path in args.config or PRESETS:
        cfg = load_config(path)
        t = measure(cfg, args.steps, args.rounds)
        b = cfg.schedule.batch_size
        ratios.append(t["ect"] / t["diffusion"])
        print(f"{path.name}: batch {b}: ECT {b / t['ect']:.0f} img/s ({t['ect'] * 1e3:.1f} ms/step), "
              f"diffusion {b / t['diffusion']:.0f} img/s ({t['diffusion'] * 1e3:.1f} ms/step), "
              f"ratio {ratios[-1]:.3f}")
    print(f"ratio {ratios[0]:.3f}  (first config; floor ~4/3, target <= 1.40)")
    print(f"summary: {summary_fields()} " + " ".join(f"ratio{i}={r:.3f}" for i, r in enumerate(ratios)))


def gpu(args: argparse.Namespace) -> None:
    """images/s of the paper's CIFAR-10 ECT step (bf16 autocast, channels_last, TF32) on one GPU."""
    if not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device on this machine; run it where one is")
    cfg = load_config(REPO / "configs/paper/cifar10_ect.yaml")
    cfg = cfg.model_copy(update={"device": "cuda", "gpu": cfg.gpu.model_copy(update={"compile": args.compile})})
    t = measure(cfg, args.steps, args.rounds, synthetic_cifar())
    b = cfg.schedule.batch_size
    print(f"{torch.cuda.get_device_name()}: DDPM++ CIFAR-10, batch {b}, bf16={cfg.precision == 'bf16'}, "
          f"channels_last={cfg.gpu.channels_last}, compile={args.compile}")
    print(f"ECT step {b / t['ect']:.0f} img/s ({t['ect'] * 1e3:.1f} ms), diffusion step {b / t['diffusion']:.0f} img/s")
    print(f"ratio {t['ect'] / t['diffusion']:.3f}")
    print(f"summary: {summary_fields()} ect_img_s={b / t['ect']:.0f} diffusion_img_s={b / t['diffusion']:.0f} "
          f"ratio={t['ect'] / t['diffusion']:.3f}")


if __name__ == "__main__":
    main()
