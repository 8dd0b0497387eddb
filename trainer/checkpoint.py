"""Checkpoints: written atomically (temp file + rename), read with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors and plain values only (no pickled code): the run's config as
JSON, the step, the network, its EMAs, the optimizer, the RNG states and the compute counters.
torch is imported by the functions that need it: a study's driver uses the file name and the
error type only, and starts 1-2 s sooner without it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FORMAT = "ect-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used; the message names the file."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write an ECT checkpoint so that a crash at any moment leaves the previous file intact."""
    _atomic_save(Path(path), {"format": FORMAT, **state})


def save_state_dict(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Write a plain state dict of tensors (e.g. imported weights), atomically."""
    _atomic_save(Path(path), dict(state))


def _atomic_save(path: Path, obj: Any) -> None:
    """torch.save to a temp file in the same directory, fsync, then rename over `path`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except RuntimeError as e:  # torch's short-write "enforce fail": say which file (a full disk, usually)
        raise CheckpointError(f"{path}: could not write the checkpoint ({str(e).strip().splitlines()[0][:200]})") from e
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _load(path: Path) -> Any:
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, code-carrying pickle refused by weights_only
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable weights-only torch file ({first[:160]})") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load an ECT checkpoint written by `save_checkpoint`."""
    state = _load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ECT checkpoint (expected format {FORMAT!r})")
    return state


def load_weights(path: Path, ema: str | None = None) -> dict[str, torch.Tensor]:
    """Network weights from an ECT checkpoint (its EMA `ema`, default the first) or a plain state dict."""
    import torch

    state = _load(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return ema_weights(state, path, ema)
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    raise CheckpointError(f"{path}: neither an ECT checkpoint nor a state dict of tensors")


def ema_weights(state: dict[str, Any], path: Path, ema: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict of EMA `ema` (default: the first) of a loaded checkpoint."""
    emas = state["emas"]
    name = ema or next(iter(emas))
    if name not in emas:
        raise CheckpointError(f"{path}: no EMA named {name!r} (has {sorted(emas)})")
    return emas[name]


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, dtypes, shapes and bytes): identifies init weights wherever they lie."""
    import torch

    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]
