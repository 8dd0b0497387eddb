"""Datasets for ECT training: small ones in memory, image folders and zips read lazily.

`load_dataset(cfg)` turns one of the `trainer.config` data configs into a dataset. Digits and the
swiss roll are tiny float32 tensors in [-1, 1]; CIFAR-10 stays uint8 (1 byte per pixel) and is
converted per batch; an image folder or EDM-style zip keeps only its file names in memory and is
decoded (and x-flipped) in `DataLoader` worker processes, each rank reading only its rows of every
global batch. Every problem with the files on disk becomes a one-line `DataError` naming the file
and what was expected.

Which rows a step trains on (and which are flipped) is drawn by `draw_rows` from the run's data
generator, the same way for every kind of dataset, so a streamed run sees exactly the batches an
in-memory run of the same data would.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import io
import json
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

SWISSROLL_SCALE = 15.0
"""Swiss-roll coordinates span about [-10, 13]; dividing by this constant gives a per-axis std of
about 0.45, close to sigma_data = 0.5. It is fixed, not data-dependent, so every seed has the same scale."""

CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_SUBDIR = "cifar-10-batches-py"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# PIL mode -> the mode we store: 1 channel ("L") or 3 ("RGB"); alpha is dropped.
_MODES = {"L": "L", "1": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB", "P": "RGB", "PA": "RGB", "CMYK": "RGB"}


class DataError(ValueError):
    """A dataset that cannot be loaded; message is one line naming the file/path and what was expected."""


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [-1, 1] (x / 127.5 - 1); float data is returned as it is."""
    return x.float().div_(127.5).sub_(1.0) if x.dtype == torch.uint8 else x


