"""Tests for `trainer.data`: bundled datasets, CIFAR-10 batches (dir / tarball / hostile pickles), image folders."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.config import Cifar10Data, DigitsData, ImageFolderData, SwissRollData
from trainer.data import DataError, Dataset, load_dataset

# --------------------------------------------------------------------------- digits / swissroll


@pytest.mark.parametrize("res", [8, 16])
def test_digits_shape_range_labels(res: int) -> None:
    d = load_dataset(DigitsData(resolution=res))
    assert isinstance(d, Dataset) and d.kind == "image" and d.name == "digits"
    assert d.x.shape == (1797, 1, res, res) and d.x.dtype == torch.float32
    assert d.sample_shape == (1, res, res) and len(d) == 1797
    assert d.x.min() == -1.0 and d.x.max() == 1.0
    assert d.labels is not None and d.labels.dtype == torch.int64 and d.labels.shape == (1797,)
    assert set(d.labels.tolist()) == set(range(10)) and d.num_classes == 10


def test_digits_are_sklearns_load_digits_read_without_importing_it() -> None:
    from sklearn.datasets import load_digits

    ref = load_digits()
    d = load_dataset(DigitsData(resolution=8))
    assert torch.equal(d.x, torch.from_numpy(ref.images).float().unsqueeze(1) / 8.0 - 1.0)
    assert torch.equal(d.labels, torch.from_numpy(ref.target).long())


@pytest.mark.parametrize("seed,noise", [(0, 0.0), (3, 0.5)])
def test_swissroll_is_sklearns_make_swiss_roll(seed: int, noise: float) -> None:
    from sklearn.datasets import make_swiss_roll

    pts, _ = make_swiss_roll(n_samples=300, noise=noise, random_state=seed)
    d = load_dataset(SwissRollData(num_samples=300, seed=seed, noise=noise))
    assert torch.equal(d.x, torch.from_numpy(pts[:, [0, 2]] / 15.0).float())


def test_loading_the_bundled_datasets_does_not_import_sklearn() -> None:
    code = ("import sys; from trainer.config import DigitsData, SwissRollData; from trainer.data import load_dataset; "
            "load_dataset(DigitsData()); load_dataset(SwissRollData()); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_swissroll_shape_and_determinism() -> None:
    a = load_dataset(SwissRollData(num_samples=500, seed=3))
    b = load_dataset(SwissRollData(num_samples=500, seed=3))
    c = load_dataset(SwissRollData(num_samples=500, seed=4))
    assert a.x.shape == (500, 2) and a.kind == "points" and a.sample_shape == (2,)
    assert a.labels is None and a.num_classes == 0 and a.x.dtype == torch.float32
    assert torch.equal(a.x, b.x) and not torch.allclose(a.x, c.x)
    assert 0.3 < a.x.std(0).min() and a.x.std(0).max() < 0.7 and a.x.abs().max() < 1.5


# --------------------------------------------------------------------------- CIFAR-10


def _batch(i: int, n: int = 4) -> dict:
    """Batch i: image k is filled with (i*10 + k), except pixel (c=0,y=0,x=0) = 0 and (c=2,y=31,x=31) = 255."""
    data = np.empty((n, 3072), np.uint8)
    for k in range(n):
        data[k] = i * 10 + k
    data[:, 0] = 0
    data[:, 3071] = 255
    data[:, 1024] = 7  # first pixel of channel 1 (CHW order)
    return {b"data": data, b"labels": [(i + k) % 10 for k in range(n)], b"batch_label": b"x"}


def _write_batches(root: Path, skip: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        if i != skip:
            with open(root / f"data_batch_{i}", "wb") as f:
                pickle.dump(_batch(i), f)
    return root


def _check_cifar(d: Dataset) -> None:
    assert d.x.shape == (20, 3, 32, 32) and d.kind == "image" and d.num_classes == 10
    assert d.x.dtype == torch.uint8  # 1 byte per pixel at rest; floats per batch
    x = d.floats()
    assert x[:, 0, 0, 0].eq(-1.0).all() and x[:, 2, 31, 31].eq(1.0).all()
    assert torch.allclose(x[:, 1, 0, 0], torch.tensor(7 / 127.5 - 1.0))
    assert x[4, 0, 0, 1].item() == pytest.approx(20 / 127.5 - 1.0)  # batch 2, image 0
    assert d.labels is not None and d.labels.tolist()[:8] == [1, 2, 3, 4, 2, 3, 4, 5]


def test_cifar_from_directory(tmp_path: Path) -> None:
    _check_cifar(load_dataset(Cifar10Data(path=_write_batches(tmp_path / "c"))))


def test_cifar_from_nested_directory_and_protocols(tmp_path: Path) -> None:
    root = _write_batches(tmp_path / "c" / "cifar-10-batches-py")
    for proto, i in ((2, 1), (5, 2)):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(_batch(i), protocol=proto))
    _check_cifar(load_dataset(Cifar10Data(path=tmp_path / "c")))


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_cifar_from_tarball(tmp_path: Path) -> None:
    members = {f"cifar-10-batches-py/data_batch_{i}": pickle.dumps(_batch(i)) for i in range(1, 6)}
    _check_cifar(load_dataset(Cifar10Data(path=_tar(tmp_path / "cifar.tar.gz", members))))
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing extracted


def test_cifar_tarball_ignores_unsafe_member_names(tmp_path: Path) -> None:
    members = {f"cifar-10-batches-py/data_batch_{i}": pickle.dumps(_batch(i)) for i in range(1, 5)}
    members["../cifar-10-batches-py/data_batch_5"] = pickle.dumps(_batch(5))
    members["/cifar-10-batches-py/data_batch_5"] = pickle.dumps(_batch(5))
    with pytest.raises(DataError, match="data_batch_5"):
        load_dataset(Cifar10Data(path=_tar(tmp_path / "c.tgz", members)))


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"echo pwned > {self.target}",))


def test_cifar_refuses_malicious_pickle(tmp_path: Path) -> None:
    root = _write_batches(tmp_path / "c")
    marker = tmp_path / "pwned"
    with open(root / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": []}, f)
    with pytest.raises(DataError, match=r"data_batch_3: refuses to unpickle (posix|nt|os)\.system"):
        load_dataset(Cifar10Data(path=root))
    assert not marker.exists()


def test_cifar_missing_batch_and_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data_batch_4"):
        load_dataset(Cifar10Data(path=_write_batches(tmp_path / "c", skip=4)))
    with pytest.raises(DataError, match="dataset path not found"):
        load_dataset(Cifar10Data(path=tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*missing CIFAR-10 batch"):
        load_dataset(Cifar10Data(path=tmp_path / "empty"))


def test_cifar_corrupt_inputs(tmp_path: Path) -> None:
    root = _write_batches(tmp_path / "c")
    raw = (root / "data_batch_2").read_bytes()
    (root / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_2: corrupt or truncated"):
        load_dataset(Cifar10Data(path=root))
    (root / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match=r"data_batch_2: expected b'data' as a uint8 array \[n, 3072\]"):
        load_dataset(Cifar10Data(path=root))
    (root / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [10] * 4}))
    with pytest.raises(DataError, match="data_batch_2: labels must be in 0..9"):
        load_dataset(Cifar10Data(path=root))
    tarball = tmp_path / "c.tar.gz"
    tarball.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="c.tar.gz: not a readable"):
        load_dataset(Cifar10Data(path=tarball))


# --------------------------------------------------------------------------- image folder


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_rgb_directory(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "imgs" / "b.png")
    Image.new("RGBA", (8, 8), (0, 255, 0, 10)).save(tmp_path / "imgs" / "a.PNG")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "imgs" / "sub" / "c.jpg", quality=100)
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    d = load_dataset(ImageFolderData(path=tmp_path / "imgs"))
    assert d.x.shape == (3, 3, 8, 8) and d.labels is None and d.num_classes == 0
    assert d.x[0, :, 0, 0].tolist() == [-1.0, 1.0, -1.0]  # a.PNG (green; alpha dropped)
    assert d.x[1, :, 0, 0].tolist() == [1.0, -1.0, -1.0]  # b.png (red)
    assert d.x[2, 2].mean() > 0.9 and d.x[2, 0].mean() < -0.9  # sub/c.jpg (blue, lossy)


def test_image_folder_zip_with_labels_grayscale(tmp_path: Path) -> None:
    path = tmp_path / "ds.zip"
    labels = {"00000/img1.png": 3, "00000/img0.png": 1}
    with zipfile.ZipFile(path, "w") as zf:
        for i, name in enumerate(sorted(labels)):
            zf.writestr(name, _png(Image.new("L", (4, 4), 255 * i)))
        zf.writestr("dataset.json", json.dumps({"labels": [[k, v] for k, v in labels.items()]}))
    d = load_dataset(ImageFolderData(path=path))
    assert d.x.shape == (2, 1, 4, 4) and d.sample_shape == (1, 4, 4)
    assert d.x[0].eq(-1.0).all() and d.x[1].eq(1.0).all()
    assert d.labels is not None and d.labels.tolist() == [1, 3] and d.num_classes == 4


def test_image_folder_null_labels(tmp_path: Path) -> None:
    Image.new("L", (4, 4)).save(tmp_path / "x.png")
    (tmp_path / "dataset.json").write_text('{"labels": null}')
    d = load_dataset(ImageFolderData(path=tmp_path))
    assert d.labels is None and d.num_classes == 0 and len(d) == 1


def test_image_folder_errors(tmp_path: Path) -> None:
    cfg = ImageFolderData(path=tmp_path)
    with pytest.raises(DataError, match="no images found"):
        load_dataset(cfg)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="b.png: 16x16 .* expected 8x8"):
        load_dataset(cfg)
    Image.new("L", (8, 8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="b.png: 8x8 with 1 channel.*expected 8x8 with 3"):
        load_dataset(cfg)
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [["a.png", 0]]}))
    with pytest.raises(DataError, match="no label for image b.png"):
        load_dataset(cfg)
    (tmp_path / "dataset.json").write_text('{"labels": [["a.png", "cat"]]}')
    with pytest.raises(DataError, match="dataset.json: malformed"):
        load_dataset(cfg)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: invalid JSON"):
        load_dataset(cfg)
    (tmp_path / "dataset.json").unlink()
    (tmp_path / "c.png").write_bytes(_png(Image.new("RGB", (8, 8)))[:40])
    with pytest.raises(DataError, match="c.png: cannot decode image"):  # no readable header
        load_dataset(cfg)
    raw = _png(Image.new("RGB", (8, 8)))
    (tmp_path / "c.png").write_bytes(raw[: raw.index(b"IDAT") + 6])  # a header, then truncated pixels
    lazy = load_dataset(cfg)
    with pytest.raises(DataError, match="c.png: cannot decode image"):  # found when its pixels are read
        lazy.floats()


@pytest.mark.parametrize("size", [(6, 6), (8, 4), (2, 2)])
def test_image_folder_requires_power_of_two_square(tmp_path: Path, size: tuple[int, int]) -> None:
    Image.new("RGB", size).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="square with a power-of-two side >= 4"):
        load_dataset(ImageFolderData(path=tmp_path))


def test_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(ImageFolderData(path=tmp_path / "missing.zip"))
    assert "\n" not in str(info.value) and str(tmp_path / "missing.zip") in str(info.value)


def test_image_zip_skips_macos_metadata(tmp_path: Path) -> None:
    zpath = tmp_path / "ds.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a/img0.png", _png(Image.new("L", (8, 8), 255)))
        zf.writestr("__MACOSX/a/._img0.png", b"\x00\x05\x16\x07 not an image")
        zf.writestr("a/._img1.png", b"resource fork")
    d = load_dataset(ImageFolderData(path=zpath))
    assert len(d) == 1 and torch.equal(d.x, torch.ones(1, 1, 8, 8))


def test_image_folder_declared_shape_is_checked(tmp_path: Path) -> None:
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [["0.png", 0], ["1.png", 2]]}))
    d = load_dataset(ImageFolderData(path=tmp_path, resolution=8, channels=3, num_classes=10))
    assert d.num_classes == 10 and d.sample_shape == (3, 8, 8)
    with pytest.raises(DataError, match="data.resolution is 16 but the files have 8"):
        load_dataset(ImageFolderData(path=tmp_path, resolution=16))
    with pytest.raises(DataError, match="data.channels is 1"):
        load_dataset(ImageFolderData(path=tmp_path, channels=1))
    with pytest.raises(DataError, match="data.num_classes is 2 but dataset.json uses label 2"):
        load_dataset(ImageFolderData(path=tmp_path, num_classes=2))


# --------------------------------------------------------------------------- streamed = in memory


class _Interrupted(Exception):
    pass


class _InterruptAtCheckpoint:
    """A Reporter that stops the run right after its first checkpoint, as a killed process would."""

    def metrics(self, step: int, values: dict) -> None:
        pass

    def evaluation(self, *args: object, **kwargs: object) -> None:
        pass

    def checkpoint(self, step: int, path: Path) -> None:
        raise _Interrupted(step)


def test_streamed_zip_trains_exactly_like_the_same_images_in_memory(tmp_path: Path) -> None:
    """A zip decoded and flipped by DataLoader workers gives the weights of the same images held as
    uint8 in memory (CIFAR-10 batches), also across a resumption."""
    from trainer.config import TrainConfig
    from trainer.loop import train

    root = _write_batches(tmp_path / "cifar")
    images = np.concatenate([_batch(i)[b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    labels = [lab for i in range(1, 6) for lab in _batch(i)[b"labels"]]
    rng = np.random.default_rng(0)
    images = (images.astype(np.int64) + rng.integers(0, 200, images.shape)).clip(0, 255).astype(np.uint8)
    for i in range(1, 6):  # the same noisy (so asymmetric: flips matter) images in both forms
        with open(root / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": images[(i - 1) * 4:i * 4].reshape(4, -1), b"labels": labels[(i - 1) * 4:i * 4]}, f)
    zpath = tmp_path / "same.zip"
    names = [f"{k:05d}.png" for k in range(len(images))]
    with zipfile.ZipFile(zpath, "w") as zf:
        for name, img in zip(names, images):
            zf.writestr(name, _png(Image.fromarray(img.transpose(1, 2, 0))))
        zf.writestr("dataset.json", json.dumps({"labels": [[n, lab] for n, lab in zip(names, labels)]}))
    common = {"network": {"arch": "songunet", "model_channels": 8, "channel_mult": [1], "num_blocks": 1,
                          "conditional": True},
              "schedule": {"batch_size": 8, "iterations": 4, "log_interval": 2, "checkpoint_interval": 2},
              "eval": {"metric": None}}
    torch.set_num_threads(1)
    memory = train(TrainConfig.model_validate(
        {**common, "data": {"name": "cifar10", "path": str(root), "xflip": True}}), tmp_path / "memory")
    zcfg = TrainConfig.model_validate(
        {**common, "data": {"name": "image_folder", "path": str(zpath), "num_classes": 10, "xflip": True,
                            "loader_workers": 2}})
    with pytest.raises(_Interrupted):  # stopped at its first checkpoint (step 2 of 4), then resumed
        train(zcfg, tmp_path / "zip", _InterruptAtCheckpoint())
    streamed = train(zcfg, tmp_path / "zip")
    a = torch.load(memory.checkpoint, weights_only=True)["net"]
    b = torch.load(streamed.checkpoint, weights_only=True)["net"]
    assert streamed.step == 4 and all(torch.equal(a[k], b[k]) for k in a)
