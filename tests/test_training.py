"""Real training runs on tiny models: ECT improves few-step sampling, resume is exact, divergence stops,
checkpoints are atomic, compute is accounted."""

from pathlib import Path

import pytest
import torch

from trainer.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import load_dataset
from trainer.loop import RunState, SetupError, load_model, train
from trainer.metrics import sliced_wasserstein
from trainer.reporter import RecordingReporter
from trainer.sampling import consistency_sample


def roll_config(**over) -> TrainConfig:
    base = {
        "data": {"name": "swissroll", "num_samples": 4000},
        "network": {"arch": "mlp", "hidden": 96, "depth": 3},
        "ect": {"mode": "pretraining", "weighting": "inv_t"},
        "optim": {"name": "adam", "lr": 2e-3, "betas": [0.9, 0.99]},
        "ema": {"kind": "classic", "beta": 0.999, "warmup": True},
        "schedule": {"batch_size": 256, "iterations": 600, "log_interval": 50},
        "eval": {"metric": "swd", "nfe": [1, 2], "num_samples": 2000},
    }
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig.model_validate(base)


def digits_config(**over) -> TrainConfig:
    base = {
        "data": {"name": "digits"},
        "network": {"arch": "songunet", "model_channels": 8, "channel_mult": [1, 2], "dropout": 0.1},
        "optim": {"name": "radam", "lr": 1e-3},
        "ema": {"kind": "classic", "beta": 0.99, "warmup": True},
        "schedule": {"batch_size": 16, "iterations": 12, "log_interval": 4, "checkpoint_interval": 4},
    }
    base.update(over)
    return TrainConfig.model_validate(base)


def two_step_swd(checkpoint: Path) -> float:
    net, cfg, _ = load_model(checkpoint)
    data = load_dataset(cfg.data)
    x = consistency_sample(net, (2000, 2), 2, cfg.sampling, torch.Generator().manual_seed(5))
    return sliced_wasserstein(x, data.x[:2000], seed=1)


@pytest.mark.slow
def test_ect_from_pretrained_improves_two_step_samples(tmp_path):
    pre = train(roll_config(), tmp_path / "pre")
    assert pre.status == "completed"
    before = two_step_swd(pre.checkpoint)
    tuned_cfg = roll_config(
        ect={"mode": "tuning", "weighting": "inv_delta_t"},
        optim={"name": "radam", "lr": 1e-3},
        schedule={"iterations": 400},
        init=str(pre.checkpoint),
    )
    rep = RecordingReporter()
    tuned = train(tuned_cfg, tmp_path / "ect", rep)
    after = two_step_swd(tuned.checkpoint)
    assert tuned.status == "completed"
    assert after < 0.6 * before, (before, after)
    # the run reported its evaluations and its stage schedule reached r/t close to 1
    assert {e["nfe"] for e in rep.evaluations} == {1, 2}
    assert rep.metric_rows[-1][1]["stage"] == 8.0 and rep.metric_rows[-1][1]["mean_r_over_t"] > 0.95


def _crash_after(step: int):
    class Crash(RecordingReporter):
        def checkpoint(self, s, path):
            super().checkpoint(s, path)
            if s == step:
                raise KeyboardInterrupt("simulated crash")

    return Crash()


def test_resume_equals_uninterrupted_training(tmp_path):
    cfg = digits_config()
    straight = train(cfg, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", _crash_after(4))
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["step"] == 4
    resumed = train(cfg, tmp_path / "b")
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 12
    for part in ("net",):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), k
    for name in a["emas"]:
        for k in a["emas"][name]:
            assert torch.equal(a["emas"][name][k], b["emas"][name][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    assert resumed.train_flops == straight.train_flops and resumed.images_seen == straight.images_seen


def test_resume_refuses_a_different_config(tmp_path):
    train(digits_config(), tmp_path)
    other = digits_config(seed=1)
    with pytest.raises(SetupError, match="different config"):  # a CheckpointError, found before the first step
        train(other, tmp_path)


def test_non_finite_loss_stops_as_diverged(tmp_path):
    """Weights with a NaN (injected through `init`) make the first loss non-finite."""
    cfg = digits_config()
    first = train(cfg, tmp_path / "good")
    state = load_checkpoint(first.checkpoint)
    bad = {k: v.clone() for k, v in next(iter(state["emas"].values())).items()}
    key = next(k for k in bad if k.endswith("map_layer0.weight"))
    bad[key][0, 0] = float("nan")
    torch.save(bad, tmp_path / "nan_weights.pt")
    rep = RecordingReporter()
    result = train(digits_config(init=str(tmp_path / "nan_weights.pt")), tmp_path / "bad", rep)
    assert result.status == "diverged" and result.step == 1
    assert "non-finite" in result.message
    assert result.checkpoint is None and not (tmp_path / "bad" / CHECKPOINT_NAME).exists()
    assert rep.metric_rows == [(1, {"diverged": 1.0})]


def test_diverging_learning_rate_is_caught(tmp_path):
    cfg = roll_config(optim={"name": "adam", "lr": 1e30}, ect={"mode": "pretraining"},
                      schedule={"iterations": 300}, eval={"metric": None})
    result = train(cfg, tmp_path)
    assert result.status == "diverged" and 1 <= result.step <= 300


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_truncated_and_foreign_checkpoints_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"step": 1})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"step": 1}, foreign)
    with pytest.raises(CheckpointError, match="not an ECT checkpoint"):
        load_checkpoint(foreign)
    code = tmp_path / "code.pt"
    torch.save({"format": "ect-checkpoint/1", "x": Path("/")}, code)  # an arbitrary class: needs full unpickling
    with pytest.raises(CheckpointError, match="not a loadable weights-only"):
        load_checkpoint(code)


