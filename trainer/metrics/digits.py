"""A small CNN classifier of scikit-learn's 8x8 digits, the feature extractor of `fd_digits`.

Trained on first use, deterministically on the CPU (fixed seeds, one thread, deterministic
algorithms, the global RNG state restored afterwards), and cached as a weights-only state dict
whose file name holds a hash of `RECIPE`. Its held-out accuracy is stored next to it as JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import DigitsData
from ..data import load_dataset
from ._files import atomic_write

RECIPE: dict[str, Any] = {
    "data": "sklearn-digits-8x8 via trainer.data (x = pixel / 16 * 2 - 1)",
    "split": {"seed": 0, "test_size": 360},
    "arch": {"name": "digits-cnn-v1", "channels": [16, 32], "feature_dim": 128},
    "optim": {"name": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 20},
    "seed": 0,
}
MIN_TEST_ACCURACY = 0.95
RESOLUTION = 8


def recipe_hash() -> str:
    """First 12 hex digits of the sha256 of the canonical JSON of `RECIPE`."""
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]


class DigitsCNN(nn.Module):
    """conv3x3(16)-ReLU-conv3x3(32)-ReLU-maxpool2-fc(128)-ReLU-fc(10); `features` is the 128-d ReLU output."""

    def __init__(self) -> None:
        super().__init__()
        c1, c2 = RECIPE["arch"]["channels"]
        dim = RECIPE["arch"]["feature_dim"]
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * (RESOLUTION // 2) ** 2, dim)
        self.fc2 = nn.Linear(dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): the 8x8 digits in [-1, 1], split by a fixed permutation."""
    data = load_dataset(DigitsData(resolution=RESOLUTION))
    split = RECIPE["split"]
    perm = torch.from_numpy(np.random.default_rng(split["seed"]).permutation(len(data)))
    test, train = perm[: split["test_size"]], perm[split["test_size"] :]
    return data.x[train], data.labels[train], data.x[test], data.labels[test]


@contextlib.contextmanager
def _deterministic_cpu(seed: int) -> Iterator[None]:
    """One thread, deterministic algorithms and a seeded global RNG; everything restored on exit."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.set_num_threads(threads)


def accuracy(net: DigitsCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(dim=1) == y).double().mean())


def train_digits_cnn() -> tuple[DigitsCNN, float]:
    """Train the classifier by `RECIPE`, bit-for-bit reproducibly on a given CPU and torch version.

    Returns the network (eval mode) and its accuracy on the held-out split.
    """
    x_train, y_train, x_test, y_test = digits_split()
    opt_cfg = RECIPE["optim"]
    with _deterministic_cpu(RECIPE["seed"]):
        net = DigitsCNN()
        opt = torch.optim.Adam(net.parameters(), lr=opt_cfg["lr"])
        for _ in range(opt_cfg["epochs"]):
            order = torch.randperm(len(x_train))
            for start in range(0, len(order), opt_cfg["batch_size"]):
                idx = order[start : start + opt_cfg["batch_size"]]
                loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        return net, accuracy(net, x_test, y_test)


def cached_weights_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / f"digits_cnn-{recipe_hash()}.pt"


def ensure_digits_weights(cache_dir: Path) -> Path:
    """The cached weights file, training and writing it (with its JSON record) when absent."""
    path = cached_weights_path(cache_dir)
    if path.is_file():
        return path
    net, acc = train_digits_cnn()
    if acc <= MIN_TEST_ACCURACY:
        raise RuntimeError(f"digits classifier reached only {acc:.3f} held-out accuracy (need > {MIN_TEST_ACCURACY})")
    record = {"recipe": RECIPE, "recipe_hash": recipe_hash(), "test_accuracy": acc, "torch": torch.__version__}
    atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(record, indent=2).encode()))
    atomic_write(path, lambda f: torch.save(net.state_dict(), f))
    return path


def load_digits_cnn(path: Path) -> DigitsCNN:
    """A `DigitsCNN` (eval mode, no grad) from a weights-only state dict file."""
    net = DigitsCNN()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)
