"""The files a run reads before it can train or evaluate, checked without loading them (and without torch).

`input_problems(cfg)` names each missing input by its config field: the `init` checkpoint, the
dataset's `data.path` and the feature extractor's weights for `eval.metric`. A study checks every run
this way before anything starts, so a run that could only fail is refused in a second, not after minutes.
The extractor weights are looked up here and by `trainer.metrics.extractors` with the same rules
(`find_weights`), so what is checked is what the evaluation will read.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import TrainConfig

ENV_INCEPTION_WEIGHTS = "ECT_INCEPTION_WEIGHTS"
ENV_DINOV2_WEIGHTS = "ECT_DINOV2_WEIGHTS"
INCEPTION_FILES = ("pt_inception-2015-12-05-6726825d.pth", "inception-2015-12-05.pt")


@dataclass(frozen=True)
class WeightsSpec:
    """Where a pretrained extractor's weights may be: a file name (or names) in a directory, or an env var."""

    env_var: str
    filenames: tuple[str, ...]
    what: str


def dinov2_weights(arch: str) -> WeightsSpec:
    """DINOv2's weights file for `arch` (vitl14, vitb14), as published by its authors."""
    return WeightsSpec(ENV_DINOV2_WEIGHTS, (f"dinov2_{arch}_pretrain.pth",), f"DINOv2 {arch.upper()}")


INCEPTION = WeightsSpec(ENV_INCEPTION_WEIGHTS, INCEPTION_FILES, "Inception-v3 (FID)")
METRIC_WEIGHTS = {"fd_inception": INCEPTION, "fd_dinov2": dinov2_weights("vitl14"),
                  "fd_dinov2_vitb14": dinov2_weights("vitb14")}  # fd_digits trains its own classifier if none is given


@dataclass(frozen=True)
class InputProblem:
    """A missing input: the config field (dotted), what is wrong with it and the path it names (if one)."""

    field: str
    message: str
    path: Path | None = None


def hub_checkpoints_dir() -> Path:
    """torch's hub cache (`torch.hub.get_dir()/checkpoints`); computed by torch's rule when torch is not loaded."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def _candidates(root: Path, filenames: tuple[str, ...]) -> list[Path]:
    """A file itself, or inside a directory: the file names directly, in `checkpoints/` or `hub/checkpoints/`."""
    if not root.is_dir():
        return [root]
    subdirs = (root, root / "checkpoints", root / "hub" / "checkpoints")
    return [d / f for d in subdirs for f in filenames]


def find_weights(weights: Path | None, spec: WeightsSpec) -> tuple[Path | None, str]:
    """(the weights file, or None; a one-line account of where it was looked for): `weights`, else the
    spec's environment variable, else the torch hub cache."""
    if weights is not None:
        root, source = Path(weights), "--weights / eval.weights"
    elif os.environ.get(spec.env_var):
        root, source = Path(os.environ[spec.env_var]), f"${spec.env_var}"
    else:
        root, source = hub_checkpoints_dir(), "the torch hub cache"
    for path in _candidates(root.expanduser(), spec.filenames):
        if path.is_file():
            return path, ""
    return None, (f"{spec.what} weights not found: expected {' or '.join(spec.filenames)} at {root} (from {source}); "
                  f"pass --weights PATH or set {spec.env_var}")


def input_problems(cfg: TrainConfig, init_from_run: bool = False) -> list[InputProblem]:
    """Every input of `cfg` that is not on disk; `init_from_run`: the init checkpoint is another run's output
    (a study's pretraining), written before this run starts, so it is not checked."""
    problems = []
    if cfg.init is not None and not init_from_run and not Path(cfg.init).is_file():
        problems.append(InputProblem("init", f"{cfg.init}: checkpoint file not found", Path(cfg.init)))
    path = getattr(cfg.data, "path", None)
    if path is not None and not Path(path).exists():
        problems.append(InputProblem("data.path", f"{path}: dataset not found (a directory, .zip or .tar.gz)", Path(path)))
    metric = cfg.eval.metric
    if metric in METRIC_WEIGHTS:
        found, why = find_weights(cfg.eval.weights, METRIC_WEIGHTS[metric])
        if found is None:
            problems.append(InputProblem("eval.weights", why))
    elif metric == "fd_digits" and cfg.eval.weights is not None and not Path(cfg.eval.weights).is_file():
        problems.append(InputProblem("eval.weights", f"{cfg.eval.weights}: digits classifier weights not found "
                                                     "(omit eval.weights to train the classifier on first use)",
                                     Path(cfg.eval.weights)))
    return problems
