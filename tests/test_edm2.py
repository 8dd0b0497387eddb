"""EDM2 UNet: paper sizes and FLOPs, EDM2 state-dict names, dropout placement and RNG, forced weight norm."""

from __future__ import annotations

import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from trainer.config import SongUNetConfig
from trainer.flops import forward_flops_per_sample
from trainer.networks import build_network, edm2
from trainer.networks.edm2 import EDM2_PRESETS, MPConv, UNet, edm2_imagenet64, no_forced_weight_norm, normalize
from trainer.precond import Precond

# Exact trainable-parameter counts (class-conditional, 64x64x3, 1000 labels, no log-variance head)
# and the ECT paper's Table 7 (in millions). EDM2's logvar head would add only 128 parameters.
PARAMS = {"edm2-s": 280_209_253, "edm2-m": 497_803_045, "edm2-l": 777_492_197, "edm2-xl": 1_119_276_709}
PAPER_PARAMS_M = {"edm2-s": 280.2, "edm2-m": 497.8, "edm2-l": 777.5, "edm2-xl": 1119.3}

# FlopCounterMode totals for one 64x64 image (2 FLOPs per multiply-add; conv, mm, bmm only) and
# the paper's GFLOPs, which are multiply-adds: the paper is 1.0-1.1 % (DDPM++: 0.5 %) above half our count.
FLOPS = {
    "edm2-s": 201_616_453_632, "edm2-m": 357_866_749_952, "edm2-l": 558_639_452_160, "edm2-xl": 803_934_560_256,
}  # fmt: skip
PAPER_GFLOPS = {"edm2-s": 101.9, "edm2-m": 180.8, "edm2-l": 282.2, "edm2-xl": 405.9}
DDPMPP_FLOPS, DDPMPP_PAPER_GFLOPS = 42_383_048_704, 21.3
PAPER_EXCESS = 0.015  # the paper also counts some non-matmul work that FlopCounterMode leaves out
TWIN = dict(model_channels=16, channels_per_head=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The twins are tiny: one intra-op thread is fastest and avoids OpenMP stalls on a busy 2-core host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_hot(n: int, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.arange(n) % k, k).float()


def _forward_flops(net: torch.nn.Module, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*inputs)
    return int(counter.get_total_flops())


def _twin(img_resolution: int, dropout: float = 0.3, label_dim: int = 10, **kw) -> UNet:
    """A reduced-channel EDM2 UNet (ImageNet-64 layout: 4 levels, 3 blocks, attention at 16 and 8; 1.9 M
    parameters), with 16 channels per attention head so that its attention layers have 1-4 heads."""
    torch.manual_seed(0)
    return UNet(img_resolution, 3, label_dim, **TWIN, dropout=dropout, **kw)


def _blocks(net: UNet) -> dict[str, edm2.Block]:
    named = [(f"{part}.{name}", b) for part in ("enc", "dec") for name, b in getattr(net, part).items()]
    return {name: b for name, b in named if isinstance(b, edm2.Block)}


def _res(name: str) -> int:
    return int(name.split(".")[1].split("x")[0])


# ---------------------------------------------------------------------------- size and compute


@pytest.mark.parametrize("preset", list(EDM2_PRESETS))
def test_parameter_count_matches_paper(preset: str) -> None:
    with torch.device("meta"):
        net = edm2_imagenet64(preset)
    n = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert n == PARAMS[preset]
    assert abs(n / 1e6 - PAPER_PARAMS_M[preset]) < 0.05
    assert sum(b.numel() for b in net.buffers()) == 2 * net.emb_fourier.freqs.numel()  # freqs, phases


@pytest.mark.parametrize("preset", list(EDM2_PRESETS))
def test_forward_flops_match_paper(preset: str) -> None:
    with torch.device("meta"):
        net = edm2_imagenet64(preset).eval()
        flops = _forward_flops(net, torch.zeros(1, 3, 64, 64), torch.zeros(1), torch.zeros(1, 1000))
    assert flops == FLOPS[preset]
    macs_g = flops / 2 / 1e9
    assert 0 < PAPER_GFLOPS[preset] - macs_g < PAPER_EXCESS * PAPER_GFLOPS[preset]


def test_ddpmpp_forward_flops_match_paper() -> None:
    # SongUNet's attention opens torch.autocast(device_type=...), which rejects "meta": count on fake CPU tensors
    cfg = SongUNetConfig(model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16])
    with FakeTensorMode():
        net = build_network(cfg, sample_shape=(3, 32, 32), label_dim=0).eval()
        flops = _forward_flops(net, torch.zeros(1, 3, 32, 32), torch.zeros(1))
    assert flops == DDPMPP_FLOPS
    macs_g = flops / 2 / 1e9
    assert 0 < DDPMPP_PAPER_GFLOPS - macs_g < PAPER_EXCESS * DDPMPP_PAPER_GFLOPS


