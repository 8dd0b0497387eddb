"""CLI conventions: defaults in every --help, --version, completion, Enum choices, ECT_DB, plain CSV/JSON
in pipes, one-line database errors, and one fit semantics (--points) shared by `analyze fit` and
`study report`, on a real SQLite store written through the store's own API."""

from __future__ import annotations

import json
from importlib import metadata

import click
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from orchestrator.cli import IMPORT_ARCHS, app
from orchestrator.store import Store, database_url
from studies.spec import StudySpec, dump_spec, expand

runner = CliRunner()
BASE = {
    "data": {"name": "swissroll", "num_samples": 500},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 32, "iterations": 10},
    "eval": {"metric": "swd", "num_samples": 200},
}
ITERATIONS = [10 * 2**k for k in range(6)]


def commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def test_every_option_shows_its_default_or_is_required():
    """A value option either has a non-None default (Typer prints it) or says in show_default what None means."""
    root = typer.main.get_command(app)
    missing = []
    for path, cmd in commands(root):
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag or p.required or p.multiple or p.name == "help":
                continue
            if p.default is None and not isinstance(p.show_default, str):
                missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert not missing, missing


def test_help_keeps_bracketed_defaults_and_env_var():
    res = runner.invoke(app, ["runs", "list", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "[env var: ECT_DB]" in res.stdout and "sqlite:///ect.db" in res.stdout
    assert "pending|running|completed|failed|diverged|cancelled" in res.stdout
    res = runner.invoke(app, ["study", "run", "--help"], env={"COLUMNS": "200"})
    assert "[default: (all)]" in res.stdout  # --cpus
    res = runner.invoke(app, ["analyze", "fit", "--help"], env={"COLUMNS": "200"})
    assert "loglinear|saturating" in res.stdout and "means|seeds" in res.stdout and "[default: means]" in res.stdout


def test_version_and_completion():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"ect {metadata.version('ect-scaling')}"
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout


def test_import_arch_help_matches_the_importer():
    from trainer.importer import ARCHS

    assert set(IMPORT_ARCHS) == set(ARCHS)


@pytest.fixture
def scaling_db(tmp_path) -> str:
    """A compute-scaling study of six budgets (three seeds at the ends), completed and evaluated as the driver
    records it: swd = 0.5 C^-0.3 per budget, seeds spread by a few percent."""
    spec = StudySpec.model_validate({
        "name": "scale", "kind": "compute_scaling", "base": BASE,
        "variants": [{"label": f"budget-{i}", "overrides": {"schedule.iterations": it},
                      **({"seeds": [0, 1, 2]} if i in (0, 5) else {})} for i, it in enumerate(ITERATIONS)]})
    db = str(tmp_path / "ect.db")
    store = Store(database_url(db))
    runs = expand(spec)
    store.register_study(spec, dump_spec(spec), runs)
    rng = np.random.default_rng(0)
    for r in runs:
        images = r.config.schedule.iterations * 32
        store.update_run(r.run_id, status="completed", step=r.config.schedule.iterations, images_seen=images,
                         train_flops=images * 4e4, normalized_compute=images / 12.8e6, flops_per_sample=1e4,
                         num_params=500)
        for nfe in (1, 2):
            value = 0.5 * nfe**-0.5 * (images / 320) ** -0.3 * float(np.exp(rng.normal(0, 0.03)))
            store.add_evaluation(r.run_id, step=r.config.schedule.iterations, nfe=nfe, metric="swd", value=value,
                                 extractor="none", num_samples=200)
    return db


def test_fit_semantics_is_one_option_stated_in_every_output(scaling_db):
    fits = {}
    for points in ("means", "seeds"):
        res = runner.invoke(app, ["analyze", "fit", "--study", "scale", "--x", "compute", "--y", "swd", "--nfe", "1",
                                  "--points", points, "--json", "--db", scaling_db])
        assert res.exit_code == 0, res.output
        fits[points] = json.loads(res.stdout)
        assert fits[points]["points"] == points and fits[points]["fit"]["points"] == points
    assert fits["means"]["fit"]["n"] == 6 and fits["means"]["fit"]["runs"] == 10
    assert fits["seeds"]["fit"]["n"] == 10 and fits["seeds"]["fit"]["note"] == "fit on 10 runs (every seed a point)"
    assert fits["means"]["fit"]["alpha"] != fits["seeds"]["fit"]["alpha"]
    # the default is the same in both commands: per-budget means
    default = json.loads(runner.invoke(app, ["analyze", "fit", "--study", "scale", "--x", "compute", "--y", "swd",
                                             "--nfe", "1", "--json", "--db", scaling_db]).stdout)
    report = json.loads(runner.invoke(app, ["study", "report", "scale", "--json", "--db", scaling_db]).stdout)
    assert default["fit"]["points"] == report["fit_points"] == "means"
    (row,) = [f for f in report["fits"] if f["nfe"] == 1 and f["form"] == "loglinear"]
    assert row["alpha"] == pytest.approx(default["fit"]["alpha"]) and row["n"] == 6 and row["runs"] == 10
    seeds = json.loads(runner.invoke(app, ["study", "report", "scale", "--json", "--points", "seeds",
                                           "--db", scaling_db]).stdout)
    (row,) = [f for f in seeds["fits"] if f["nfe"] == 1 and f["form"] == "loglinear"]
    assert row["alpha"] == pytest.approx(fits["seeds"]["fit"]["alpha"]) and row["n"] == 10
    (sat,) = [f for f in seeds["fits"] if f["nfe"] == 1 and f["form"] == "saturating"]
    assert sat["floor"].startswith("no floor identified (p = ")
    text = runner.invoke(app, ["study", "report", "scale", "--db", scaling_db])
    assert "on per-budget means over training seeds" in text.stdout and "fit on 6 per-budget means of 10 runs" in text.stdout


def test_csv_json_and_tables_are_plain_and_uncut_in_pipes(scaling_db):
    res = runner.invoke(app, ["analyze", "pareto", "--study", "scale", "--y", "swd", "--csv", "--db", scaling_db],
                        env={"COLUMNS": "40"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "label,nfe,train_flops,swd" and all(line.count(",") == 3 for line in lines)
    assert "\x1b[" not in res.stdout
    res = runner.invoke(app, ["analyze", "pareto", "--study", "scale", "--y", "swd", "--json", "--db", scaling_db])
    assert [r["label"] for r in json.loads(res.stdout)][0].startswith("budget-")
    res = runner.invoke(app, ["runs", "list", "--db", scaling_db], env={"COLUMNS": "40"})
    assert res.exit_code == 0
    row = next(line for line in res.stdout.splitlines() if "budget-0_seed0" in line)
    assert "completed" in row and len(row) > 80  # one line per run, not cut at the terminal default
    res = runner.invoke(app, ["runs", "list", "--csv", "--status", "completed", "--db", scaling_db])
    assert len(res.stdout.splitlines()) == 11


def test_ect_db_environment_variable(scaling_db):
    res = runner.invoke(app, ["runs", "list", "--json"], env={"ECT_DB": scaling_db})
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 10


def test_sqlalchemy_errors_are_one_line_naming_the_database(scaling_db):
    import sqlite3

    con = sqlite3.connect(scaling_db)
    con.execute("drop table evaluations")
    con.commit()
    con.close()
    res = runner.invoke(app, ["analyze", "fit", "--study", "scale", "--y", "swd", "--db", scaling_db])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and f"sqlite:///{scaling_db}" in res.stderr, res.stderr
    assert "Traceback" not in res.output


def test_figure_labels_and_paper_overlays_follow_the_study_metric():
    import pandas as pd

    from orchestrator.cli_analysis import _paper_fits, _paper_model_sizes, metric_label

    digits = pd.DataFrame({"fd": [1.0], "fd_digits": [1.0], "eval.num_samples": [2000]})
    assert metric_label(digits, "fd") == "FD (fd_digits, 2000 samples)"
    assert metric_label(pd.DataFrame({"swd": [0.1], "eval.num_samples": [200]}), "swd") == "SWD (200 samples)"
    assert list(_paper_fits("fd_dinov2")["K"]) == [263, 164] and _paper_fits("fd_digits") is None
    table7 = _paper_model_sizes("fd_inception")
    assert len(table7) == 8 and {"gflops", "mparams", "fd", "nfe"} <= set(table7.columns)
    assert _paper_model_sizes("fd_dinov2") is None


def test_json_output_is_strict_with_non_finite_numbers_as_null():
    import numpy as np

    from orchestrator.cli_options import json_text

    payload = {"ci": (1.5, float("inf")), "p": np.float64("nan"), "n": np.int64(3), "x": [np.float32(-np.inf), 2.0]}

    def reject(constant: str):
        raise AssertionError(f"{constant} in JSON output")

    for indent in (None, 2):
        assert json.loads(json_text(payload, indent), parse_constant=reject) == {
            "ci": [1.5, None], "p": None, "n": 3, "x": [None, 2.0]}
