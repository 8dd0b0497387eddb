"""`train()`: one ECT or diffusion-pretraining run, from a TrainConfig to a checkpoint.

The loop knows nothing of Ray, the store or the CLI; it reports through a `Reporter`.
A run directory holds one rolling `checkpoint.pt`; calling `train()` again on the same directory
resumes from it (same weights-determining config and init weights required: `weights_identity`) and
continues the same schedule bit for bit on a CPU.
Under an initialised `torch.distributed` process group the run is data-parallel (see
`trainer.distributed`): `schedule.batch_size` is the global batch, split over the ranks and then
into micro-batches of `batch_per_device`; rank 0 owns the EMA, evaluation, checkpoints and reports.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import torch

from . import distributed
from .checkpoint import (CHECKPOINT_NAME, CheckpointError, ema_weights, load_checkpoint, load_weights, save_checkpoint,
                         weights_digest)
from .config import TrainConfig, batch_error, weights_identity
from .data import AnyDataset, data_shape, load_dataset
from .ect import LossOutput, draw_noise, ect_loss, stage
from .ema import EMA
from .inputs import input_problems
from .flops import TUNING_BUDGET_IMAGES, forward_flops_per_sample, step_flops
from .evaluation import Evaluator
from .networks import build_network
from .optim import learning_rate, make_optimizer, set_learning_rate
from .precond import Precond
from .reporter import NullReporter, Reporter


@dataclass
class TrainResult:
    status: Literal["completed", "diverged"]
    step: int  # completed iterations (for a diverged run: the step whose loss or gradient was non-finite)
    images_seen: int
    train_flops: float
    flops_per_sample: int
    num_params: int
    checkpoint: Path | None
    final_loss: float | None
    message: str = ""

    @property
    def normalized_compute(self) -> float:
        """Training compute in the paper's unit: multiples of 12.8 M tuning images."""
        return self.images_seen / TUNING_BUDGET_IMAGES


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA on a machine without it is an error.

    A plain 'cuda' (or 'auto') becomes this rank's GPU, `cuda:<local rank>`, in a data-parallel run.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name!r} requested but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch CPU threads, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_model(cfg: TrainConfig, sample_shape: tuple[int, ...], num_classes: int) -> Precond:
    """The preconditioned network f_theta for this config and data shape (on the CPU)."""
    label_dim = num_classes if cfg.network.conditional else 0
    backbone = build_network(cfg.network, sample_shape=sample_shape, label_dim=num_classes)
    return Precond(backbone, cfg.precond.sigma_data, cfg.precond.sigma_min, label_dim)


def meta_model(cfg: TrainConfig) -> Precond:
    """The network of a config on the meta device (names and shapes only), without loading its data."""
    shape, labels = data_shape(cfg.data)
    with torch.device("meta"):
        return build_model(cfg, shape, labels)


_NETWORK_COSTS: dict[str, tuple[int, int]] = {}


def network_cost(cfg: TrainConfig) -> tuple[int, int]:
    """(forward FLOPs per sample, parameter count) of a config's network, measured on the meta device once per
    network and dataset in this process: the runs of a study mostly share one network, and building it is not free."""
    key = cfg.network.model_dump_json() + cfg.data.model_dump_json()
    if key not in _NETWORK_COSTS:
        net = meta_model(cfg)
        flops = forward_flops_per_sample(net, data_shape(cfg.data)[0], torch.device("meta"))
        _NETWORK_COSTS[key] = (flops, sum(p.numel() for p in net.parameters()))
    return _NETWORK_COSTS[key]


