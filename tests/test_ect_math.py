"""Known answers for the ECT formulas: preconditioning, mapping function, weightings, loss, EMA."""

import math

import pytest
import torch
from torch import nn

from pydantic import ValidationError

from trainer.config import ClassicEMAConfig, ECTConfig, PowerEMAConfig, TrainConfig
from trainer.ect import WEIGHTINGS, adaptive_weight, ect_loss, ect_objective, mapping_r, stage, stage_length
from trainer.ema import EMA, classic_beta, power_beta, sigma_rel_to_gamma
from trainer.precond import Precond, edm_coefficients

SD = 0.5


class Affine(nn.Module):
    """F(x, c_noise) = alpha * x + beta * c_noise: a backbone whose output is known in closed form."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, dropout: float = 0.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(alpha))
        self.beta = nn.Parameter(torch.tensor(beta))
        self.dropout = dropout

    def forward(self, x, noise_labels, class_labels=None):
        y = self.alpha * x + self.beta * noise_labels.reshape(-1, *([1] * (x.ndim - 1)))
        return nn.functional.dropout(y, self.dropout, self.training)


def test_edm_coefficients_closed_form():
    t = torch.tensor([0.002, 0.5, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(t, SD)
    for i, ti in enumerate(t.tolist()):
        assert c_skip[i].item() == pytest.approx(0.25 / (ti**2 + 0.25))
        assert c_out[i].item() == pytest.approx(ti * 0.5 / math.sqrt(ti**2 + 0.25))
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(ti**2 + 0.25))
        assert c_noise[i].item() == pytest.approx(math.log(ti) / 4)
    # at t = sigma_data: c_skip = 1/2, c_out = sigma_data / sqrt(2)
    cs, co, _, _ = edm_coefficients(torch.tensor(0.5, dtype=torch.float64), SD)
    assert cs.item() == pytest.approx(0.5) and co.item() == pytest.approx(0.5 / math.sqrt(2))
    # c_in makes the network input unit-variance: Var(c_in (x_0 + t eps)) = c_in^2 (sd^2 + t^2) = 1
    assert torch.allclose(c_in**2 * (0.25 + t**2), torch.ones_like(t))


def test_boundary_condition_f_at_sigma_min_is_identity():
    net = Precond(Affine(), sigma_data=SD, sigma_min=0.003)
    x = torch.randn(5, 1, 4, 4)
    y = net(x, torch.full((5,), 0.003), boundary=True)
    assert torch.equal(y, x)
    # without the boundary shift (training), f(x, sigma_min) != x
    assert not torch.allclose(net(x, torch.full((5,), 0.003)), x)


def test_precond_output_matches_formula():
    net = Precond(Affine(alpha=0.3, beta=0.7), sigma_data=SD)
    x = torch.randn(3, 2)
    t = torch.tensor([0.1, 1.0, 10.0])
    c_skip, c_out, c_in, c_noise = edm_coefficients(t[:, None], SD)
    expected = c_skip * x + c_out * (0.3 * c_in * x + 0.7 * c_noise)
    assert torch.allclose(net(x, t), expected, atol=1e-6)


def test_stage_counter():
    cfg = ECTConfig(q=2, stages=8)
    total = 800  # d = 100
    assert [stage(i, cfg, total) for i in (0, 99, 100, 199, 799)] == [1, 1, 2, 2, 8]
    assert stage(500, ECTConfig(mode="pretraining"), total) == 0
    assert stage(7999, ECTConfig(q=256, stages=1), 8000) == 1


def test_mapping_function_stage0_is_diffusion():
    t = torch.logspace(-3, 2, 200)
    assert torch.equal(mapping_r(t, 0, q=2, k=8, b=1), torch.zeros_like(t))


@pytest.mark.parametrize("a,q", [(1, 2), (3, 2), (8, 2), (1, 256), (2, 4)])
def test_mapping_function_ratio(a, q):
    t = torch.logspace(-3, 2, 500, dtype=torch.float64)
    r = mapping_r(t, a, q=q, k=8, b=1)
    assert (r >= 0).all() and (r < t).all()
    n = 1 + 8 / (1 + torch.exp(t))  # n(t) = 1 + k sigmoid(-b t) with k=8, b=1
    expected = torch.clamp(1 - n / q**a, min=0)
    assert torch.allclose(r / t, expected)
    # where unclamped, r/t = 1 - n(t)/q^a exactly
    free = expected > 0
    assert torch.allclose((r / t)[free], (1 - n / q**a)[free])


def test_mapping_function_final_ratio_near_099():
    # the paper: q=2, d=total/8 gives r/t ~ 0.99 at the end of training for large t
    r = mapping_r(torch.tensor([80.0]), 8, q=2, k=8, b=1)
    assert (r / 80.0).item() == pytest.approx(1 - 1 / 256, rel=1e-6)


def test_weightings_values():
    t, r = torch.tensor([2.0]), torch.tensor([1.5])
    expected = {
        "uniform": 1.0,
        "inv_t": 0.5,
        "inv_delta_t": 2.0,
        "inv_t_plus_inv_sigma_data": 0.5 + 2.0,
        "snr": 0.25,
        "snr_plus_one": 1.25,
        "edm": 0.25 + 4.0,
        "soft_min_snr": 1 / (4 + 0.25),
    }
    assert set(expected) == set(WEIGHTINGS)
    for name, value in expected.items():
        assert WEIGHTINGS[name](t, r, SD).item() == pytest.approx(value), name


@pytest.mark.parametrize("c", [0.0, 0.06])
def test_adaptive_p_half_gradient_is_pseudo_huber(c):
    torch.manual_seed(0)
    delta = torch.randn(6, 12, requires_grad=True)
    t, r = torch.rand(6) + 0.5, torch.rand(6) * 0.4
    cfg = ECTConfig(weighting="inv_delta_t", p=0.5, c=c)
    sq = delta.square().sum(1)
    ect_objective(sq, t, r, cfg, SD).sum().backward()
    ours = delta.grad.clone()
    delta.grad = None
    huber = (torch.sqrt(delta.square().sum(1) + c**2) - c) / (t - r)
    huber.sum().backward()
    assert torch.allclose(ours, delta.grad, atol=1e-6)


def test_adaptive_weight_general_p():
    sq = torch.tensor([3.0])
    assert adaptive_weight(sq, 0.0, 0.1).item() == 1.0
    assert adaptive_weight(sq, 1.0, 1.0).item() == pytest.approx(1 / 4)
    assert adaptive_weight(sq, 0.5, 1.0).item() == pytest.approx(1 / 2)


def test_pretraining_target_is_x0_and_no_target_pass():
    net = Precond(Affine(), sigma_data=SD)
    x0 = torch.randn(8, 3)
    torch.manual_seed(0)
    out = ect_loss(net, x0, None, a=0, cfg=ECTConfig(mode="pretraining", weighting="uniform", p=0.0))
    assert not out.target_pass and torch.equal(out.r, torch.zeros(8))
    # reproduce the loss by hand: uniform weight, p = 0 -> |f(x_t) - x_0|^2 / 2
    torch.manual_seed(0)
    t = (torch.randn(8) * 2.0 - 1.1).exp()
    eps = torch.randn_like(x0)
    manual = (net(x0 + t[:, None] * eps, t) - x0).square().sum(1) / 2
    assert torch.allclose(out.per_sample, manual, atol=1e-6)


def test_target_pass_reuses_dropout_mask():
    """With dropout, the no-grad target pass must use the x_t pass's mask: here the backbone output
    is pure dropout of a constant, so identical masks make f(x_t) and f(x_r) differ only through c_skip/c_out."""

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))
            self.masks = []

        def forward(self, x, noise_labels, class_labels=None):
            m = nn.functional.dropout(torch.ones_like(x), 0.5, self.training)
            self.masks.append(m.detach().clone())
            return self.w * m

    backbone = Recorder()
    net = Precond(backbone, sigma_data=SD).train()
    torch.manual_seed(1)
    out = ect_loss(net, torch.randn(16, 1, 4, 4), None, a=3, cfg=ECTConfig())
    assert out.target_pass and len(backbone.masks) == 2
    assert torch.equal(backbone.masks[0], backbone.masks[1])
    assert 0 < backbone.masks[0].eq(0).float().mean() < 1  # dropout really dropped something
    # and the RNG moved on afterwards: a fresh draw gives a different mask
    assert not torch.equal(nn.functional.dropout(torch.ones(16, 1, 4, 4), 0.5), backbone.masks[0])


def test_target_uses_x0_where_r_is_zero():
    torch.manual_seed(0)
    net = Precond(Affine(), sigma_data=SD)
    cfg = ECTConfig(q=1.5, k=8.0)  # at a=1 many r are clamped to 0 (small t), others are positive
    out = ect_loss(net, torch.randn(64, 2), None, a=1, cfg=cfg)
    assert (out.r == 0).any() and (out.r > 0).any()
    assert torch.isfinite(out.loss)


def test_classic_ema_update_formula():
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, ClassicEMAConfig(beta=0.9, warmup=False))
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net, step=0)
    assert torch.allclose(ema.first().weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 3.0))
    assert not ema.first().training and not ema.first().weight.requires_grad


def test_ema_warmup():
    assert classic_beta(0.999, 0, True) == pytest.approx(0.1)
    assert classic_beta(0.999, 90, True) == pytest.approx(91 / 100)
    assert classic_beta(0.999, 10**6, True) == 0.999
    assert classic_beta(0.999, 0, False) == 0.999


def test_power_ema_gamma_and_beta():
    for s in (0.01, 0.05, 0.10):
        g = sigma_rel_to_gamma(s)
        assert math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))) == pytest.approx(s, rel=1e-9)
    assert power_beta(6.94, 1) == 0.0  # the first update copies the network
    assert power_beta(6.94, 100) == pytest.approx(0.99 ** 7.94)
    ema = EMA(nn.Linear(2, 2), PowerEMAConfig(sigma_rels=[0.05, 0.1]))
    assert ema.names == ["power0.05", "power0.1"] and len(ema.betas(10)) == 2


def test_adaptive_l1_weighting_of_table_4():
    delta = torch.tensor([[3.0, -4.0]], requires_grad=True)  # |D|_1 = 7, |D|_2^2 = 25
    cfg = ECTConfig(weighting="uniform", p=0.5, c=1.0, adaptive_norm="l1")
    sq, l1 = delta.square().sum(1), delta.abs().sum(1)
    loss = ect_objective(sq, torch.ones(1), torch.zeros(1), cfg, SD, l1)
    assert loss.item() == pytest.approx(25 / 2 / 8)  # w = 1/(7 + 1)
    loss.backward()
    assert torch.allclose(delta.grad, delta.detach() / 8)


@pytest.mark.parametrize("stages", [1, 2, 3, 8, 13])
def test_last_stage_is_reached_for_every_run_length_from_stages(stages):
    """Every stage 1 .. stages occurs, in order, for run lengths at the boundary (total = stages) and beyond,
    including the lengths where d = ceil(total / stages) alone would stop short (e.g. 49 iterations, 8 stages)."""
    cfg = ECTConfig(q=2, stages=stages)
    for total in [stages, stages + 1, *range(stages * (stages - 1) - 2, stages * stages + 3), 49, 50, 1000, 1001]:
        if total < stages:
            continue
        seen = [stage(i, cfg, total) for i in range(total)]
        assert seen[0] == 1 and seen[-1] == stages, (total, seen)
        assert sorted(set(seen)) == list(range(1, stages + 1)) and seen == sorted(seen), total


def test_stage_length_keeps_ceil_where_it_already_reached_the_last_stage():
    """The mini compute-scaling runs (8 stages, 50 .. 1600 iterations) keep d = ceil(total / 8)."""
    for total in (50, 100, 200, 400, 800, 1600):
        assert stage_length(total, 8) == math.ceil(total / 8)
    assert stage_length(49, 8) == 6  # ceil gives 7: stage 8 would start at iteration 49 = total
    assert stage_length(8, 8) == 1 and stage_length(8000, 1) == 8000
    # shorter than `stages`: one iteration per stage, the run ends before the last stage
    assert [stage(i, ECTConfig(stages=8), 5) for i in range(5)] == [1, 2, 3, 4, 5]


def test_config_refuses_unresolvable_mapping():
    with pytest.raises(ValidationError, match=r"q = 256 with stages = 3: q\^stages = 1.68e\+07"):
        ECTConfig(q=256, stages=3)
    with pytest.raises(ValidationError, match=r"q = 2 with stages = 23"):
        ECTConfig(q=2, stages=23)
    ECTConfig(q=2, stages=22)  # 4.2e6 < 2^23
    ECTConfig(q=256, stages=3, mode="pretraining")  # r = 0 in pretraining
    ECTConfig(q=256, stages=2)
    with pytest.raises(ValidationError, match=r"ect\n.*q = 256 with stages = 3"):
        TrainConfig(ect={"q": 256, "stages": 3})
