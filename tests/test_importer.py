"""Importing EDM / EDM2 weights: state-dict round trip, key reports, and NVIDIA pickles behind a flag."""

import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from orchestrator.cli import app
from trainer.checkpoint import CheckpointError
from trainer.config import TrainConfig
from trainer.importer import import_weights, normalize_keys, read_nvidia_pickle, reference_model
from trainer.loop import build_model, train

runner = CliRunner()
TINY = {
    "data": {"name": "digits"},
    "network": {"arch": "songunet", "model_channels": 8, "channel_mult": [1, 2], "augment_dim": 9},
    "schedule": {"batch_size": 8, "iterations": 2},
}


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return build_model(TrainConfig.model_validate(TINY), (1, 8, 8), 10)


def test_state_dict_round_trip_through_the_cli(tmp_path):
    net = tiny_net()
    src = tmp_path / "edm.pt"
    torch.save(net.state_dict(), src)  # EDM's EDMPrecond names: model.*
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "weights.pt"
    res = runner.invoke(app, ["import-weights", str(src), "--config", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    loaded = torch.load(out, weights_only=True)
    assert set(loaded) == set(net.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    # the imported file initialises a training run
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text(yaml.safe_dump({**TINY, "init": str(out)}))
    assert runner.invoke(app, ["train", str(run_cfg), "--out", str(tmp_path / "run")]).exit_code == 0


def test_missing_and_unexpected_keys_are_reported_and_nothing_written(tmp_path):
    state = tiny_net().state_dict()
    del state["model.map_layer0.weight"]
    state["model.extra.weight"] = torch.zeros(1)
    src = tmp_path / "partial.pt"
    torch.save(state, src)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    res = runner.invoke(app, ["import-weights", str(src), "--config", str(cfg), "--out", str(tmp_path / "w.pt")])
    assert res.exit_code == 1
    assert "missing (1): model.map_layer0.weight" in res.stdout
    assert "unexpected (1): model.extra.weight" in res.stdout
    assert "nothing written" in res.stderr and not (tmp_path / "w.pt").exists()


def test_wrong_shapes_are_refused(tmp_path):
    state = tiny_net().state_dict()
    state["model.map_layer0.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="wrong shape.*map_layer0"):
        import_weights(tmp_path / "bad.pt", tiny_net())


def test_edm2_names_and_ignored_logvar_head():
    state = {"unet.enc.64x64_conv.weight": torch.zeros(1), "logvar_linear.weight": torch.zeros(1),
             "unet.logvar_fourier.freqs": torch.zeros(1), "map_layer0.weight": torch.zeros(1)}
    mapped, ignored = normalize_keys(state)
    assert set(mapped) == {"model.enc.64x64_conv.weight", "model.map_layer0.weight"}
    assert sorted(ignored) == ["logvar_linear.weight", "unet.logvar_fourier.freqs"]


def test_paper_ddpmpp_target_matches_edm_parameter_count():
    ref = reference_model("ddpmpp")
    n = sum(p.numel() for p in ref.parameters())
    assert round(n / 1e6, 1) == 55.7  # paper Table 7; EDM's CIFAR-10 DDPM++ with its 9-d augment embedding
    assert "model.map_augment.weight" in ref.state_dict()


def _fake_nvidia_pickle(path: Path, net: nn.Module, marker: Path, monkeypatch) -> None:
    """Write a snapshot shaped like NVIDIA's: torch_utils.persistence objects carrying source code."""
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # only used when pickling (by reference)
        raise AssertionError("never called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    source = f"open({str(marker)!r}, 'w').write('executed')\n"

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            # EDM's own classes are persistent; torch's (ModuleDict, ...) pickle as usual
            if isinstance(obj, nn.Module) and not type(obj).__module__.startswith("torch."):
                meta = dict(type="class", version=6, module_src=source, class_name=type(obj).__name__,
                            state=dict(obj.__dict__))
                return _reconstruct_persistent_obj, (meta,)
            return NotImplemented

    with open(path, "wb") as f:
        Pickler(f, protocol=4).dump({"ema": net, "augment_pipe": None, "dataset_kwargs": {"resolution": 8}})


def test_nvidia_pickle_needs_the_flag_and_never_runs_its_code(tmp_path, monkeypatch):
    net = tiny_net()
    src, marker = tmp_path / "network-snapshot.pkl", tmp_path / "pwned"
    _fake_nvidia_pickle(src, net, marker, monkeypatch)
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        import_weights(src, net)
    res = runner.invoke(app, ["import-weights", str(src), "--arch", "ddpmpp", "--out", str(tmp_path / "w.pt")])
    assert res.exit_code == 2 and "--trust-pickle" in res.stderr  # a missing flag is a usage error
    state, report = import_weights(src, net, trust_pickle=True)
    assert report.ok and not marker.exists()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_pickle_with_foreign_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            # os.system, not print: a Ray test earlier in the session replaces builtins.print with its own
            return (os.system, ("echo should not run",))

    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"ema": Evil()}))
    with pytest.raises(CheckpointError, match=r"refusing to unpickle (posix|os)\.system"):
        read_nvidia_pickle(src)


def test_training_from_imported_weights_starts_from_them(tmp_path):
    net = tiny_net()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    cfg = TrainConfig.model_validate({**TINY, "init": str(tmp_path / "w.pt"), "optim": {"lr": 1e-12}})
    result = train(cfg, tmp_path / "run")
    trained = torch.load(result.checkpoint, weights_only=True)["net"]
    assert all(torch.allclose(trained[k], v, atol=1e-6) for k, v in net.state_dict().items())


def test_edm2_state_dict_with_unet_prefix_and_logvar_head(tmp_path):
    cfg = TrainConfig.model_validate({**TINY, "network": {"arch": "edm2", "model_channels": 16, "channel_mult": [1, 2],
                                                          "num_blocks": 1, "attn_resolutions": [], "conditional": True}})
    torch.manual_seed(0)
    net = build_model(cfg, (1, 8, 8), 10)
    state = {k.replace("model.", "unet.", 1): v for k, v in net.state_dict().items()}
    state["logvar_fourier.freqs"] = torch.zeros(128)
    state["logvar_linear.weight"] = torch.zeros(1, 128)
    torch.save(state, tmp_path / "edm2.pt")
    imported, report = import_weights(tmp_path / "edm2.pt", net)
    assert report.ok and report.ignored == ["logvar_fourier.freqs", "logvar_linear.weight"]
    assert all(torch.equal(imported[k], v) for k, v in net.state_dict().items())


def test_paper_edm2_targets_match_table_7():
    for arch, millions in (("edm2-s", 280.2), ("edm2-m", 497.8), ("edm2-l", 777.5), ("edm2-xl", 1119.3)):
        n = sum(p.numel() for p in reference_model(arch).parameters())
        assert round(n / 1e6, 1) == millions, arch
