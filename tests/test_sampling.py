"""Samplers against closed forms: with F = 0 the EDM-preconditioned network is the exact denoiser
of Gaussian data N(0, sigma_data^2), so the PF-ODE (Heun) must return samples of std sigma_data."""

import pytest
import torch
from torch import nn

from trainer.config import SamplingConfig
from trainer.precond import Precond
from trainer.sampling import HeunSampler, consistency_sample, heun_sample, heun_times, sample, sampler_for


class Zero(nn.Module):
    """F = 0, counting calls: f(x, t) = c_skip(t) x, the optimal denoiser for N(0, sigma_d^2) data."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, noise_labels, class_labels=None):
        self.calls += 1
        return torch.zeros_like(x)


def test_heun_times_follow_edm():
    cfg = SamplingConfig()
    t = heun_times(cfg)
    assert len(t) == 19 and t[-1] == 0
    assert t[0].item() == pytest.approx(80.0) and t[-2].item() == pytest.approx(0.002)
    assert (t[:-1] > t[1:]).all()


def test_heun_recovers_gaussian_data_and_uses_35_nfe():
    backbone = Zero()
    net = Precond(backbone, sigma_data=0.5)
    cfg = SamplingConfig()
    x = heun_sample(net, (20000, 2), cfg, torch.Generator().manual_seed(0))
    assert backbone.calls == 35 == HeunSampler(cfg).nfe
    # The ODE dx/dt = x t / (sd^2 + t^2) is linear, so every sample is z * 80 * gain, where gain is
    # the same Heun recursion run on the scalar ODE (EDM's 18 steps overshoot its exact value by 5.5 %).
    t = heun_times(cfg).tolist()
    y = 1.0
    for i, (a, b) in enumerate(zip(t[:-1], t[1:])):
        d = y * a / (0.25 + a * a)
        y_next = y + (b - a) * d
        if i < len(t) - 2:
            y_next = y + (b - a) * (0.5 * d + 0.5 * y_next * b / (0.25 + b * b))
        y = y_next
    z = torch.randn((20000, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, z * 80 * y, rtol=1e-4, atol=1e-5)
    # with many steps the sampler converges to the exact solution x_0 = z 80 sd / sqrt(80^2 + sd^2)
    fine = heun_sample(net, (20000, 2), SamplingConfig(heun_steps=400), torch.Generator().manual_seed(0))
    exact = z * 80 * 0.5 / (80**2 + 0.25) ** 0.5
    assert torch.allclose(fine, exact, rtol=2e-3, atol=1e-4)


def test_consistency_sampling_nfe_and_mid_times():
    backbone = Zero()
    net = Precond(backbone, sigma_data=0.5, sigma_min=0.003)
    cfg = SamplingConfig(mid_times=[0.821, 0.3])
    for steps in (1, 2, 3):
        backbone.calls = 0
        consistency_sample(net, (4, 2), steps, cfg, torch.Generator().manual_seed(0))
        assert backbone.calls == steps
    with pytest.raises(ValueError, match="needs 3 mid times"):
        consistency_sample(net, (4, 2), 4, cfg, torch.Generator().manual_seed(0))


def test_two_step_sampling_formula():
    """x1 = f(80 z, 80); x2 = f(x1 + t_mid z', t_mid), with the boundary-shifted coefficients."""
    net = Precond(Zero(), sigma_data=0.5, sigma_min=0.003)
    cfg = SamplingConfig(mid_times=[0.821])
    x = consistency_sample(net, (3, 2), 2, cfg, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    z, z2 = torch.randn((3, 2), generator=g), torch.randn((3, 2), generator=g)

    def c_skip(t):
        return 0.25 / ((t - 0.003) ** 2 + 0.25)

    x1 = c_skip(80.0) * 80.0 * z
    expected = c_skip(0.821) * (x1 + 0.821 * z2)
    assert torch.allclose(x, expected, atol=1e-6)


def test_sampling_does_not_touch_global_rng():
    net = Precond(Zero(), sigma_data=0.5)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    consistency_sample(net, (4, 2), 2, SamplingConfig(), torch.Generator().manual_seed(0))
    heun_sample(net, (4, 2), SamplingConfig(heun_steps=3), torch.Generator().manual_seed(0))
    assert torch.equal(before, torch.get_rng_state())


class LabelEcho(nn.Module):
    """F = class label (a conditional network whose output shows which labels it was given)."""

    def forward(self, x, noise_labels, class_labels=None):
        return class_labels.argmax(dim=1, keepdim=True).float().expand_as(x)


def test_sample_draws_labels_then_noise_and_reports_the_nfe():
    """One entry point: a conditional model's labels come from the generator before the noise, or are given."""
    net = Precond(LabelEcho(), sigma_data=0.5, sigma_min=0.003, label_dim=10)
    cfg = SamplingConfig(mid_times=[0.821, 0.3])
    gen = torch.Generator().manual_seed(4)
    labels = torch.randint(10, (6,), generator=gen)
    expected = consistency_sample(net, (6, 2), 3, cfg, gen, torch.nn.functional.one_hot(labels, 10).float())
    x, nfe = sample(net, sampler_for(cfg, 3), 6, (2,), torch.Generator().manual_seed(4))
    assert nfe == 3 and torch.equal(x, expected)
    given = torch.nn.functional.one_hot(torch.full((6,), 7), 10).float()
    x, nfe = sample(net, sampler_for(cfg, heun=True), 6, (2,), torch.Generator().manual_seed(4), labels=given)
    assert nfe == 35 and x.shape == (6, 2)
    assert sampler_for(cfg, 2).params() == {"steps": 2, "sigma_max": 80.0, "mid_times": [0.821]}
    assert sampler_for(cfg, heun=True).params() == {"heun_steps": 18, "sigma_max": 80.0, "sigma_min": 0.002, "rho": 7.0}
    with pytest.raises(ValueError, match="needs 3 mid times"):
        sampler_for(cfg, 4)