def draw_rows(gen: torch.Generator, n: int, batch: int, xflip: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The global batch of one step: `batch` row indices in [0, n) and, with `xflip`, which rows to flip."""
    idx = torch.randint(n, (batch,), generator=gen)
    return idx, (torch.randint(2, (batch,), generator=gen).bool() if xflip else None)


class BatchSource(Protocol):
    """Where a run's training batches come from (see `Dataset.source`)."""

    def next_batch(self, gen: torch.Generator, batch: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw the next global batch from `gen`; return this rank's `rows` of it as float32 in [-1, 1]
        on the device, with their labels (or None)."""
        ...


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset in memory: `x` is float32 in [-1, 1] (digits, points [N, 2]) or uint8 images
    [N, C, H, W] (CIFAR-10), converted batch by batch."""

    x: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    name: str
    xflip: bool = False

    @property
    def kind(self) -> str:
        """"image" for [N, C, H, W] data, "points" otherwise."""
        return "image" if self.x.ndim == 4 else "points"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def floats(self) -> torch.Tensor:
        """The whole set as float32 in [-1, 1] (evaluation reference statistics)."""
        return to_float(self.x)

    def source(self, device: torch.device, labels: bool) -> BatchSource:
        return _InMemory(self, device, labels)


class _InMemory:
    """Batches by indexing a tensor on the device: no DataLoader, nothing per step but the gather."""

    def __init__(self, data: Dataset, device: torch.device, labels: bool):
        self.x, self.xflip = data.x.to(device), data.xflip
        self.labels = data.labels.to(device) if labels and data.labels is not None else None

    def next_batch(self, gen: torch.Generator, batch: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx, flip = draw_rows(gen, len(self.x), batch, self.xflip)
        idx = idx[rows].to(self.x.device)
        x = to_float(self.x[idx])
        if flip is not None:
            x = torch.where(flip[rows].to(x.device).reshape(-1, 1, 1, 1), x.flip(-1), x)
        return x, (self.labels[idx] if self.labels is not None else None)


def load_dataset(cfg: Any) -> "AnyDataset":
    """Load the dataset described by a `DigitsData`, `SwissRollData`, `Cifar10Data` or `ImageFolderData`."""
    loaders = {"digits": _digits, "swissroll": _swissroll, "cifar10": _cifar10, "image_folder": _image_folder}
    if cfg.name not in loaders:
        raise DataError(f"unknown dataset {cfg.name!r} (expected one of {', '.join(loaders)})")
    return loaders[cfg.name](cfg)


def _digits(cfg: Any) -> Dataset:
    """scikit-learn's bundled 8x8 digits (values 0..16), bilinearly upsampled to `cfg.resolution`."""
    table = np.loadtxt(gzip.open(_sklearn_data_file("digits.csv.gz"), "rt"), delimiter=",")
    images, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)  # as sklearn's load_digits
    x = torch.from_numpy(images).float().unsqueeze(1) / 16.0 * 2.0 - 1.0
    if cfg.resolution != x.shape[-1]:
        x = F.interpolate(x, size=(cfg.resolution, cfg.resolution), mode="bilinear", align_corners=False)
        x = x.clamp(-1.0, 1.0)
    return Dataset(x.contiguous(), torch.from_numpy(labels), 10, "digits")


def _sklearn_data_file(name: str) -> Path:
    """A data file bundled with scikit-learn, found without importing it (the import costs 2.5 CPU-s, which every
    training process would pay)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name if spec else None
    if path is None or not path.is_file():
        raise DataError(f"{name}: scikit-learn's bundled data file not found (pip install scikit-learn)")
    return path


def _swissroll(cfg: Any) -> Dataset:
    """The 2-D swiss roll (columns 0 and 2 of scikit-learn's 3-D one, computed as its `make_swiss_roll` does,
    draw for draw), divided by `SWISSROLL_SCALE`."""
    rng = np.random.RandomState(cfg.seed)
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=cfg.num_samples))
    height = 21 * rng.uniform(size=cfg.num_samples)
    pts = np.vstack((t * np.cos(t), height, t * np.sin(t)))
    pts += cfg.noise * rng.standard_normal(size=(3, cfg.num_samples))
    x = torch.from_numpy(pts.T[:, [0, 2]] / SWISSROLL_SCALE).float()
    return Dataset(x, None, 0, "swissroll")


def _why(e: BaseException) -> str:
    """An exception as one short line, for embedding in a DataError message."""
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]


def _existing(path: Path) -> Path:
    """`path` as a Path, or a DataError if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: dataset path not found (data.path)")
    return path


# --------------------------------------------------------------------------- CIFAR-10


def _numpy_reconstructors() -> dict[str, Any]:
    """The only globals a CIFAR-10 batch references, resolved from numpy itself (1.x and 2.x spellings)."""
    reconstruct = np.zeros(0).__reduce__()[0]
    frombuffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # protocol-5 pickles (Python 3.14's default)
    allowed = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[f"{core}.multiarray._reconstruct"] = reconstruct
        allowed[f"{core}.numeric._frombuffer"] = frombuffer
    allowed["_codecs.encode"] = codecs.encode  # protocol <= 2 pickles of bytes from Python 3
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else."""

    _allowed = _numpy_reconstructors()

    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get(f"{module}.{name}")
        if obj is None:
            raise DataError(f"{self._source}: refuses to unpickle {module}.{name}: not a CIFAR-10 batch")
        return obj


def _read_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle and validate one batch: data uint8 [n, 3072] (CHW) and labels int [n] in 0..9."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), source).load()
    except DataError:
        raise
    except Exception as e:  # truncated or corrupt pickles raise almost any exception type
        raise DataError(f"{source}: corrupt or truncated CIFAR-10 batch pickle ({_why(e)})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{source}: expected a pickled dict with b'data' and b'labels', got {type(batch).__name__}")
    data, labels = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{source}: expected b'data' as a uint8 array [n, 3072], got {got}")
    labels = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
    n = data.shape[0]
    if labels is None or labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{source}: expected b'labels' as {n} integers (one per image)")
    if n and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{source}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return data, labels.astype(np.int64)


def _cifar_raw_batches(path: Path) -> list[tuple[bytes, str]]:
    """The raw bytes of the five training batches, from a directory or (without extracting) a tarball."""
    if path.is_dir():
        nested = not (path / CIFAR_BATCHES[0]).exists() and (path / CIFAR_SUBDIR).is_dir()
        root = path / CIFAR_SUBDIR if nested else path
        missing = ", ".join(b for b in CIFAR_BATCHES if not (root / b).is_file())
        if missing:
            raise DataError(f"{root}: missing CIFAR-10 batch file(s) {missing} (expected data_batch_1..5)")
        return [((root / b).read_bytes(), str(root / b)) for b in CIFAR_BATCHES]
    try:
        with tarfile.open(path, "r:*") as tar:
            # Only exact expected names are read, so absolute or '..' members are never touched.
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            out = []
            for b in CIFAR_BATCHES:
                m = members.get(f"{CIFAR_SUBDIR}/{b}", members.get(b))
                if m is None:
                    raise DataError(f"{path}: archive has no member {CIFAR_SUBDIR}/{b} (expected data_batch_1..5)")
                out.append((tar.extractfile(m).read(), f"{path}:{m.name}"))
            return out
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not a readable CIFAR-10 .tar.gz archive ({_why(e)})") from None


def _cifar10(cfg: Any) -> Dataset:
    """CIFAR-10's 50k training images from the python-pickle batches, x = uint8 / 127.5 - 1."""
    batches = [_read_batch(raw, src) for raw, src in _cifar_raw_batches(_existing(cfg.path))]
    data = np.concatenate([d for d, _ in batches]).reshape(-1, 3, 32, 32)
    if data.shape[0] == 0:
        raise DataError(f"{cfg.path}: the CIFAR-10 batches hold no images")
    labels = torch.from_numpy(np.concatenate([lab for _, lab in batches]))
    return Dataset(torch.from_numpy(data), labels, 10, "cifar10", cfg.xflip)


# --------------------------------------------------------------------------- image folder / zip


class _Files:
    """Lazy access to the files of an image directory or zip: names in memory, bytes read on demand.

    A zip is opened once per process (DataLoader workers each open their own handle).
    """

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1
        try:
            if path.is_dir():
                self.names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
            else:
                self.names = [n for n in self._archive().namelist() if not n.endswith("/")]
        except Exception as e:
            raise DataError(f"{path}: expected a directory or a readable .zip of images ({_why(e)})") from None

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def open(self, name: str) -> IO[bytes]:
        return (self.path / name).open("rb") if self.path.is_dir() else self._archive().open(name)

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": -1}  # each worker process opens its own handle


def _junk(name: str) -> bool:
    """macOS archive metadata (`__MACOSX/`, `._name`) and hidden files: never images of the dataset."""
    parts = PurePosixPath(name).parts
    return any(p == "__MACOSX" or p.startswith(".") for p in parts)


def _header(f: IO[bytes], source: str) -> tuple[int, int, int]:
    """(height, width, channels) from an image's header, without decoding its pixels."""
    from PIL import Image

    try:
        img = Image.open(f)
    except Exception as e:
        raise DataError(f"{source}: cannot decode image ({_why(e)})") from None
    if img.mode not in _MODES:
        raise DataError(f"{source}: unsupported image mode {img.mode} (expected grayscale or RGB)")
    return img.height, img.width, 1 if _MODES[img.mode] == "L" else 3


def _decode(raw: bytes, source: str) -> np.ndarray:
    """Decode one image to uint8 [H, W, C] with C = 1 (grayscale) or 3 (RGB)."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except Exception as e:
        raise DataError(f"{source}: cannot decode image ({_why(e)})") from None
    if img.mode not in _MODES:
        raise DataError(f"{source}: unsupported image mode {img.mode} (expected grayscale or RGB)")
    arr = np.asarray(img.convert(_MODES[img.mode]), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _folder_labels(meta: bytes, source: str, names: list[str]) -> np.ndarray | None:
    """Labels from EDM's dataset.json `{"labels": [[path, int], ...] | null}`, one per image in `names`."""
    expected = 'expected {"labels": [["relative/path.png", int], ...]} or {"labels": null}'
    try:
        doc = json.loads(meta)
    except ValueError as e:
        raise DataError(f"{source}: invalid JSON ({e}); {expected}") from None
    if not isinstance(doc, dict) or "labels" not in doc:
        raise DataError(f"{source}: malformed dataset.json, {expected}")
    table = doc["labels"]
    if table is None:
        return None
    ok = isinstance(table, list) and all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
        and isinstance(e[1], int) and not isinstance(e[1], bool) and e[1] >= 0
        for e in table
    )
    if not ok:
        raise DataError(f"{source}: malformed dataset.json, {expected} with labels >= 0")
    lookup = dict(table)
    unlabelled = [n for n in names if n not in lookup]
    if unlabelled:
        raise DataError(f"{source}: no label for image {unlabelled[0]} (every image needs one)")
    return np.array([lookup[n] for n in names], dtype=np.int64)


class ImageFiles:
    """An image folder or zip, read lazily: only names and labels are held; pixels are decoded per batch.

    Shapes and modes are checked from every file's header at load; a file whose pixels turn out to
    be corrupt fails the run when it is first drawn, with the same one-line `DataError`.
    """

    kind = "image"

    def __init__(self, files: _Files, names: list[str], shape: tuple[int, int, int], labels: torch.Tensor | None,
                 num_classes: int, name: str, xflip: bool, loader_workers: int):
        self.files, self.names, self.sample_shape = files, names, shape
        self.labels, self.num_classes, self.name = labels, num_classes, name
        self.xflip, self.loader_workers = xflip, loader_workers

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        """Image `i` as uint8 [C, H, W]."""
        name = self.names[i]
        arr = _decode(self.files.read(name), f"{self.files.path}/{name}")
        if arr.shape != (self.sample_shape[1], self.sample_shape[2], self.sample_shape[0]):
            raise DataError(f"{self.files.path}/{name}: decoded to {arr.shape[1]}x{arr.shape[0]} with "
                            f"{arr.shape[2]} channel(s), unlike its header and the other images")
        return arr.transpose(2, 0, 1)

    def floats(self) -> torch.Tensor:
        """The whole set decoded to float32 in [-1, 1]: for evaluation reference statistics only."""
        return to_float(torch.from_numpy(np.stack([self.image(i) for i in range(len(self))])))

    @property
    def x(self) -> torch.Tensor:
        return self.floats()

    def source(self, device: torch.device, labels: bool) -> BatchSource:
        return _Streamed(self, device, labels)


class _Rows(torch.utils.data.Dataset):
    """Map-style view for the DataLoader: item (i, flip) is image i, decoded and flipped, and its label."""

    def __init__(self, data: ImageFiles):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, int, int]:
        i, flip = item
        arr = self.data.image(i)
        if flip:
            arr = arr[:, :, ::-1]
        label = int(self.data.labels[i]) if self.data.labels is not None else -1
        return torch.from_numpy(np.ascontiguousarray(arr)), label, i