def test_training_compute_accounting(tmp_path):
    pre = train(digits_config(ect={"mode": "pretraining"}), tmp_path / "pre")
    tune = train(digits_config(), tmp_path / "tune")
    f = pre.flops_per_sample
    assert f == tune.flops_per_sample and f > 0
    assert pre.train_flops == 12 * 16 * 3 * f  # forward + backward, no target pass at r = 0
    assert tune.train_flops == 12 * 16 * 4 * f  # plus the no-grad target forward
    assert tune.normalized_compute == pytest.approx(12 * 16 / 12.8e6)


def test_evaluation_during_training_is_reported(tmp_path):
    rep = RecordingReporter()
    train(roll_config(schedule={"iterations": 20, "eval_interval": 10}, eval={"num_samples": 200}), tmp_path, rep)
    steps = sorted({(e["step"], e["nfe"]) for e in rep.evaluations})
    assert steps == [(10, 1), (10, 2), (20, 1), (20, 2)]
    assert all(e["metric"] == "swd" and e["num_samples"] == 200 and e["value"] > 0 for e in rep.evaluations)


def test_evaluate_uses_the_ema_in_eval_mode(tmp_path):
    result = train(roll_config(schedule={"iterations": 5}, network={"dropout": 0.5}, eval={"num_samples": 100}), tmp_path)
    net, _, _ = load_model(result.checkpoint)
    assert not net.training
    # two evaluations with the same seed are identical (no dropout noise, fixed sampling generator)
    cfg = roll_config(schedule={"iterations": 5}, network={"dropout": 0.5}, eval={"num_samples": 100})
    run = RunState(cfg, tmp_path, load_dataset(cfg.data), torch.device("cpu"))
    run.restore(load_checkpoint(result.checkpoint))
    first = run.evaluator().evaluate(run.ema.first(), run.step, RecordingReporter())
    again = run.evaluator().evaluate(run.ema.first(), run.step, RecordingReporter())
    assert [r.value for r in first] == [r.value for r in again] and len(first) == 2


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    """Micro-batches of 4 accumulate to the gradient of the mean loss over the batch of 16."""
    grads = {}
    for micro in (None, 4):
        cfg = digits_config(network={"arch": "songunet", "model_channels": 8, "channel_mult": [1, 2], "dropout": 0.0},
                            schedule={"batch_size": 16, "iterations": 12, "batch_per_device": micro})
        run = RunState(cfg, tmp_path / str(micro), load_dataset(cfg.data), torch.device("cpu"))
        torch.manual_seed(0)
        x0, labels = run.batch()
        run.opt.zero_grad()
        out = run._accumulate(x0, labels, a=2)
        grads[micro] = (out.loss.item(), [p.grad.clone() for p in run.net.parameters()])
    assert grads[None][0] == pytest.approx(grads[4][0], rel=1e-5)
    for g_full, g_micro in zip(grads[None][1], grads[4][1]):
        assert torch.allclose(g_full, g_micro, rtol=1e-4, atol=1e-7)


def test_batch_per_device_must_divide_the_batch():
    with pytest.raises(ValueError, match="must divide schedule.batch_size"):
        digits_config(schedule={"batch_size": 16, "iterations": 2, "batch_per_device": 5})


def test_edm2_network_trains_with_ect_and_forced_weight_norm(tmp_path):
    """A tiny EDM2 UNet: the ECT step runs (the target pass must not re-normalise the weights the
    x_t pass saved for backward) and the loss stays finite."""
    cfg = digits_config(network={"arch": "edm2", "model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1,
                                 "attn_resolutions": [], "dropout": 0.2, "dropout_res": 8, "conditional": True},
                        optim={"name": "adam", "lr": 1e-3, "betas": [0.9, 0.99], "decay": "inv_sqrt", "t_ref": 4},
                        ema={"kind": "power", "sigma_rels": [0.05, 0.1]})
    result = train(cfg, tmp_path)
    assert result.status == "completed" and result.final_loss is not None
    state = load_checkpoint(result.checkpoint)
    assert set(state["emas"]) == {"power0.05", "power0.1"}
    assert any(k.startswith("model.enc.8x8_block0.conv_res0") for k in state["net"])
