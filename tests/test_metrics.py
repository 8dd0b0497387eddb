"""Evaluation metrics: Fréchet distance against closed forms, streaming statistics, the digits
classifier, the FID Inception / DINOv2 architectures against their checkpoint layouts, the
reference-statistics cache, and the point-cloud distances."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
import torch.nn.functional as F
from PIL import Image

from trainer.metrics import (
    FD_METRICS,
    FeatureExtractor,
    MissingWeightsError,
    StreamingStats,
    energy_distance,
    feature_stats,
    frechet_distance,
    get_extractor,
    load_stats,
    reference_stats,
    sliced_wasserstein,
    stats_of,
)
from trainer.metrics import digits as digits_cnn
from trainer.metrics.dinov2 import VITB14, VITL14, DinoVisionTransformer
from trainer.metrics.extractors import DINOv2Extractor, pil_bicubic_resize, to_digits_resolution, to_uint8_levels
from trainer.metrics.inception import FIDInceptionV3


def random_spd(dim: int, seed: int, cond: float = 10.0) -> np.ndarray:
    """A random symmetric positive definite matrix with eigenvalues in [1, cond]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.linspace(1.0, cond, dim)) @ q.T


# --------------------------------------------------------------------------- Fréchet distance


def test_fd_commuting_diagonal_covariances_closed_form():
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, -1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fd_non_commuting_covariances_match_scipy_sqrtm():
    s1, s2 = random_spd(6, seed=1), random_spd(6, seed=2, cond=5.0)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = np.arange(6.0), np.ones(6)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_fd_of_identical_statistics_is_zero_even_when_singular():
    features = np.random.default_rng(0).standard_normal((20, 50))  # n < dim: rank-deficient covariance
    stats = stats_of(features)
    assert abs(frechet_distance(stats.mu, stats.sigma, stats.mu, stats.sigma)) < 1e-9
    s = random_spd(8, seed=3)
    assert abs(frechet_distance(np.zeros(8), s, np.zeros(8), s)) < 1e-10


def test_fd_is_symmetric():
    s1, s2 = random_spd(7, seed=4), random_spd(7, seed=5, cond=100.0)
    mu1, mu2 = np.full(7, 0.5), np.linspace(-1, 1, 7)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)


def test_fd_of_samples_converges_to_the_closed_form():
    dim = 4
    s1, s2 = random_spd(dim, seed=6, cond=4.0), random_spd(dim, seed=7, cond=3.0)
    mu1, mu2 = np.zeros(dim), np.full(dim, 0.5)
    exact = frechet_distance(mu1, s1, mu2, s2)
    rng = np.random.default_rng(8)
    errors = []
    for n in (300, 3_000, 300_000):
        x = rng.multivariate_normal(mu1, s1, size=n)
        y = rng.multivariate_normal(mu2, s2, size=n)
        a, b = stats_of(x), stats_of(y)
        errors.append(abs(frechet_distance(a.mu, a.sigma, b.mu, b.sigma) - exact) / exact)
    assert errors[-1] < 0.02
    assert errors[-1] < errors[0]


def test_streaming_stats_over_uneven_batches_equal_numpy():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1001, 6)) @ rng.standard_normal((6, 6)) + 1e4  # large offset: no cancellation
    acc = StreamingStats(6)
    for lo, hi in [(0, 1), (1, 2), (2, 500), (500, 500), (500, 1001)]:
        acc.update(torch.from_numpy(x[lo:hi]))
    stats = acc.finalize()
    assert stats.n == 1001
    np.testing.assert_allclose(stats.mu, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="features"):
        acc.update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at least 2"):
        StreamingStats(6).update(torch.zeros(1, 6)).finalize()


# --------------------------------------------------------------------------- digits classifier


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("digits_cache")
    digits_cnn.ensure_digits_weights(cache)
    return cache


