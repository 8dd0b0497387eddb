"""Data parallelism for `train()` when a `torch.distributed` process group is initialised.

Whoever launches the ranks (Ray Train's TorchTrainer, torchrun, a test) sets up the process
group; the trainer only asks for its rank and world size here. With no process group, every
function is the single-process identity, so a plain run does exactly what it did before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 owns the EMA, evaluation, checkpoints and reporting."""
        return self.rank == 0

    def local_batch(self, global_batch: int) -> int:
        """This rank's share of the global batch (the caller checks divisibility up front)."""
        return global_batch // self.world

    def shard(self, global_batch: int) -> slice:
        """The rows of a global batch that this rank trains on."""
        n = self.local_batch(global_batch)
        return slice(self.rank * n, (self.rank + 1) * n)


def current() -> Ranks:
    """The ranks of the initialised process group, or a single process."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return Ranks()
    return Ranks(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class _DDP(DistributedDataParallel):
    """DDP that still exposes the preconditioner's `sigma_data` (the ECT loss reads it)."""

    @property
    def sigma_data(self) -> float:
        return self.module.sigma_data


def wrap(net: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """DDP around `net` when there are several ranks (gradients averaged across them), else `net`.

    Buffers are not broadcast on forward: the ECT target pass runs on a rank only when some r > 0
    there, so the ranks may make different numbers of forward calls per step.
    """
    if ranks.world == 1:
        return net
    ids = [device.index] if device.type == "cuda" else None
    return _DDP(net, device_ids=ids, broadcast_buffers=False)


def sync_gradients(module: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """Within accumulation, only the last micro-batch's backward all-reduces gradients."""
    no_sync = getattr(module, "no_sync", None)
    return contextlib.nullcontext() if last or no_sync is None else no_sync()


def all_ranks_ok(ok: bool, loss_sum: float, ranks: Ranks, device: torch.device) -> tuple[bool, float]:
    """(every rank ok, loss summed over ranks): one all-reduce, so a bad step stops every rank alike."""
    t = torch.tensor([0.0 if ok else 1.0, loss_sum], dtype=torch.float64, device=device)
    torch_dist.all_reduce(t)
    return bool(t[0].item() == 0.0), float(t[1].item())


def _rank_seed(seed: int, step: int, rank: int) -> int:
    digest = hashlib.sha256(f"dropout:{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def rank_rng(ranks: Ranks, seed: int, step: int, device: torch.device) -> Iterator[None]:
    """With several ranks, the block draws (dropout masks) from a generator seeded by (seed, step, rank);
    on exit the device's generator is back where it was, so it stays equal on every rank and the next
    step's noise is the same whatever the number of ranks. With one rank it does nothing."""
    if ranks.world == 1:
        yield
        return
    cuda = device.type == "cuda"
    saved = torch.cuda.get_rng_state(device) if cuda else torch.get_rng_state()
    s = _rank_seed(seed, step, ranks.rank)
    if cuda:
        torch.cuda.manual_seed(s)  # the current device's generator: the one dropout draws from
    else:
        torch.manual_seed(s)
    try:
        yield
    finally:
        if cuda:
            torch.cuda.set_rng_state(saved, device)
        else:
            torch.set_rng_state(saved)
