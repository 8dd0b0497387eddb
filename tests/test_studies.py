"""Study specs: expansion, deterministic run ids, shared runs, and errors with field path and YAML line."""

from pathlib import Path

import pytest

from studies.spec import StudySpec, apply_overrides, expand, load_study
from trainer.config import ConfigError, TrainConfig

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "data": {"name": "swissroll", "num_samples": 500},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 10},
}


def spec(**over) -> StudySpec:
    return StudySpec.model_validate({"name": "s", "base": BASE, **over})


def test_grid_variants_and_seeds_expand():
    s = spec(variants=[{"label": "a", "overrides": {"ect.weighting": "inv_t"}},
                       {"label": "b", "overrides": {"ect.weighting": "edm", "ect.c": 0.06}}],
             grid={"ect.q": [2, 4]}, seeds=[0, 1])
    runs = expand(s)
    assert len(runs) == 2 * 2 * 2
    assert {r.label for r in runs} == {f"{v}_q={q}_seed{sd}" for v in "ab" for q in (2, 4) for sd in (0, 1)}
    b4 = next(r for r in runs if r.label == "b_q=4_seed1")
    assert (b4.config.ect.weighting, b4.config.ect.c, b4.config.ect.q, b4.config.seed) == ("edm", 0.06, 4, 1)
    assert b4.params == {"ect.weighting": "edm", "ect.c": 0.06, "ect.q": 4, "seed": 1}


def test_run_ids_are_deterministic_and_shared_across_studies():
    one = expand(spec(grid={"ect.q": [2, 4]}))
    again = expand(spec(grid={"ect.q": [2, 4]}))
    assert [r.run_id for r in one] == [r.run_id for r in again]
    other = expand(StudySpec.model_validate({"name": "other", "base": BASE, "grid": {"ect.q": [4, 6]}}))
    shared = {r.run_id for r in one} & {r.run_id for r in other}
    assert len(shared) == 1  # q = 4 is the same run in both studies
    assert len({r.run_id for r in one}) == 2


def test_pretraining_stage_initialises_tuning_runs():
    runs = expand(spec(pretrain={"overrides": {"schedule.iterations": 20}}, grid={"ect.q": [2, 4]}))
    pre, tunes = runs[0], runs[1:]
    assert pre.role == "pretrain" and pre.config.ect.mode == "pretraining" and pre.config.schedule.iterations == 20
    assert all(r.role == "tune" and r.depends_on == pre.run_id for r in tunes)
    # a different pretraining changes the tuning runs' ids too (they start from another checkpoint)
    other = expand(spec(pretrain={"overrides": {"schedule.iterations": 30}}, grid={"ect.q": [2, 4]}))
    assert {r.run_id for r in other[1:]}.isdisjoint({r.run_id for r in tunes})


def test_switching_a_tagged_section_starts_from_its_defaults():
    cfg = apply_overrides(TrainConfig(), {"ema.kind": "power"})
    assert cfg.ema.kind == "power" and cfg.ema.sigma_rels == [0.01, 0.05, 0.10]


@pytest.mark.parametrize("name", ["../escape", "/abs", "a b", ".hidden", "x" * 65, "a/b"])
def test_study_names_cannot_escape(name):
    with pytest.raises(ValueError, match="study name"):
        StudySpec.model_validate({"name": name})


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


def test_errors_name_field_and_line_and_are_all_reported(tmp_path):
    text = """name: bad
kind: ablation
base:
  data: {name: swissroll}
  network: {arch: mlp}
  schedule:
    batch_size: -1
variants:
  - label: ok
    overrides: {ect.q: 4}
  - label: worse
    overrides:
      ect.q: 0.5
      network.dropout: 2
grid:
  ect.weighting: [inv_t, cosine]
colour: blue
"""
    with pytest.raises(ConfigError) as e:
        load_study(write(tmp_path, text))
    lines = str(e.value).splitlines()
    assert any(":7: base.schedule.batch_size: Input should be greater than or equal to 1" in ln for ln in lines)
    assert any(":17: colour: unknown field" in ln for ln in lines)
    assert len(lines) == 2  # the spec-level errors first; overrides are checked once the spec itself is valid
    fixed = text.replace("batch_size: -1", "batch_size: 8").replace("colour: blue\n", "")
    with pytest.raises(ConfigError) as e:
        load_study(write(tmp_path, fixed))
    lines = str(e.value).splitlines()
    assert any(":13: variants.1.overrides: ect.q: Input should be greater than 1" in ln for ln in lines)
    assert any(":14: variants.1.overrides: network.dropout: Input should be less than 1" in ln for ln in lines), lines
    assert any(":16: grid.ect.weighting.1: ect.weighting" in ln for ln in lines), lines
    assert len(lines) == 3


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"study.yaml:2: invalid YAML"):
        load_study(write(tmp_path, "name: x\n  - : [\n"))
    with pytest.raises(ConfigError, match="study file not found"):
        load_study(tmp_path / "none.yaml")