def test_digits_classifier_is_deterministic_accurate_and_leaves_global_rng_alone(digits_cache, tmp_path):
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    other = digits_cnn.ensure_digits_weights(tmp_path)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))
    assert torch.get_num_threads() == threads
    first = torch.load(digits_cnn.cached_weights_path(digits_cache), weights_only=True)
    second = torch.load(other, weights_only=True)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    record = json.loads(other.with_suffix(".json").read_text())
    assert record["test_accuracy"] > 0.95
    assert digits_cnn.recipe_hash() in other.name and record["recipe_hash"] == digits_cnn.recipe_hash()


def test_fd_digits_of_real_digits_is_far_below_noise(digits_cache):
    extractor = get_extractor("digits", cache_dir=digits_cache)
    x_train, _, x_test, _ = digits_cnn.digits_split()
    assert extractor(x_test[:5]).shape == (5, extractor.dim)
    train, test = feature_stats(x_train, extractor), feature_stats(x_test, extractor)
    uniform = torch.rand(len(x_test), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = feature_stats(uniform, extractor)
    fd_real = frechet_distance(train.mu, train.sigma, test.mu, test.sigma)
    fd_noise = frechet_distance(noise.mu, noise.sigma, test.mu, test.sigma)
    assert fd_real * 20 < fd_noise


@pytest.mark.parametrize("size", [16, 32])
def test_digits_extractor_undoes_the_datasets_upsampling(size):
    _, _, x_test, _ = digits_cnn.digits_split()
    upsampled = F.interpolate(x_test, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    torch.testing.assert_close(to_digits_resolution(upsampled), x_test, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- pretrained extractors


@pytest.mark.parametrize(
    ("name", "env_var"), [("inception", "ECT_INCEPTION_WEIGHTS"), ("dinov2", "ECT_DINOV2_WEIGHTS")]
)
def test_missing_weights_is_one_clear_line(name, env_var, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(env_var, raising=False)
    for kwargs in ({"weights": tmp_path / "absent.pth"}, {}):
        with pytest.raises(MissingWeightsError) as err:
            get_extractor(name, **kwargs)
        message = str(err.value)
        assert isinstance(err.value, FileNotFoundError) and "\n" not in message
        assert "--weights PATH" in message and env_var in message
    monkeypatch.setenv(env_var, str(tmp_path / "also_absent"))
    with pytest.raises(MissingWeightsError, match="also_absent"):
        get_extractor(name)


def test_inception_state_dict_round_trip_with_pytorch_fid_names(tmp_path):
    torch.manual_seed(0)
    state = FIDInceptionV3().state_dict()
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_mean", "Mixed_6e.branch7x7dbl_5.conv.weight",
                "Mixed_7c.branch_pool.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.running_var", "fc.bias"):
        assert key in state
    assert state["fc.weight"].shape == (1008, 2048)
    assert not any("AuxLogits" in k for k in state)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)  # as old files
    extractor = get_extractor("inception", weights=tmp_path)
    loaded = extractor.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    features = extractor(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert features.shape == (1, 2048) and torch.isfinite(features).all()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_inception_torchscript_is_called_like_nvidia_dnnlib(tmp_path):
    class FakeDetector(torch.nn.Module):
        def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert img.dtype == torch.uint8 and return_features
            return img.float().mean(dim=(2, 3)).repeat(1, 683)[:, :2048]

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(FakeDetector()).save(str(path))
    extractor = get_extractor("inception", weights=path)
    images = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert extractor(images)[0, :3].tolist() == [0.0, 128.0, 255.0]
    assert extractor.version.startswith("inception-nvidia-torchscript:")


def test_dinov2_reduced_depth_twin_loads_and_gives_cls_features(tmp_path):
    twin = replace(VITB14, depth=2)
    torch.manual_seed(0)
    state = DinoVisionTransformer(twin).state_dict()
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(state, hub / "dinov2_vitb14_pretrain.pth")
    extractor = DINOv2Extractor("vitb14", weights=tmp_path, config=twin)  # a torch-hub cache layout
    assert all(torch.equal(extractor.net.state_dict()[k], v) for k, v in state.items())
    features = extractor(torch.rand(2, 1, 16, 16) * 2 - 1)
    assert features.shape == (2, 768) and torch.isfinite(features).all()
    pos = extractor.net.interpolate_pos_encoding(16 * 16 + 1, 224, 224)
    assert pos.shape == (1, 257, 768)


def test_dinov2_vitl14_has_the_official_checkpoint_names():
    with torch.device("meta"):
        state = DinoVisionTransformer(VITL14).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["pos_embed"] == (1, 37 * 37 + 1, 1024) and shapes["cls_token"] == (1, 1, 1024)
    assert shapes["mask_token"] == (1, 1024) and shapes["patch_embed.proj.weight"] == (1024, 3, 14, 14)
    block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
             "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
             "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"]
    expected = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
                "norm.weight", "norm.bias"} | {f"blocks.{i}.{name}" for i in range(24) for name in block}
    assert set(state) == expected
    assert shapes["blocks.23.mlp.fc1.weight"] == (4096, 1024)


@pytest.mark.parametrize("size", [8, 32, 64, 300])
def test_dinov2_resize_matches_pil_bicubic(size):
    """dgm-eval resizes with PIL; ours agrees to one level at a handful of pixels of random noise."""
    rng = np.random.default_rng(size)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC)).astype(np.float64)
    ours = pil_bicubic_resize(torch.from_numpy(image).permute(2, 0, 1)[None].float(), 224)[0].permute(1, 2, 0)
    diff = np.abs(ours.numpy() - expected)
    assert diff.max() <= 2.0 and (diff > 0).mean() < 1e-3


