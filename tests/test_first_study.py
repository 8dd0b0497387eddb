"""The README's "Your first study", executed: its YAML and its commands are read from README.md between
markers, so the snippet cannot rot. Only what makes it fast differs: the base config's copy (the snippet's
relative `base:` resolves to it, as it would to configs/mini/digits_base.yaml) and the snippet's pretraining
have their iteration counts cut, and the base evaluates on fewer samples. Real Ray, real SQLite, real training.
"""

import json
import re
import shlex
from pathlib import Path

import yaml
from PIL import Image
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import Store, database_url
from studies.spec import expand, load_study

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BASE = REPO / "configs" / "mini" / "digits_base.yaml"
DEMO_PRESET = REPO / "studies" / "presets" / "mini" / "compute_scaling.yaml"
runner = CliRunner()


def readme_block(marker: str) -> str:
    """The fenced code block between `<!-- marker -->` and `<!-- /marker -->` in the README."""
    text = README.read_text()
    section = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert section, f"README.md has no block marked {marker}"
    return section.group(1)


def readme_commands() -> list[list[str]]:
    """The snippet's `ect ...` command lines as argument lists (without `ect`, comments dropped)."""
    lines = [ln.split("#")[0].strip() for ln in readme_block("first-study:commands").splitlines()]
    commands = [shlex.split(ln) for ln in lines if ln]
    assert all(c[0] == "ect" for c in commands), commands
    return [c[1:] for c in commands]


def shortened_copy(root: Path) -> Path:
    """The README's study file under root/my-studies/, its pretraining cut to 3 iterations, beside a copy of the
    base config at the relative path the snippet names (3 iterations, 200 evaluation samples)."""
    snippet = readme_block("first-study:yaml")
    spec = yaml.safe_load(snippet)
    study_dir = root / "my-studies"
    base = (study_dir / spec["base"]).resolve()
    assert base.relative_to(root.resolve()) == BASE.relative_to(REPO), "the snippet's base is not the demo's base"
    config = yaml.safe_load(BASE.read_text())
    config["schedule"].update(iterations=3, log_interval=1)
    config["eval"]["num_samples"] = 200
    base.parent.mkdir(parents=True)
    base.write_text(yaml.safe_dump(config))
    short, n = re.subn(r"schedule\.iterations: 1000\b", "schedule.iterations: 3", snippet)
    assert n == 1, "the snippet's pretraining iterations changed: update this test"
    study_dir.mkdir()
    (study_dir / "lr_sweep.yaml").write_text(short)
    return study_dir / "lr_sweep.yaml"


def test_snippet_reuses_the_demos_pretraining(tmp_path):
    """Written next to the repository's configs, the snippet's pretraining is the demo's run (same id): the
    demo's store already holds it, so `study run` trains only the six tuning runs."""
    (tmp_path / "lr_sweep.yaml").write_text(readme_block("first-study:yaml").replace(
        "../configs/", f"{REPO}/configs/"))
    mine = {r.run_id for r in expand(load_study(tmp_path / "lr_sweep.yaml")) if r.role == "pretrain"}
    demo = {r.run_id for r in expand(load_study(DEMO_PRESET)) if r.role == "pretrain"}
    assert len(mine) == 1 and mine == demo


def test_first_study_as_in_the_readme(tmp_path, monkeypatch, ray_session):
    study_file = shortened_copy(tmp_path)
    monkeypatch.chdir(tmp_path)  # the snippet's relative paths: my-studies/, out/ect.db, out/store
    Path("out").mkdir()  # what scripts/demo.sh leaves (its store, empty here: the pretraining is trained, briefly)
    name = yaml.safe_load(study_file.read_text())["name"]
    lrs = yaml.safe_load(study_file.read_text())["grid"]["optim.lr"]
    outputs = {}
    for args in readme_commands():
        res = runner.invoke(app, args, env={"COLUMNS": "240"})
        assert res.exit_code == 0, (args, res.output)
        assert "Traceback" not in res.output, (args, res.output)
        outputs[" ".join(args[:2])] = res.stdout

    runs = Store(database_url("out/ect.db")).runs_frame(name)
    assert len(runs) == 1 + 2 * len(lrs) and (runs["status"] == "completed").all()
    listed = outputs["runs list"]
    assert f"{len(runs)} runs" in listed and all(f"lr={lr:g}_seed" in listed for lr in lrs), listed
    header = next(ln for ln in listed.splitlines() if "label" in ln and "status" in ln)
    assert "optim.lr" in header and "fd_digits@1" in header and "fd_digits@2" in header, listed  # swept key, FD

    report_dir = Path("out") / name
    with Image.open(report_dir / "sweep_optim_lr.png") as im:  # FD against the learning rate
        assert min(im.size) > 100
    assert not (report_dir / "compute_scaling.png").exists()  # one compute: no scaling figure
    report = json.loads((report_dir / "report.json").read_text())
    assert report["axes"] == {"compute": [], "swept": ["optim.lr"]} and report["fits"] == []
    assert report["metric"]["column"] == "fd_digits" and report["metric"]["num_samples"] == 200
    sweep = report["sweep"]
    assert sorted((r["nfe"], r["optim.lr"]) for r in sweep) == sorted((n, lr) for n in (1, 2) for lr in lrs)
    assert all(r["n"] == 2 for r in sweep)  # two seeds per learning rate, never pooled across rates
    for nfe in (1, 2):
        rows = [r for r in sweep if r["nfe"] == nfe]
        assert [r["best"] for r in rows].count(True) == 1
        assert next(r for r in rows if r["best"])["fd"] == min(r["fd"] for r in rows)
    assert "fd per configuration" in outputs["study report"] and "no compute axis" in outputs["study report"]