def test_duplicate_labels_rejected():
    with pytest.raises(ValueError, match="repeated"):
        spec(variants=[{"label": "a"}, {"label": "a"}])


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "studies" / "presets").rglob("*.yaml")))
def test_presets_validate_and_expand(path):
    s = load_study(REPO / path)
    runs = expand(s)
    assert runs and len({r.run_id for r in runs}) == len(runs)


def test_override_order_does_not_matter():
    one = apply_overrides(TrainConfig(), {"optim.lr": 0.5, "optim.name": "adam", "network.dropout": 0.3,
                                          "network.arch": "mlp", "data.name": "swissroll"})
    assert (one.optim.lr, one.optim.name, one.network.arch, one.network.dropout) == (0.5, "adam", "mlp", 0.3)


def test_pretraining_inherits_listed_keys_per_run():
    s = spec(pretrain={"overrides": {"schedule.iterations": 20}, "inherit": ["network.hidden"]},
             grid={"network.hidden": [16, 32], "ect.q": [2, 4]})
    runs = expand(s)
    pres = [r for r in runs if r.role == "pretrain"]
    assert sorted(p.config.network.hidden for p in pres) == [16, 32] and len(runs) == 2 + 4
    for r in runs:
        if r.role == "tune":
            parent = next(p for p in pres if p.run_id == r.depends_on)
            assert parent.config.network.hidden == r.config.network.hidden
            assert parent.config.ect.q == 2.0  # not inherited: the base value


def test_variant_seeds_override_the_study_seeds():
    """Extra seeds only at the ends of a scaling curve: the other variants keep the study's seeds and labels."""
    s = spec(variants=[{"label": "small", "overrides": {"schedule.iterations": 10}, "seeds": [0, 1, 2]},
                       {"label": "mid", "overrides": {"schedule.iterations": 20}},
                       {"label": "large", "overrides": {"schedule.iterations": 40}, "seeds": [0, 5]}])
    runs = expand(s)
    assert [(r.label, r.config.seed) for r in runs] == [
        ("small_seed0", 0), ("small_seed1", 1), ("small_seed2", 2), ("mid", 0), ("large_seed0", 0), ("large_seed5", 5)]
    # seed 0 of a variant is the same run as the single-seed run it extends (same config, same id)
    single = expand(spec(variants=[{"label": "small", "overrides": {"schedule.iterations": 10}}]))
    assert single[0].run_id == runs[0].run_id
    with pytest.raises(ValueError, match="seeds"):
        spec(variants=[{"label": "a", "seeds": []}])
    with pytest.raises(ValueError, match="same config"):
        expand(spec(variants=[{"label": "a", "seeds": [1, 1]}]))


def test_pretraining_may_have_its_own_resources():
    runs = expand(spec(pretrain={"overrides": {"schedule.iterations": 20}, "resources": {"cpus_per_worker": 2}},
                       resources={"cpus_per_worker": 1}, grid={"ect.q": [2, 4]}))
    assert [(r.role, r.resources.cpus_per_worker) for r in runs] == [("pretrain", 2.0), ("tune", 1.0), ("tune", 1.0)]
    same = expand(spec(pretrain={"overrides": {"schedule.iterations": 20}}, resources={"cpus_per_worker": 1}))
    assert same[0].resources.cpus_per_worker == 1.0


def test_variants_may_ask_for_their_own_workers_without_changing_run_ids():
    small = {"label": "S", "overrides": {"schedule.batch_size": 64}}
    big = {"label": "XL", "overrides": {"schedule.batch_size": 64, "ect.q": 3},
           "resources": {"workers": 8, "gpus_per_worker": 1, "cpus_per_worker": 4}}
    runs = {r.label: r for r in expand(spec(variants=[small, big], resources={"cpus_per_worker": 2}))}
    assert runs["S"].resources.model_dump() == {"workers": 1, "cpus_per_worker": 2.0, "gpus_per_worker": 0.0}
    assert (runs["XL"].resources.workers, runs["XL"].resources.gpus_per_worker) == (8, 1.0)
    alone = expand(spec(variants=[{**big, "resources": None}]))[0]
    assert alone.run_id == runs["XL"].run_id  # resources are not part of the run id
    with pytest.raises(ValueError, match="not divisible by 8 workers x batch_per_device 16"):
        expand(spec(variants=[{**big, "overrides": {**big["overrides"], "schedule.batch_per_device": 16}}]))


def test_paper_model_size_preset_trains_ecm_xl_on_eight_gpus():
    runs = {r.label: r for r in expand(load_study(REPO / "studies" / "presets" / "paper" / "imagenet64_model_size.yaml"))}
    assert runs["ECM-XL"].resources.model_dump() == {"workers": 8, "cpus_per_worker": 8.0, "gpus_per_worker": 1.0}
    assert runs["ECM-S"].resources.workers == 1
    assert runs["ECM-XL"].config.schedule.batch_size == 128  # the global batch: 16 per GPU
