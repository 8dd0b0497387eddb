"""Barrier against dependency scheduling, simulated for the paper's model-size study on 8 GPUs.

ECM-S, M, L and XL (configs/paper/imagenet64_ecm_*.yaml): one pretraining each, then tuning runs at
2^0 ... 2^5 budget units each, the largest being the paper's 12.8 M images. Durations come from each
network's forward FLOPs (measured on the meta device: no memory, no weights) at an assumed sustained
throughput per GPU: 3 forward-equivalents per pretraining image, 4 per tuning image (the target pass).
The paper tunes EDM2's released weights; the pretraining length here is an assumption (--pretrain-units).
Both policies run on the same in-process backend with a simulated clock; only the dependencies differ:
the barrier starts tuning once every pretraining has ended (as the two-Tuner driver did), the
dependency scheduler as soon as each run's own pretraining has. Prints makespan and idle GPU-hours.

The simulated backend starts any run that fits, longest ready first. That greedy start is not optimal:
a narrow run started on GPUs a wide run waits for can delay the wide one, so in some configurations
(runs of very different widths) the barrier can win.

    python benchmarks/scheduling.py [--gpus 8] [--tflops 46.8] [--pretrain-units 4] [--size-gpus 1,2,2,4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from machine import describe, summary_fields
from orchestrator.backend import InProcessBackend, QueueWork
from orchestrator.cli_options import PEAK_TFLOPS, UTILIZATION
from orchestrator.scheduling import DependencyQueue, Task
from trainer.config import load_config
from trainer.data import data_shape
from trainer.flops import TUNING_BUDGET_IMAGES, forward_flops_per_sample
from trainer.loop import meta_model

REPO = Path(__file__).resolve().parents[1]
SIZES = ("s", "m", "l", "xl")


def forward_flops(size: str) -> int:
    cfg = load_config(REPO / "configs" / "paper" / f"imagenet64_ecm_{size}.yaml")
    shape, _ = data_shape(cfg.data)
    return forward_flops_per_sample(meta_model(cfg), shape, torch.device("meta"))


def study_tasks(flops: dict[str, int], gpus: dict[str, int], tflops: float, pretrain_units: float) -> list[Task]:
    """The study's runs with their durations (seconds, at perfect scaling over a run's GPUs) as cost:
    one pretraining and six tuning runs per size, each run of a size on that size's GPUs."""
    per_gpu = tflops * 1e12
    tasks = []
    for size, f in flops.items():
        pre, g = f"pretrain-{size}", gpus[size]
        tasks.append(Task(pre, None, pretrain_units * TUNING_BUDGET_IMAGES * f * 3 / (per_gpu * g), gpus=g))
        for k in range(6):
            images = TUNING_BUDGET_IMAGES * 2.0 ** (k - 5)
            tasks.append(Task(f"ecm-{size}-2^{k}", pre, images * f * 4 / (per_gpu * g), gpus=g))
    return tasks


def simulate(tasks: list[Task], gpus: int, barrier: bool) -> tuple[float, float]:
    """(makespan, idle GPU-seconds) of the study under one policy."""
    backend = InProcessBackend(lambda t: ("completed", t.cost), cpus=float("inf"), gpus=gpus)
    stages = [[t for t in tasks if t.parent is None], [t for t in tasks if t.parent]] if barrier else [tasks]
    ended: dict[str, str] = {}
    for stage in stages:
        work = QueueWork(DependencyQueue(stage, ended))
        backend.run(work)
        ended.update(work.queue.status)
    busy = sum((r.end - r.start) * r.gpus for r in backend.records)
    return backend.now, backend.now * gpus - busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--tflops", type=float, default=PEAK_TFLOPS * UTILIZATION,
                    help="sustained training TFLOP/s per GPU (default: `ect study plan`'s peak x utilisation)")
    ap.add_argument("--pretrain-units", type=float, default=4.0,
                    help="pretraining length in units of 12.8 M images (an assumption; the paper starts from EDM2)")
    ap.add_argument("--size-gpus", default="1,2,2,4", help="GPUs per run of ECM-S,M,L,XL (bigger models ask for more)")
    args = ap.parse_args()
    size_gpus = dict(zip(SIZES, (int(g) for g in args.size_gpus.split(","))))
    print(describe())
    flops = {size: forward_flops(size) for size in SIZES}
    for size, f in flops.items():
        print(f"ECM-{size.upper()}: {f / 1e9:.1f} GFLOPs per forward pass (64x64, meta device)")
    tasks = study_tasks(flops, size_gpus, args.tflops, args.pretrain_units)
    print(f"{len(tasks)} runs on {args.gpus} GPUs at {args.tflops:g} TFLOP/s each; GPUs per run "
          + ", ".join(f"ECM-{s.upper()} {g}" for s, g in size_gpus.items())
          + f"; pretraining {args.pretrain_units:g} x 12.8 M images; tuning 2^0..2^5 x 0.4 M images")
    results = {}
    for name, barrier in (("barrier", True), ("dependency", False)):
        makespan, idle = simulate(tasks, args.gpus, barrier)
        results[name] = (makespan / 3600, idle / 3600)
        print(f"{name:>10}: makespan {makespan / 3600:8.2f} h, idle {idle / 3600:8.2f} GPU-h "
              f"({idle / (makespan * args.gpus):.1%} of {makespan * args.gpus / 3600:.1f} GPU-h)")
    (b_span, b_idle), (d_span, d_idle) = results["barrier"], results["dependency"]
    print(f"summary: {summary_fields()} barrier_makespan_h={b_span:.3f} dependency_makespan_h={d_span:.3f} "
          f"barrier_idle_gpu_h={b_idle:.3f} dependency_idle_gpu_h={d_idle:.3f} "
          f"idle_saved_gpu_h={b_idle - d_idle:.3f} makespan_saved_pct={100 * (1 - d_span / b_span):.1f}")


if __name__ == "__main__":
    main()
