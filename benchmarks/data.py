"""The data pipeline at paper scale: memory, loader throughput and the share of a step spent on data.

Writes a 50k-image 64x64 RGB zip (EDM's layout: stored PNGs and a dataset.json) in a temporary
directory, then measures:
- peak memory (PSS of this process and its DataLoader workers, sampled) while the zip is opened and
  streamed, against the set's uint8 size (goal <= 1.5x);
- loader throughput in images/s (decode + x-flip in `loader_workers` processes, batch 128);
- the fraction of a training step spent waiting for its batch (goal < 5 %): the mini digits step
  (in memory) and a CIFAR-shaped step (3x32x32, batch 128, streamed from a zip, with the mini UNet:
  a small network is the worst case for the data's share).

    python benchmarks/data.py [--images 50000] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import describe, summary_fields
from trainer.config import ImageFolderData, TrainConfig, load_config  # noqa: E402
from trainer.data import load_dataset  # noqa: E402
from trainer.loop import RunState  # noqa: E402


def write_zip(path: Path, n: int, size: int, classes: int = 10) -> None:
    """n smooth random RGB images (PNG, like real photos they compress) and their labels."""
    rng = np.random.default_rng(0)
    base = np.linspace(0, 1, size)
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(n)]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in names:
            a, b, c = rng.random(3)
            img = np.stack([np.add.outer(base * a, base * b), np.add.outer(base * b, base * c),
                            np.add.outer(base * c, base * a)], -1) * 127
            img = (img + rng.integers(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG", compress_level=1)
            zf.writestr(name, buf.getvalue())
        zf.writestr("dataset.json", json.dumps({"labels": [[nm, i % classes] for i, nm in enumerate(names)]}))


class PeakMemory:
    """Samples the proportional set size (shared pages split between processes) of this process tree."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pss(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._pss())
            time.sleep(0.05)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stream(path: Path, workers: int, batches: int, batch: int = 128) -> float:
    """images/s of the streamed loader (decode + x-flip in workers) over `batches` batches."""
    data = load_dataset(ImageFolderData(path=path, xflip=True, loader_workers=workers))
    source = data.source(torch.device("cpu"), labels=True)
    gen = torch.Generator().manual_seed(0)
    source.next_batch(gen, batch, slice(0, batch))  # workers started and warmed up
    start = time.perf_counter()
    for _ in range(batches):
        source.next_batch(gen, batch, slice(0, batch))
    return batches * batch / (time.perf_counter() - start)


class TimedSource:
    """Wraps a run's batch source to add up the time the training loop waits for batches."""

    def __init__(self, inner: object) -> None:
        self.inner, self.seconds = inner, 0.0

    def next_batch(self, *args: object) -> tuple:
        start = time.perf_counter()
        out = self.inner.next_batch(*args)
        self.seconds += time.perf_counter() - start
        return out


def data_share(cfg: TrainConfig, steps: int, warmup: int = 3) -> float:
    """Fraction of `steps` training steps spent in fetching their batches."""
    with tempfile.TemporaryDirectory() as tmp:
        run = RunState(cfg, Path(tmp), load_dataset(cfg.data), torch.device("cpu"))
        for _ in range(warmup):
            run.advance()
        run.source = timed = TimedSource(run.source)
        start = time.perf_counter()
        for _ in range(steps):
            run.advance()
        return timed.seconds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per data-share measurement")
    args = parser.parse_args()
    print(f"{describe()}; {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        big, cifar = Path(tmp) / "imagenet64.zip", Path(tmp) / "cifar_shaped.zip"
        start = time.perf_counter()
        write_zip(big, args.images, 64)
        write_zip(cifar, 5000, 32)
        print(f"wrote {args.images} 64x64 PNGs ({big.stat().st_size / 2**20:.0f} MiB zip) "
              f"in {time.perf_counter() - start:.0f} s")
        uint8_bytes = args.images * 64 * 64 * 3
        with PeakMemory() as mem:
            img_s = stream(big, args.workers, batches=max(10, args.images // 128 // 10))
        ratio = mem.peak / uint8_bytes
        print(f"peak memory (PSS, process + {args.workers} loader workers) {mem.peak / 2**20:.0f} MiB "
              f"= {ratio:.2f}x the uint8 set ({uint8_bytes / 2**20:.0f} MiB); goal <= 1.5x")
        print(f"loader: {img_s:.0f} images/s (64x64 PNG decode + x-flip, {args.workers} workers, batch 128)")
        digits = load_config(REPO / "configs/mini/digits_ect.yaml")
        digits = digits.model_copy(update={"eval": digits.eval.model_copy(update={"metric": None}), "init": None})
        share_digits = data_share(digits, args.steps)
        cifar_cfg = TrainConfig.model_validate({
            **json.loads(digits.model_dump_json()),
            "data": {"name": "image_folder", "path": str(cifar), "xflip": True, "loader_workers": args.workers},
            "schedule": {"batch_size": 128, "iterations": 10**6},
        })
        share_cifar = data_share(cifar_cfg, args.steps)
        print(f"waiting for data: digits step (in memory, batch {digits.schedule.batch_size}) "
              f"{share_digits:.1%}; CIFAR-shaped step (streamed, batch 128) {share_cifar:.1%}; goal < 5 %")
    print(f"summary: {summary_fields()} peak_over_uint8={ratio:.2f} loader_img_s={img_s:.0f} data_share_digits={share_digits:.4f} "
          f"data_share_cifar={share_cifar:.4f} images={args.images} workers={args.workers}")


if __name__ == "__main__":
    main()
