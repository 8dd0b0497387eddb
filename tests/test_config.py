"""TrainConfig: YAML loading, defaults, and one-line errors that name the field path."""

from pathlib import Path

import pytest

from trainer.config import ConfigError, TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_follow_the_cifar_recipe():
    cfg = TrainConfig()
    assert (cfg.ect.q, cfg.ect.stages, cfg.ect.k, cfg.ect.b) == (2.0, 8, 8.0, 1.0)
    assert (cfg.ect.weighting, cfg.ect.p, cfg.ect.c) == ("inv_delta_t", 0.5, 0.0)
    assert (cfg.ect.P_mean, cfg.ect.P_std) == (-1.1, 2.0)
    assert (cfg.optim.name, cfg.optim.lr) == ("radam", 1e-4)
    assert cfg.ema.beta == 0.9999 and cfg.sampling.mid_times == [0.821] and cfg.precond.sigma_data == 0.5


@pytest.mark.parametrize("name", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(REPO / name)
    assert cfg.schedule.iterations > 0


def test_paper_configs_follow_table_7():
    paper = REPO / "configs" / "paper"
    cifar = load_config(paper / "cifar10_ect.yaml")
    assert (cifar.ect.q, cifar.ect.stages, cifar.ect.weighting, cifar.ect.c) == (2, 8, "inv_delta_t", 0.0)
    assert (cifar.optim.name, cifar.optim.lr, cifar.ema.beta, cifar.schedule.iterations) == ("radam", 1e-4, 0.9999, 100_000)
    hour = load_config(paper / "cifar10_1gpu_hour.yaml")
    assert (hour.ect.q, hour.ect.stages, hour.ema.beta, hour.schedule.iterations) == (256, 1, 0.9993, 8000)
    for size, ch, drop, lr in (("s", 192, 0.4, 1e-3), ("m", 256, 0.5, 9e-4), ("l", 320, 0.5, 8e-4), ("xl", 384, 0.5, 7e-4)):
        c = load_config(paper / f"imagenet64_ecm_{size}.yaml")
        assert (c.network.model_channels, c.network.dropout, c.optim.lr) == (ch, drop, lr)
        assert (c.ect.q, c.ect.stages, c.ect.weighting, c.ect.c, c.ect.P_mean, c.ect.P_std) == (4, 4, "edm", 0.06, -0.8, 1.6)
        assert (c.optim.betas, c.optim.decay, c.optim.t_ref) == ((0.9, 0.99), "inv_sqrt", 2000)
        assert c.ema.sigma_rels == [0.01, 0.05, 0.10] and c.sampling.mid_times == [1.526]


def test_round_trip_json():
    cfg = TrainConfig.model_validate({"ect": {"q": 4, "weighting": "edm"}, "ema": {"kind": "power"}})
    assert TrainConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "text,needle",
    [
        ("ect: {q: 0.5}\n", "cfg.yaml: ect.q: Input should be greater than 1"),
        ("ect: {weighting: cosine}\n", "cfg.yaml: ect.weighting: Input should be"),
        ("schedule: {batch_size: -4}\n", "cfg.yaml: schedule.batch_size: Input should be greater than or equal to 1"),
        ("network: {arch: songunet, dropout: 1.0}\n", "cfg.yaml: network.dropout: Input should be less than 1"),
        ("optim: {lr: fast}\n", "cfg.yaml: optim.lr: Input should be a valid number"),
        ("ect: {qq: 2}\n", "cfg.yaml: ect.qq: unknown field"),
        ("learning_rate: 1\n", "cfg.yaml: learning_rate: unknown field"),
        ("data: {name: mnist}\n", "cfg.yaml: data: Input tag 'mnist' found using 'name' does not match"),
        ("device: tpu\n", "cfg.yaml: device: Value error, expected auto, cpu, cuda or cuda:N"),
        ("ect: [1, 2\n", "cfg.yaml:2: invalid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("data: {name: swissroll}\n", "network.arch must be 'mlp'"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert needle in str(e.value)
    assert all(line.count("\n") == 0 for line in str(e.value).splitlines())


def test_every_error_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "ect: {q: 0}\noptim: {lr: -1}\n"))
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and "ect.q" in lines[0] and "optim.lr" in lines[1]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