class _StepSampler(torch.utils.data.Sampler):
    """This rank's rows of every step's global batch, drawn by `draw_rows` from a copy of the run's
    data generator, so the loader can run ahead of the training loop."""

    def __init__(self, gen_state: torch.Tensor, n: int, batch: int, rows: slice, xflip: bool):
        self.state, self.n, self.batch, self.rows, self.xflip = gen_state, n, batch, rows, xflip

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        gen = torch.Generator()
        gen.set_state(self.state)
        while True:
            idx, flip = draw_rows(gen, self.n, self.batch, self.xflip)
            idx = idx[self.rows].tolist()
            flips = flip[self.rows].tolist() if flip is not None else [False] * len(idx)
            yield list(zip(idx, flips))


class _Streamed:
    """Batches decoded by DataLoader workers, prefetched ahead of the step that trains on them.

    The run's own generator is advanced in step with the loader's copy, and each batch's indices are
    checked against it, so checkpoints and resumption see exactly the in-memory behaviour.
    """

    def __init__(self, data: ImageFiles, device: torch.device, labels: bool):
        self.data, self.device, self.labels = data, device, labels and data.labels is not None
        self._batches: Iterator | None = None

    def _start(self, gen: torch.Generator, batch: int, rows: slice) -> Iterator:
        workers = self.data.loader_workers
        sampler = _StepSampler(gen.get_state(), len(self.data), batch, rows, self.data.xflip)
        loader = torch.utils.data.DataLoader(
            _Rows(self.data), batch_sampler=sampler, num_workers=workers, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None, persistent_workers=bool(workers),
            generator=torch.Generator().manual_seed(0),  # its worker seeds must not draw from the global RNG
        )
        return iter(loader)

    def next_batch(self, gen: torch.Generator, batch: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._batches is None:
            self._batches = self._start(gen, batch, rows)
        idx, _ = draw_rows(gen, len(self.data), batch, self.data.xflip)
        try:
            pixels, labels, got = next(self._batches)
        except DataError as e:  # re-raised from a worker with its traceback: keep the message line
            lines = [ln for ln in str(e).splitlines() if "DataError:" in ln]
            raise DataError(lines[-1].split("DataError:", 1)[1].strip() if lines else str(e)) from None
        if not torch.equal(got, idx[rows]):
            raise RuntimeError("data loader out of step with the run's data generator")
        x = to_float(pixels.to(self.device, non_blocking=True))
        return x, (labels.to(self.device) if self.labels else None)


def _image_folder(cfg: Any) -> ImageFiles:
    """A directory or EDM-style zip of same-size square PNG/JPEG images, optionally labelled."""
    path = _existing(cfg.path)
    files = _Files(path)
    names = sorted(n for n in files.names if PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS and not _junk(n))
    if not names:
        raise DataError(f"{path}: no images found (expected {', '.join(IMAGE_EXTENSIONS)} files)")
    first = None
    for rel in names:
        src = f"{path}/{rel}"
        with files.open(rel) as f:
            shape = _header(f, src)
        if first is None:
            first = shape
            h, w, _ = shape
            if h != w or h < 4 or h & (h - 1):
                raise DataError(f"{src}: images must be square with a power-of-two side >= 4, got {w}x{h}")
        elif shape != first:
            (h, w, c), (h0, w0, c0) = shape, first
            raise DataError(f"{src}: {w}x{h} with {c} channel(s), expected {w0}x{h0} with {c0} like the first image")
    meta = files.read("dataset.json") if "dataset.json" in files.names else None
    labels = None if meta is None else _folder_labels(meta, f"{path}/dataset.json", names)
    h, w, c = first
    num_classes = _declared_shape(cfg, path, h, c, 0 if labels is None else int(labels.max()) + 1)
    return ImageFiles(files, names, (c, h, w), None if labels is None else torch.from_numpy(labels), num_classes,
                      cfg.name, cfg.xflip, cfg.loader_workers)


AnyDataset = Dataset | ImageFiles


def _declared_shape(cfg: Any, path: Path, resolution: int, channels: int, num_classes: int) -> int:
    """Check the config's declared resolution / channels / classes against the files; returns the
    number of classes (the declared one when given: labels need not use every class id)."""
    for field, found in (("resolution", resolution), ("channels", channels)):
        declared = getattr(cfg, field, None)
        if declared is not None and declared != found:
            raise DataError(f"{path}: data.{field} is {declared} but the files have {found}")
    declared = getattr(cfg, "num_classes", None)
    if declared is None:
        return num_classes
    if num_classes > declared:
        raise DataError(f"{path}: data.num_classes is {declared} but dataset.json uses label {num_classes - 1}")
    return declared


def data_shape(cfg: Any) -> tuple[tuple[int, ...], int]:
    """(sample shape, number of classes) of a dataset config; only an image folder has to be read for it."""
    if cfg.name == "digits":
        return (1, cfg.resolution, cfg.resolution), 10
    if cfg.name == "swissroll":
        return (2,), 0
    if cfg.name == "cifar10":
        return (3, 32, 32), 10
    if cfg.resolution is not None and cfg.channels is not None and cfg.num_classes is not None:
        return (cfg.channels, cfg.resolution, cfg.resolution), cfg.num_classes
    d = load_dataset(cfg)
    return d.sample_shape, d.num_classes