def _autocast(cfg: TrainConfig, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if cfg.precision == "bf16":
        if device.type == "cuda":
            return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        warnings.warn("precision: bf16 autocast is applied on CUDA only; this CPU run uses fp32", stacklevel=3)
    return contextlib.nullcontext


def _speed_options(cfg: TrainConfig, device: torch.device, net: Precond, images: bool,
                   ranks: distributed.Ranks) -> torch.nn.Module:
    """Apply the CUDA-only options (TF32, channels_last, torch.compile) and DDP with several ranks;
    return the module to train with.

    torch.compile runs with inductor's `fallback_random`, so dropout draws the same numbers as eager
    mode and the ECT target pass can replay the x_t pass's masks by restoring the RNG state.
    """
    if device.type != "cuda":
        return distributed.wrap(net, ranks, device)
    torch.backends.cuda.matmul.allow_tf32 = cfg.gpu.tf32
    torch.backends.cudnn.allow_tf32 = cfg.gpu.tf32
    if cfg.gpu.channels_last and images:
        net.to(memory_format=torch.channels_last)
    module = distributed.wrap(net, ranks, device)
    if cfg.gpu.compile:
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True
        return torch.compile(module)
    return module


class RunState:
    """The mutable state of one run: model, EMA, optimizer, RNGs and counters."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, data: AnyDataset, device: torch.device,
                 ranks: distributed.Ranks | None = None):
        self.cfg, self.run_dir, self.data, self.device = cfg, run_dir, data, device
        self.ranks = ranks or distributed.Ranks()
        problem = batch_error(cfg.schedule.batch_size, self.ranks.world, cfg.schedule.batch_per_device)
        if problem:
            raise ValueError(problem)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # dropout and noise draw from this device's generator
        self.autocast = _autocast(cfg, device)
        torch.manual_seed(cfg.seed)
        self.net = build_model(cfg, data.sample_shape, data.num_classes).to(device).train()
        self.init_digest = _load_init(self.net, cfg.init) if cfg.init is not None else None
        self.channels_last = device.type == "cuda" and cfg.gpu.channels_last and data.kind == "image"
        self.train_net = _speed_options(cfg, device, self.net, data.kind == "image", self.ranks)
        self.ema = EMA(self.net, cfg.ema) if self.ranks.is_main else None
        self.opt = make_optimizer(self.net.parameters(), cfg.optim)
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.images_seen = 0
        self.train_flops = 0.0
        self.source = data.source(device, labels=bool(self.net.label_dim))
        self.flops_per_sample = forward_flops_per_sample(self.net, data.sample_shape, device)
        self._evaluator: Evaluator | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's share of the step's batch: every rank draws the global indices and takes its rows."""
        batch = self.cfg.schedule.batch_size
        x, labels = self.source.next_batch(self.data_gen, batch, self.ranks.shard(batch))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels

    def state(self) -> dict:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {
            "config": self.cfg.to_json(),
            "init_digest": self.init_digest,
            "data_info": {"sample_shape": list(self.data.sample_shape), "num_classes": self.data.num_classes},
            "step": self.step,
            "images_seen": self.images_seen,
            "train_flops": self.train_flops,
            "net": self.net.state_dict(),
            "emas": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "rng": {"cpu": torch.get_rng_state(), "cuda": cuda, "data": self.data_gen.get_state()},
        }

    def restore(self, state: dict) -> None:
        saved = TrainConfig.from_json(state["config"])  # resume needs the same weights-determining config only
        if (weights_identity(saved) != weights_identity(self.cfg) or (saved.init is None) != (self.cfg.init is None)
                or state.get("init_digest", self.init_digest) != self.init_digest):
            raise CheckpointError(
                f"{self.checkpoint_path}: holds a run with a different config; use another run directory"
            )
        self.net.load_state_dict(state["net"])
        if self.ema is not None:
            self.ema.load_state_dict(state["emas"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.data_gen.set_state(state["rng"]["data"])
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.train_flops = float(state["train_flops"])

    def evaluator(self) -> Evaluator:
        """The run's Evaluator, built on first use (extractor and reference statistics)."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.cfg.eval, self.cfg.sampling, self.data, self.device)
        return self._evaluator

    def advance(self) -> StepOutput:
        """One training iteration. On a non-finite loss or gradient, nothing is updated."""
        it, total = self.step, self.cfg.schedule.iterations
        lr = learning_rate(self.cfg.optim, it)
        set_learning_rate(self.opt, lr)
        x0, labels = self.batch()
        a = stage(it, self.cfg.ect, total)
        self.opt.zero_grad(set_to_none=True)
        out = self._accumulate(x0, labels, a)
        grad_norm = _grad_norm(self.net)
        finite = bool(torch.isfinite(out.loss) and torch.isfinite(grad_norm))
        if self.ranks.world > 1:  # every rank takes the step or none does; report the global batch's mean loss
            finite, loss_sum = distributed.all_ranks_ok(finite, out.loss.item() * x0.shape[0], self.ranks, self.device)
            out.loss = torch.tensor(loss_sum / self.cfg.schedule.batch_size)
        if finite:
            self.opt.step()
            if self.ema is not None:
                self.ema.update(self.net, it)
            self.step += 1
            batch = self.cfg.schedule.batch_size  # all ranks' images
            self.images_seen += batch
            self.train_flops += step_flops(batch, self.flops_per_sample, out.target_pass)
        return StepOutput(out, grad_norm, lr, finite)

    def _accumulate(self, x0: torch.Tensor, labels: torch.Tensor | None, a: int) -> LossOutput:
        """Forward and backward over micro-batches of `schedule.batch_per_device`, gradients summed
        so that they equal those of the mean loss over the whole batch."""
        micro = self.cfg.schedule.batch_per_device or x0.shape[0]
        # Drawn for the whole global batch on every rank, then this rank's rows: a sample's noise does
        # not depend on `micro` or on the number of ranks.
        global_shape = (self.cfg.schedule.batch_size, *x0.shape[1:])
        t, eps = draw_noise(global_shape, x0.device, self.cfg.ect)
        rows = self.ranks.shard(global_shape[0])
        t, eps = t[rows], eps[rows]
        parts = []
        with distributed.rank_rng(self.ranks, self.cfg.seed, self.step, self.device):
            for start in range(0, x0.shape[0], micro):
                sl = slice(start, start + micro)
                lab = None if labels is None else labels[sl]
                with distributed.sync_gradients(self.train_net, last=start + micro >= x0.shape[0]):
                    out = ect_loss(self.train_net, x0[sl], lab, a, self.cfg.ect, self.autocast, (t[sl], eps[sl]))
                    (out.loss * (out.per_sample.shape[0] / x0.shape[0])).backward()
                parts.append(out)
        if len(parts) == 1:
            return parts[0]
        per_sample = torch.cat([p.per_sample for p in parts])
        return LossOutput(
            per_sample.mean(), per_sample, torch.cat([p.t for p in parts]), torch.cat([p.r for p in parts]),
            a, any(p.target_pass for p in parts),
        )

    def save(self, reporter: Reporter) -> Path:
        """Rank 0 writes the one checkpoint (atomically); the other ranks write nothing."""
        if self.ranks.is_main:
            save_checkpoint(self.checkpoint_path, self.state())
            reporter.checkpoint(self.step, self.checkpoint_path)
        return self.checkpoint_path


@dataclass
class StepOutput:
    loss: LossOutput
    grad_norm: torch.Tensor
    lr: float
    finite: bool


def _load_init(net: Precond, path: Path) -> str:
    """Initialise from a checkpoint's EMA or a state dict of the preconditioned network; returns its digest."""
    weights = load_weights(path)
    result = net.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match the network (missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )
    return weights_digest(weights)


def _grad_norm(net: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().norm() for p in net.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def _due(step: int, interval: int, total: int) -> bool:
    return step == total or (interval > 0 and step % interval == 0)


class SetupError(ValueError):
    """A run that cannot take its first step: a missing or unreadable input (dataset, init or extractor weights,
    the checkpoint it resumes) or a config its data cannot satisfy. Running it again fails the same way, so a
    scheduler marks it failed at once instead of retrying; the cause is chained."""


def _set_up(cfg: TrainConfig, run_dir: Path, ranks: distributed.Ranks, resume: bool) -> RunState:
    """The run's state, resumed from its checkpoint when asked; every input is checked before any training
    work (the extractor's weights too, which the first evaluation reads only at the end of a run)."""
    problems = input_problems(cfg)
    if problems:
        raise SetupError("; ".join(f"{p.field}: {p.message}" for p in problems))
    try:
        data = load_dataset(cfg.data)
        run = RunState(cfg, run_dir, data, resolve_device(cfg.device, ranks.local_rank), ranks)
        if resume and run.checkpoint_path.exists():
            run.restore(load_checkpoint(run.checkpoint_path))
    except (ValueError, FileNotFoundError) as e:  # the data, weight and checkpoint errors (DataError, CheckpointError, ...)
        raise SetupError(str(e)) from e
    return run


def train(cfg: TrainConfig, run_dir: Path, reporter: Reporter | None = None, resume: bool = True) -> TrainResult:
    """Train until `cfg.schedule.iterations`, resuming from `run_dir/checkpoint.pt` when present.

    A non-finite loss or gradient stops the run with status "diverged" (no optimizer step is taken
    with it and the last good checkpoint is kept).
    """
    ranks = distributed.current()
    reporter = (reporter or NullReporter()) if ranks.is_main else NullReporter()
    run = _set_up(cfg, Path(run_dir), ranks, resume)
    if run.step:
        reporter.metrics(run.step, {"resumed_from": float(run.step)})  # how much work an interruption cost
    total, sched = cfg.schedule.iterations, cfg.schedule
    loss_value: float | None = None
    t0, images_at_t0 = time.perf_counter(), run.images_seen

    def result(status: str, step: int, message: str = "") -> TrainResult:
        ckpt = run.checkpoint_path if run.checkpoint_path.exists() else None
        num_params = sum(p.numel() for p in run.net.parameters())
        return TrainResult(
            status, step, run.images_seen, run.train_flops, run.flops_per_sample, num_params, ckpt, loss_value, message
        )

    while run.step < total:
        s = run.advance()
        if not s.finite:
            what = "loss" if not torch.isfinite(s.loss.loss) else "gradient"
            step = run.step + 1
            msg = f"non-finite {what} at step {step} (loss {s.loss.loss.item():.4g}, grad norm {s.grad_norm.item():.4g})"
            reporter.metrics(step, {"diverged": 1.0})
            return result("diverged", step, msg)
        if _due(run.step, sched.log_interval, total):
            loss_value = s.loss.loss.item()
            elapsed = time.perf_counter() - t0
            reporter.metrics(run.step, {
                "loss": loss_value,
                "grad_norm": s.grad_norm.item(),
                "lr": s.lr,
                "stage": float(s.loss.stage),
                "mean_r_over_t": (s.loss.r / s.loss.t).mean().item(),
                "images_per_s": (run.images_seen - images_at_t0) / max(elapsed, 1e-9),
                "train_flops": run.train_flops,
            })
        if cfg.eval.metric is not None and ranks.is_main and _due(run.step, sched.eval_interval, total):
            run.evaluator().evaluate(run.ema.first(), run.step, reporter)
        if _due(run.step, sched.checkpoint_interval, total):
            run.save(reporter)
    return result("completed", run.step)


def load_model(path: Path, ema: str | None = None, device: str = "cpu") -> tuple[Precond, TrainConfig, tuple[int, ...]]:
    """Rebuild a checkpoint's network with its EMA weights (eval mode) for sampling: (net, config, sample shape)."""
    state = load_checkpoint(path)
    cfg = TrainConfig.from_json(state["config"])
    shape = tuple(int(s) for s in state["data_info"]["sample_shape"])
    net = build_model(cfg, shape, int(state["data_info"]["num_classes"]))
    net.load_state_dict(ema_weights(state, path, ema))
    return net.to(device).eval().requires_grad_(False), cfg, shape