def test_meta_flop_count_equals_real_count() -> None:
    x, n, c = torch.randn(1, 3, 16, 16), torch.randn(1), _one_hot(1, 10)
    real = _forward_flops(_twin(16).eval(), x, n, c)
    with torch.device("meta"):
        meta = _forward_flops(_twin(16).eval(), x.to("meta"), n.to("meta"), c.to("meta"))
    assert real == meta > 0


# ---------------------------------------------------------------------------- EDM2 names


def test_edm2_state_dict_names_and_shapes() -> None:
    with torch.device("meta"):
        sd = edm2_imagenet64("edm2-s").state_dict()
    shapes = {
        "emb_fourier.freqs": (192,),
        "emb_fourier.phases": (192,),
        "emb_noise.weight": (768, 192),
        "emb_label.weight": (768, 1000),
        "enc.64x64_conv.weight": (192, 4, 3, 3),  # 3 image channels + the constant-ones channel
        "enc.64x64_block0.emb_gain": (),
        "enc.64x64_block0.emb_linear.weight": (192, 768),
        "enc.64x64_block0.conv_res0.weight": (192, 192, 3, 3),
        "enc.32x32_down.conv_res0.weight": (192, 192, 3, 3),
        "enc.32x32_block0.conv_skip.weight": (384, 192, 1, 1),
        "enc.32x32_block0.conv_res0.weight": (384, 384, 3, 3),  # encoder: conv_res0 after conv_skip
        "enc.16x16_block0.attn_qkv.weight": (1728, 576, 1, 1),
        "enc.16x16_block2.attn_proj.weight": (576, 576, 1, 1),
        "enc.8x8_block2.attn_qkv.weight": (2304, 768, 1, 1),
        "dec.8x8_in0.attn_proj.weight": (768, 768, 1, 1),
        "dec.8x8_in1.conv_res1.weight": (768, 768, 3, 3),
        "dec.8x8_block0.conv_res0.weight": (768, 1536, 3, 3),  # decoder: conv_res0 on the concatenation
        "dec.8x8_block0.conv_skip.weight": (768, 1536, 1, 1),
        "dec.16x16_up.conv_res0.weight": (768, 768, 3, 3),
        "dec.16x16_block0.conv_skip.weight": (576, 1344, 1, 1),
        "dec.16x16_block3.attn_qkv.weight": (1728, 576, 1, 1),
        "dec.64x64_block3.conv_skip.weight": (192, 384, 1, 1),
        "out_conv.weight": (3, 192, 3, 3),
        "out_gain": (),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    absent = [
        "logvar_fourier.freqs", "logvar_linear.weight", "enc.64x64_block0.conv_skip.weight",
        "enc.32x32_down.conv_skip.weight", "enc.32x32_block0.attn_qkv.weight", "dec.8x8_in1.attn_qkv.weight",
        "dec.32x32_block3.attn_qkv.weight", "dec.8x8_up.conv_res0.weight", "dec.64x64_block4.emb_gain",
    ]  # fmt: skip
    assert not any(k in sd for k in absent)
    assert not any(k.endswith((".bias", "resample_filter")) for k in sd)
    assert len(sd) == 200
    enc = [k.split(".")[1] for k in sd if k.startswith("enc.") and k.endswith("conv_res1.weight")]
    assert enc[:5] == ["64x64_block0", "64x64_block1", "64x64_block2", "32x32_down", "32x32_block0"]


def test_strict_round_trip_of_edm2_prefixed_keys() -> None:
    src = _twin(16)
    state = {"unet." + k: v for k, v in src.state_dict().items()}
    dst = UNet(16, 3, 10, **TWIN)
    dst.load_state_dict({k.removeprefix("unet."): v for k, v in state.items()}, strict=True)
    x, n, c = torch.randn(2, 3, 16, 16), torch.randn(2), _one_hot(2, 10)
    assert torch.equal(src.eval()(x, n, c), dst.eval()(x, n, c))


# ---------------------------------------------------------------------------- forward, dropout, RNG


@pytest.mark.parametrize("res", [64, 16])
def test_forward_backward_and_dropout_placement(res: int) -> None:
    net = _twin(res, dropout=0.3).train()
    for name, block in _blocks(net).items():
        assert block.dropout == (0.3 if _res(name) <= 16 else 0.0), name
    with torch.no_grad():
        net.out_gain.fill_(1.0)  # zero-initialised as in EDM2; open the output so gradients reach every layer
        for block in _blocks(net).values():
            block.emb_gain.fill_(0.5)
    x = torch.randn(1, 3, res, res)
    y = net(x, torch.randn(1), _one_hot(1, 10))
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    grads = {k: p.grad for k, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["enc.64x64_conv.weight" if res == 64 else "enc.16x16_conv.weight"].abs().sum() > 0


def test_dropout_res_none_is_edm2_everywhere() -> None:
    with torch.device("meta"):
        net = _twin(64, dropout=0.2, dropout_res=None)
    assert {b.dropout for b in _blocks(net).values()} == {0.2}


def test_dropout_follows_global_rng_and_eval_is_deterministic() -> None:
    net = _twin(16, dropout=0.5)
    with torch.no_grad():
        net.out_gain.fill_(1.0)
    x, n, c = torch.randn(2, 3, 16, 16), torch.randn(2), _one_hot(2, 10)
    net.train()
    net(x, n, c)  # first training pass: forced weight normalisation settles the stored weights
    state = torch.get_rng_state()
    y1 = net(x, n, c)
    torch.set_rng_state(state)
    with torch.no_grad(), no_forced_weight_norm(net):
        y2 = net(x, n, c)
    assert torch.equal(y1, y2)
    assert not torch.allclose(y1, net(x, n, c))  # the RNG has moved on: new masks
    net.eval()
    assert torch.equal(net(x, n, c), net(x, n, c))
    torch.manual_seed(1)
    a = net(x, n, c)
    torch.manual_seed(2)
    assert torch.equal(a, net(x, n, c))


def test_missing_labels_are_zero_and_augment_labels_are_refused() -> None:
    net = _twin(16).eval()
    x, n = torch.randn(2, 3, 16, 16), torch.randn(2)
    assert torch.equal(net(x, n), net(x, n, torch.zeros(2, 10)))
    with pytest.raises(ValueError, match="augment_labels"):
        net(x, n, None, torch.zeros(2, 9))


def test_precond_wraps_the_unet_with_integer_labels() -> None:
    net = Precond(_twin(16), label_dim=10).eval()
    y = net(torch.randn(3, 3, 16, 16), torch.tensor([0.1, 1.0, 10.0]), torch.tensor([0, 4, 9]))
    assert y.shape == (3, 3, 16, 16) and torch.isfinite(y).all()
    x, n, c = torch.zeros(1, 3, 16, 16), torch.zeros(1), torch.zeros(1, 10)
    assert forward_flops_per_sample(net, (3, 16, 16), torch.device("cpu")) == _forward_flops(net.model, x, n, c)


# ---------------------------------------------------------------------------- forced weight normalisation


def test_normalize_gives_unit_rms_rows() -> None:
    w = torch.randn(5, 7, 3, 3) * 3
    rows = normalize(w).flatten(1)
    assert torch.allclose(rows.norm(dim=1), torch.full((5,), math.sqrt(63.0)), rtol=1e-4)
    assert torch.allclose(normalize(w, dim=1).norm(dim=1), torch.full((5, 3, 3), math.sqrt(7.0)), rtol=1e-3)


def test_forced_weight_norm_in_training_only() -> None:
    net = _twin(16)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim:
                p.mul_(3.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, n, c = torch.randn(1, 3, 16, 16), torch.randn(1), _one_hot(1, 10)
    net.eval()(x, n, c)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.train()(x, n, c)
    convs = {k: m for k, m in net.named_modules() if isinstance(m, MPConv)}
    assert len(convs) > 50
    for name, conv in convs.items():
        w = conv.weight.detach()
        assert torch.equal(w, normalize(before[name + ".weight"])), name
        fan_in = w[0].numel()
        assert torch.allclose(w.flatten(1).norm(dim=1), torch.full((w.shape[0],), math.sqrt(fan_in)), rtol=1e-3)


def test_no_forced_weight_norm_keeps_weights_and_output() -> None:
    net = _twin(16, dropout=0.0).train()
    x, n, c = torch.randn(2, 3, 16, 16), torch.randn(2), _one_hot(2, 10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with no_forced_weight_norm(net):
        y_free = net(x, n, c)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(m.force_wn for m in net.modules() if isinstance(m, MPConv))  # restored on exit
    y_forced = net(x, n, c)  # normalises the stored weights in place; same function up to rounding
    assert torch.allclose(y_free, y_forced, rtol=1e-5, atol=1e-6)
    settled = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad(), no_forced_weight_norm(net):
        y_target = net(x, n, c)
    assert torch.equal(y_target, y_forced)  # ECT's target pass: bit-identical to the preceding pass
    assert all(torch.equal(settled[k], v) for k, v in net.state_dict().items())


def test_target_pass_needs_no_forced_weight_norm_for_backward() -> None:
    """ECT's pattern: x_t pass with grad, no-grad target pass in training mode, then backward."""
    net = _twin(16, dropout=0.3).train()
    x, n, c = torch.randn(1, 3, 16, 16), torch.randn(1), _one_hot(1, 10)
    y = net(x, n, c)
    with torch.no_grad():
        net(x, n, c)  # forcing rewrites weights that the graph of `y` saved
    with pytest.raises(RuntimeError, match="inplace operation"):
        y.square().sum().backward()
    y = net(x, n, c)
    with torch.no_grad(), no_forced_weight_norm(net):
        net(x, n, c)
    y.square().sum().backward()
    assert net.out_gain.grad is not None


# ---------------------------------------------------------------------------- magnitude-preserving ops


def test_magnitude_preserving_ops_and_resampling() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(4, 64, 32, 32), torch.randn(4, 192, 32, 32)
    assert abs(edm2.mp_sum(a, torch.randn_like(a), t=0.3).std().item() - 1) < 0.02
    assert abs(edm2.mp_cat(a, b, t=0.5).square().mean().sqrt().item() - 1) < 0.02
    assert abs(edm2.mp_silu(torch.randn(1 << 18)).square().mean().sqrt().item() - 1) < 0.02
    feats = edm2.MPFourier(4096)(torch.randn(8))
    assert feats.shape == (8, 4096) and abs(feats.square().mean().sqrt().item() - 1) < 0.05
    down = edm2.resample(a, mode="down")
    assert torch.allclose(down, torch.nn.functional.avg_pool2d(a, 2), atol=1e-6)
    assert torch.equal(edm2.resample(down, mode="up"), down.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert edm2.resample(a) is a
