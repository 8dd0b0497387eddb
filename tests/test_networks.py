"""Network backbones: shapes, EDM state-dict names, DDPM++ size, dropout RNG semantics, registry errors."""

from __future__ import annotations

import pytest
import torch

from trainer.config import MLPConfig, SongUNetConfig
from trainer.networks import NETWORKS, MLP, SongUNet, build_network, count_parameters

DDPMPP_CIFAR10_PARAMS = 55_732_739  # EDM reports 55.7 M for DDPM++ CIFAR-10


def _one_hot(n: int, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.arange(n) % k, k).float()


@pytest.fixture(scope="module")
def ddpmpp() -> SongUNet:
    cfg = SongUNetConfig(
        model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16],
        channel_mult_noise=1, augment_dim=0, conditional=False,
    )  # fmt: skip
    return build_network(cfg, sample_shape=(3, 32, 32), label_dim=10)


def test_default_preset_size_and_shape() -> None:
    net = build_network(SongUNetConfig(), sample_shape=(1, 8, 8), label_dim=0)
    assert isinstance(net, SongUNet)
    assert 100_000 <= count_parameters(net) <= 400_000
    x = torch.randn(3, 1, 8, 8)
    y = net(x, torch.randn(3))
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("attn", [[], [4]])
def test_conditional_songunet_accepts_one_hot(attn: list[int]) -> None:
    cfg = SongUNetConfig(conditional=True, label_dropout=0.1, attn_resolutions=attn, augment_dim=9)
    net = build_network(cfg, sample_shape=(3, 8, 8), label_dim=10)
    assert net.map_label.weight.shape == (16, 10) and net.map_augment.bias is None
    x = torch.randn(4, 3, 8, 8)
    y = net(x, torch.randn(4), _one_hot(4, 10), augment_labels=torch.randn(4, 9))
    assert y.shape == x.shape
    y.square().mean().backward()
    assert net.map_label.weight.grad is not None
    net.eval()
    assert net(x, torch.randn(4), None).shape == x.shape  # None = the all-zero "no label"


def test_ddpmpp_cifar10_parameter_count(ddpmpp: SongUNet) -> None:
    n = count_parameters(ddpmpp)
    assert abs(n - DDPMPP_CIFAR10_PARAMS) <= 50_000
    assert n == DDPMPP_CIFAR10_PARAMS


