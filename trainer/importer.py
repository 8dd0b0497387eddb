"""Importing pretrained EDM / EDM2 weights into this trainer's networks.

Two sources:
- a plain state-dict file (weights only) whose names follow EDM (`model.*`) or EDM2 (`unet.*`);
- NVIDIA's original `.pkl` snapshots, only with `trust_pickle=True`. They are pickles of
  `torch_utils.persistence` objects that carry Python source; we unpickle them with an allow-list
  and *never* execute that source: each persistent object becomes a stub holding its saved
  `state`, from which the `ema` network's tensors are collected.

The result is a state dict of `trainer.precond.Precond` (keys `model.*`) plus a report of missing,
unexpected and ignored keys.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, _load
from .config import EDM2Config, SongUNetConfig
from .networks import build_network
from .precond import Precond

# name -> (network config, sample shape, label dim); the networks whose published weights we import.
ARCHS: dict[str, tuple[Any, tuple[int, ...], int]] = {
    "ddpmpp": (SongUNetConfig(model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16],
                              dropout=0.2, augment_dim=9), (3, 32, 32), 0),
    "ddpmpp-cond": (SongUNetConfig(model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16],
                                   dropout=0.2, augment_dim=9, conditional=True), (3, 32, 32), 10),
    **{
        f"edm2-{size}": (EDM2Config(model_channels=ch, dropout=p, conditional=True), (3, 64, 64), 1000)
        for size, ch, p in (("s", 192, 0.4), ("m", 256, 0.5), ("l", 320, 0.5), ("xl", 384, 0.5))
    },
}

# EDM2's learned log-variance head (uncertainty weighting of its loss); ECT does not use it.
IGNORED_PREFIXES = ("logvar_fourier.", "logvar_linear.")


@dataclass
class ImportReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    source_keys: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def lines(self) -> list[str]:
        out = [f"{self.source_keys} tensors read"]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("ignored", self.ignored)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                out.append(f"{label} ({len(keys)}): {shown}")
        return out


def reference_model(arch: str) -> Precond:
    """The Precond network an import targets (built on the meta device: no memory used)."""
    if arch not in ARCHS:
        raise ValueError(f"--arch: unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
    cfg, shape, labels = ARCHS[arch]
    with torch.device("meta"):
        return Precond(build_network(cfg, sample_shape=shape, label_dim=labels), label_dim=labels)


def normalize_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map EDM (`model.`) / EDM2 (`unet.`) / bare backbone names onto `model.*`; split off ignored keys."""
    out, ignored = {}, []
    for key, value in state.items():
        bare = key.removeprefix("model.").removeprefix("unet.")
        if bare.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        out["model." + bare] = value
    return out, ignored


def import_weights(
    src: Path, target: str | Precond, trust_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """Read `src` and return (state dict for `target`, report). `target` is an `ARCHS` name or a
    Precond network (e.g. built from a TrainConfig, possibly on the meta device). Shapes must match."""
    src = Path(src)
    ref = (reference_model(target) if isinstance(target, str) else target).state_dict()
    if src.suffix == ".pkl":
        if not trust_pickle:
            raise CheckpointError(
                f"{src}: NVIDIA .pkl snapshots are pickles that can execute code; pass --trust-pickle to import it"
            )
        raw = read_nvidia_pickle(src)
    else:
        raw = _load(src)
        if not (isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values())):
            raise CheckpointError(f"{src}: expected a state dict of tensors (EDM / EDM2 names)")
    state, ignored = normalize_keys(raw)
    report = ImportReport(
        missing=sorted(set(ref) - set(state)),
        unexpected=sorted(set(state) - set(ref)),
        ignored=sorted(ignored),
        source_keys=len(raw),
    )
    bad_shapes = [k for k in set(ref) & set(state) if tuple(ref[k].shape) != tuple(state[k].shape)]
    if bad_shapes:
        k = sorted(bad_shapes)[0]
        raise CheckpointError(
            f"{src}: {len(bad_shapes)} tensors have the wrong shape for the target network, e.g. {k}: "
            f"{tuple(state[k].shape)} vs {tuple(ref[k].shape)}"
        )
    return {k: v.float().contiguous() for k, v in state.items() if k in ref}, report


# --------------------------------------------------------------------------- NVIDIA pickles


class _PersistentStub:
    """Stands in for a `torch_utils.persistence` object: keeps its saved state, runs none of its code."""

    def __init__(self, meta: dict):
        self.class_name = meta.get("class_name", "?")
        self.state = meta.get("state") or {}


def _reconstruct_stub(meta: dict) -> _PersistentStub:
    return _PersistentStub(meta)


class _EasyDict(dict):
    """dnnlib.EasyDict without dnnlib."""


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_stub,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("builtins", "object"): object,
    ("torch.storage", "_load_from_bytes"): lambda b: torch.load(io.BytesIO(b), weights_only=True),
    ("torch", "Size"): torch.Size,
}


class _SnapshotUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules."):  # plain torch modules inside persistent ones
            return _TorchModuleStub
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


class _TorchModuleStub:
    """Rebuilt in place of a torch.nn module: pickle restores its __dict__ through __setstate__."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Walk a stub tree (module `state` dicts) collecting parameters and persistent buffers."""
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    skip = set(state.get("_non_persistent_buffers_set", ()))
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if isinstance(t, torch.Tensor) and name not in skip:
                out[prefix + name] = t.detach()
    for name, child in (state.get("_modules") or {}).items():
        _collect(child, f"{prefix}{name}.", out)


def read_nvidia_pickle(path: Path, key: str = "ema") -> dict[str, torch.Tensor]:
    """The state dict of snapshot[`key`] of an EDM / EDM2 `.pkl`, without executing embedded code."""
    try:
        with open(path, "rb") as f:
            snapshot = _SnapshotUnpickler(f).load()
    except Exception as e:  # garbage can fail in many ways (MemoryError, OverflowError, ...): all mean "not a snapshot"
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not an EDM/EDM2 snapshot ({reason})") from None
    if not isinstance(snapshot, dict) or key not in snapshot:
        raise CheckpointError(f"{path}: snapshot has no {key!r} network")
    out: dict[str, torch.Tensor] = {}
    _collect(snapshot[key], "", out)
    if not out:
        raise CheckpointError(f"{path}: the {key!r} entry holds no tensors")
    return out
