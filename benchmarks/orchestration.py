"""Cost of orchestration: the same 6 tiny runs as plain sequential `train()` calls and as a study
through the Ray backend (local Ray on loopback, a real SQLite store), side by side in one run.

Both use all cores: sequential runs use torch's default threads; each Ray trial asks for every CPU,
so trials run one at a time with the same threads. Prints the wall times, their ratio and
`overhead <seconds>` per run (Ray's one-time start-up is printed separately).

    python benchmarks/orchestration.py [--iterations 150]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from machine import describe, summary_fields
from orchestrator.ray_backend import RayBackend, init_ray
from orchestrator.store import Store, database_url
from orchestrator.study_runner import execute, register
from studies.spec import StudySpec, expand
from trainer.loop import train


def study(iterations: int) -> StudySpec:
    return StudySpec.model_validate({
        "name": "bench",
        "kind": "ablation",
        "base": {
            "data": {"name": "digits"},
            "network": {"arch": "songunet", "model_channels": 16, "channel_mult": [1, 2]},
            "ect": {"mode": "pretraining", "weighting": "inv_t"},
            "optim": {"name": "adam", "lr": 2e-3},
            "schedule": {"batch_size": 64, "iterations": iterations, "log_interval": 25},
        },
        "grid": {"network.dropout": [0.0, 0.1]},
        "seeds": [0, 1, 2],
        "resources": {"cpus_per_worker": os.cpu_count()},
        "max_failures": 0,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150, help="training steps per run")
    args = parser.parse_args()
    spec = study(args.iterations)
    runs = expand(spec)
    tmp = Path(tempfile.mkdtemp(prefix="ect-bench-", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        for r in runs:
            train(r.config, tmp / "seq" / r.run_id)
        sequential = time.perf_counter() - t0

        os.environ.setdefault("RAY_TMPDIR", str(tmp / "ray"))
        t0 = time.perf_counter()
        init_ray(None, num_cpus=os.cpu_count())
        startup = time.perf_counter() - t0
        store = Store(database_url(str(tmp / "ect.db")))
        register(store, spec)
        t0 = time.perf_counter()
        counts = execute(store, spec, tmp / "store", RayBackend(store, tmp / "store", "bench", spec.max_failures))
        ray_wall = time.perf_counter() - t0
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    assert counts == {"completed": len(runs)}, counts
    print(describe())
    print(f"{len(runs)} runs x {args.iterations} steps")
    print(f"sequential train(): {sequential:.2f} s")
    print(f"Ray study:          {ray_wall:.2f} s (plus {startup:.2f} s one-time Ray start-up)")
    print(f"ratio {ray_wall / sequential:.3f}  (target <= 1.15)")
    print(f"overhead {(ray_wall - sequential) / len(runs):.3f}  (seconds per run, target <= 1)")
    print(f"summary: {summary_fields()} sequential_s={sequential:.2f} ray_s={ray_wall:.2f} ray_startup_s={startup:.2f} "
          f"ratio={ray_wall / sequential:.3f} overhead_s_per_run={(ray_wall - sequential) / len(runs):.3f}")


if __name__ == "__main__":
    main()