def test_ddpmpp_edm_state_dict_keys(ddpmpp: SongUNet) -> None:
    sd = ddpmpp.state_dict()
    shapes = {
        "map_layer0.weight": (512, 128),
        "map_layer1.bias": (512,),
        "enc.32x32_conv.weight": (128, 3, 3, 3),
        "enc.32x32_block0.conv0.weight": (256, 128, 3, 3),
        "enc.32x32_block0.skip.weight": (256, 128, 1, 1),
        "enc.32x32_block3.affine.weight": (256, 512),
        "enc.16x16_down.conv0.resample_filter": (1, 1, 2, 2),
        "enc.16x16_down.skip.resample_filter": (1, 1, 2, 2),
        "enc.16x16_block0.norm2.weight": (256,),
        "enc.16x16_block0.qkv.weight": (768, 256, 1, 1),
        "enc.16x16_block3.proj.weight": (256, 256, 1, 1),
        "dec.8x8_in0.qkv.weight": (768, 256, 1, 1),
        "dec.8x8_in1.conv1.weight": (256, 256, 3, 3),
        "dec.8x8_block0.conv0.weight": (256, 512, 3, 3),
        "dec.16x16_up.skip.resample_filter": (1, 1, 2, 2),
        "dec.16x16_block4.qkv.bias": (768,),
        "dec.16x16_block4.proj.bias": (256,),
        "dec.32x32_block4.conv0.weight": (256, 384, 3, 3),
        "dec.32x32_aux_norm.weight": (256,),
        "dec.32x32_aux_conv.weight": (3, 256, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    absent = [
        "map_label.weight", "map_augment.weight", "enc.32x32_block0.qkv.weight", "enc.8x8_block0.qkv.weight",
        "dec.16x16_block3.qkv.weight", "dec.8x8_in1.qkv.weight", "enc.32x32_block1.skip.weight",
        "enc.32x32_block0.conv0.resample_filter", "dec.16x16_aux_conv.weight",
    ]  # fmt: skip
    assert not any(k in sd for k in absent)
    assert len(sd) == 424
    # the filter of DDPM++ is [1,1] x [1,1] / 4
    assert torch.equal(sd["enc.16x16_down.conv0.resample_filter"], torch.full((1, 1, 2, 2), 0.25))
    # strict round trip into a freshly built instance (what the EDM importer relies on)
    twin = SongUNet(img_resolution=32, in_channels=3, out_channels=3, channel_mult=[2, 2, 2])
    twin.load_state_dict(sd, strict=True)


def _dropout_net() -> SongUNet:
    torch.manual_seed(0)
    net = build_network(SongUNetConfig(dropout=0.5, attn_resolutions=[4]), sample_shape=(1, 8, 8), label_dim=0)
    with torch.no_grad():  # conv1 is ~zero-initialised; make dropout visible at the output
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def test_dropout_follows_global_rng_state() -> None:
    net = _dropout_net().train()
    x, n = torch.randn(2, 1, 8, 8), torch.randn(2)
    state = torch.get_rng_state()
    y1 = net(x, n)
    torch.set_rng_state(state)
    with torch.no_grad():
        y2 = net(x, n)
    assert torch.equal(y1, y2)
    y3 = net(x, n)  # the RNG has moved on: a new mask
    assert not torch.allclose(y1, y3)
    net.eval()
    assert torch.equal(net(x, n), net(x, n))


def test_label_dropout_only_in_training() -> None:
    cfg = SongUNetConfig(conditional=True, label_dropout=0.5)
    net = build_network(cfg, sample_shape=(1, 8, 8), label_dim=3).eval()
    x, n, c = torch.randn(8, 1, 8, 8), torch.randn(8), _one_hot(8, 3)
    torch.manual_seed(1)
    a = net(x, n, c)
    torch.manual_seed(2)
    assert torch.equal(a, net(x, n, c))


@pytest.mark.parametrize("label_dim", [0, 4])
def test_mlp_forward_backward(label_dim: int) -> None:
    cfg = MLPConfig(hidden=32, depth=2, emb_dim=8, dropout=0.1, conditional=bool(label_dim))
    net = build_network(cfg, sample_shape=(2,), label_dim=label_dim)
    assert isinstance(net, MLP) and (net.map_label is not None) == bool(label_dim)
    x = torch.randn(16, 2)
    labels = _one_hot(16, label_dim) if label_dim else None
    y = net(x, torch.randn(16), labels)
    assert y.shape == x.shape and y.abs().max() < 1e-2  # near-zero output layer at init
    y.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_mlp_dropout_follows_global_rng_state() -> None:
    net = build_network(MLPConfig(hidden=16, depth=2, emb_dim=8, dropout=0.5), sample_shape=(2,), label_dim=0)
    with torch.no_grad():
        net.out.weight.normal_()
    x, n = torch.randn(8, 2), torch.randn(8)
    state = torch.get_rng_state()
    y1 = net(x, n)
    torch.set_rng_state(state)
    assert torch.equal(y1, net(x, n))
    assert not torch.allclose(y1, net(x, n))


def test_unconditional_config_ignores_dataset_labels() -> None:
    net = build_network(SongUNetConfig(conditional=False), sample_shape=(1, 8, 8), label_dim=10)
    assert net.map_label is None and net.label_dim == 0


def test_registry_errors() -> None:
    assert set(NETWORKS) >= {"songunet", "mlp"}
    with pytest.raises(ValueError, match="network.conditional is set but the dataset has no labels"):
        build_network(SongUNetConfig(conditional=True), sample_shape=(1, 8, 8), label_dim=0)
    with pytest.raises(ValueError, match="network.conditional is set but the dataset has no labels"):
        build_network(MLPConfig(conditional=True), sample_shape=(2,), label_dim=0)
    with pytest.raises(ValueError, match="network.channel_mult"):
        build_network(SongUNetConfig(channel_mult=[1, 2, 2, 2]), sample_shape=(1, 12, 12), label_dim=0)
    with pytest.raises(ValueError, match="network.channel_mult"):
        build_network(SongUNetConfig(), sample_shape=(1, 8, 16), label_dim=0)
    with pytest.raises(ValueError, match="image data"):
        build_network(SongUNetConfig(), sample_shape=(2,), label_dim=0)
    with pytest.raises(ValueError, match="point data"):
        build_network(MLPConfig(), sample_shape=(1, 8, 8), label_dim=0)


def test_full_size_ddpmpp_forward_and_backward_at_batch_1():
    """The paper's CIFAR-10 DDPM++ (55.7 M parameters) itself, not a twin: one ECT-style pass."""
    from trainer.config import SongUNetConfig
    from trainer.precond import Precond

    cfg = SongUNetConfig(model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16],
                         dropout=0.2, conditional=True)
    torch.manual_seed(0)
    net = Precond(build_network(cfg, sample_shape=(3, 32, 32), label_dim=10), label_dim=10).train()
    x = torch.randn(1, 3, 32, 32)
    out = net(x, torch.tensor([1.5]), torch.tensor([3]))
    out.square().sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert out.shape == x.shape and all(g is not None and torch.isfinite(g).all() for g in grads)