def test_uint8_levels_follow_the_png_convention():
    assert to_uint8_levels(torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255, 255]


def test_registry_names():
    assert set(FD_METRICS.values()) <= {"digits", "inception", "dinov2_vitl14", "dinov2_vitb14"}
    with pytest.raises(ValueError, match="unknown feature extractor"):
        get_extractor("clip")


# --------------------------------------------------------------------------- reference statistics


class CountingExtractor(FeatureExtractor):
    """Mean of each image row: [N, 1, 4, 4] -> [N, 4]; counts its calls."""

    name = "rows"
    dim = 4
    batch_size = 7
    version = "rows-v1"

    def __init__(self) -> None:
        super().__init__("cpu")
        self.calls = 0

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.mean(dim=(1, 3))


def test_reference_stats_are_cached_by_content(tmp_path):
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    extractor = CountingExtractor()
    first = reference_stats(x, extractor, tmp_path)
    files = list((tmp_path / "reference_stats").glob("*.npz"))
    assert len(files) == 1 and extractor.calls == 5
    mtime = files[0].stat().st_mtime_ns
    second = reference_stats(x.clone(), extractor, tmp_path)
    assert extractor.calls == 5 and files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.sigma, second.sigma)
    stats, key = load_stats(files[0])
    assert stats.n == 30 and len(key) == 64
    np.testing.assert_allclose(first.sigma, np.cov(x.mean(dim=(1, 3)).double().numpy(), rowvar=False), rtol=1e-12)
    reference_stats(x[:29], extractor, tmp_path)
    assert extractor.calls == 10 and len(list((tmp_path / "reference_stats").glob("*.npz"))) == 2
    files[0].write_bytes(b"not a zip")
    reference_stats(x, extractor, tmp_path)
    assert extractor.calls == 15 and load_stats(files[0])[0].n == 30


# --------------------------------------------------------------------------- point clouds


def test_point_distances_zero_for_identical_and_positive_for_shifted():
    a = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    shifted = a + torch.tensor([0.5, 0.0])
    assert energy_distance(a, a.clone()) == 0.0 and sliced_wasserstein(a, a.clone()) == 0.0
    assert energy_distance(a, shifted) > 0.01 and sliced_wasserstein(a, shifted) > 0.01
    assert energy_distance(a, a + 2.0) > energy_distance(a, shifted)


def test_energy_distance_in_1d_is_the_square_of_scipys():
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal(300), rng.standard_normal(200) + 0.3
    ours = energy_distance(torch.from_numpy(u)[:, None], torch.from_numpy(v)[:, None])
    assert ours == pytest.approx(scipy.stats.energy_distance(u, v) ** 2, rel=1e-9)
