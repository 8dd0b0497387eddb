"""Bad input, as a corpus: malformed and ill-typed study specs and training configs, impossible values,
missing and corrupt datasets, truncated and foreign checkpoints, unusable databases, unknown study and run
ids, `--where` injection attempts and plain CLI misuse.

For every case: the exit code is 2 (usage / config) or 1 (run time); stderr holds ONE line that names the
offending file, field or option (Typer's own usage-error boxes excepted: exit 2, no traceback); no Python
traceback anywhere; and a real SQLite store with a registered study is unchanged (a checksum of every row
of every table before and after). Nothing here starts Ray.

A case may carry `bug="..."`: it is then marked xfail(strict=True) — it asserts the correct behaviour of
a product bug still open, and turns into a failure (XPASS) once the bug is fixed. None is open now.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store import Store, database_url
from orchestrator.study_runner import register
from studies.spec import StudySpec

runner = CliRunner()

# --------------------------------------------------------------------------- shared world

ROLL = {
    "data": {"name": "swissroll", "num_samples": 200},
    "network": {"arch": "mlp", "hidden": 16, "depth": 1},
    "schedule": {"batch_size": 16, "iterations": 2, "log_interval": 1},
}
STUDY = {"name": "bad", "kind": "ablation", "base": ROLL, "grid": {"network.dropout": [0.0, 0.1]}}
SECRET = "s3cretpw"


def rows_digest(path: Path) -> str:
    """A checksum of every row of every table (to prove a failed command changed nothing)."""
    con = sqlite3.connect(path)
    h = hashlib.sha256()
    for (table,) in con.execute("select name from sqlite_master where type='table' order by name"):
        for row in con.execute(f"select * from {table} order by 1"):  # noqa: S608 - test-only, names from sqlite
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


@dataclass
class World:
    root: Path
    db: Path  # an ECT store with study "s" (two pending runs)
    run_ids: list[str]
    ckpt: Path  # a real checkpoint of a 3-iteration swiss-roll run
    trunc: Path  # its first 100 bytes
    foreign: Path  # torch.save({"a": 1})
    text: Path  # a plain text file
    other_db: Path  # an SQLite file that is not an ECT store


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad_inputs")
    db = root / "ect.db"
    spec = StudySpec.model_validate({"name": "s", "base": ROLL, "grid": {"network.dropout": [0.0, 0.2]}})
    store = Store(database_url(str(db)))
    register(store, spec)
    run_ids = list(store.runs_frame("s")["run_id"])
    store.engine.dispose()

    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**ROLL, "ect": {"mode": "pretraining"},
                                   "schedule": {"batch_size": 16, "iterations": 3, "log_interval": 1}}))
    res = runner.invoke(app, ["train", str(cfg), "--out", str(root / "run")])
    assert res.exit_code == 0, res.output
    ckpt = root / "run" / "checkpoint.pt"
    trunc = root / "truncated.pt"
    trunc.write_bytes(ckpt.read_bytes()[:100])
    foreign = root / "foreign.pt"
    torch.save({"a": 1}, foreign)
    text = root / "notes.txt"
    text.write_text("this is not a database, a checkpoint or a config\n" * 20)
    other = root / "other.db"
    con = sqlite3.connect(other)
    con.execute("create table customers (id integer primary key, name text)")
    con.execute("insert into customers (name) values ('alice')")
    con.commit()
    con.close()
    return World(root, db, run_ids, ckpt, trunc, foreign, text, other)


@pytest.fixture(autouse=True)
def scratch_cwd(tmp_path, monkeypatch):
    """Run every command from an empty directory with no $ECT_DB, so defaults (./ect.db, samples.png,
    runs/NAME) cannot touch the repository; the test then checks nothing was left there."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("ECT_DB", raising=False)
    monkeypatch.setenv("ECT_CACHE_DIR", str(tmp_path / "cache"))
    return cwd


# --------------------------------------------------------------------------- building bad files


def with_path(tree: dict, dotted: str, value: Any) -> dict:
    """A deep copy of `tree` with `a.b.c` set to `value`."""
    out = json.loads(json.dumps(tree))
    node = out
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


def study(**top: Any) -> dict:
    return {**json.loads(json.dumps(STUDY)), **top}


def study_base(dotted: str, value: Any) -> dict:
    return {**json.loads(json.dumps(STUDY)), "base": with_path(ROLL, dotted, value)}


def roll(dotted: str, value: Any) -> dict:
    return with_path(ROLL, dotted, value)


def random_bytes(n: int, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())


def image_folder_with_fake_png(path: Path) -> None:
    path.mkdir()
    (path / "000.png").write_text("not a png at all")


def cifar_dir_missing_batches(path: Path) -> None:
    path.mkdir()
    (path / "data_batch_1").write_bytes(random_bytes(64))


def cifar_tar_with_corrupt_batches(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            raw = random_bytes(256, seed=i)
            info = tarfile.TarInfo(f"cifar-10-batches-py/data_batch_{i}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def fake_nvidia_pickle(path: Path) -> None:
    path.write_bytes(b"\x80\x04junk")  # protocol 4 header, then garbage: a truncated pickle


def framed_garbage_pickle(path: Path) -> None:
    path.write_bytes(b"\x80\x04\x95junk that is not a pickle")  # FRAME opcode whose 8-byte length is ~7e18


def state_dict_file(path: Path) -> None:
    torch.save({"model.x": torch.zeros(2)}, path)


def materialize(path: Path, content: Any) -> None:
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False))


# --------------------------------------------------------------------------- the corpus


@dataclass
class Case:
    id: str
    args: list[str]  # formatted with {db}, {ckpt}, {trunc}, {foreign}, {text}, {other_db}, {tmp}, {run0}, file names
    code: int
    needles: list[str]  # substrings of stderr (formatted like args); "re:" prefix: a regular expression
    files: dict[str, Any] = field(default_factory=dict)  # placeholder -> file content (YAML tree, text, bytes, callable)
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    secret: str | None = None  # must appear nowhere in the output
    env: dict[str, str] = field(default_factory=dict)
    bug: str | None = None  # xfail(strict) reason: the behaviour asserted is the correct one, not today's

    def param(self):
        marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {self.bug}")] if self.bug else []
        return pytest.param(self, id=self.id, marks=marks)


SYNTAX_STUDY = "name: bad\nbase:\n  data: {name: swissroll\n  network: {arch: mlp}\n"  # unclosed flow mapping
TAB_STUDY = "name: bad\nbase:\n\tdata: 1\n"
SYNTAX_CONFIG = "data: {name: swissroll\nnetwork: [\n"
DUP_LABELS = """name: dup
base:
  data: {name: swissroll, num_samples: 200}
  network: {arch: mlp, hidden: 16, depth: 1}
  schedule: {batch_size: 16, iterations: 2}
variants:
  - label: a
    overrides: {ect.q: 3}
  - label: a
    overrides: {ect.q: 4}
"""
EMPTY_GRID = """name: empty-grid
base:
  data: {name: swissroll, num_samples: 200}
  network: {arch: mlp, hidden: 16, depth: 1}
grid:
  network.dropout: []
"""

V = ["study", "validate", "{f}"]  # the usual study command
T = ["train", "{f}", "--out", "{tmp}/run"]  # the usual train command
RUN_ABSENT = ["{tmp}/run"]  # a failed `ect train` creates no run directory

STUDY_CASES = [
    Case("study-yaml-syntax-error", V, 2, ["{f}:4:", "invalid YAML"], {"f": SYNTAX_STUDY}),
    Case("study-yaml-tab", V, 2, ["{f}:3:", "invalid YAML"], {"f": TAB_STUDY}),
    Case("study-yaml-not-a-mapping", V, 2, ["{f}", "expected a mapping"], {"f": "- a\n- b\n"}),
    Case("study-yaml-empty", V, 2, ["{f}", "expected a mapping"], {"f": ""}),
    Case("study-missing-file", ["study", "run", "{tmp}/nope.yaml", "--db", "{db}"], 2,
         ["{tmp}/nope.yaml", "not found"]),
    Case("study-unknown-top-level-field", V, 2, ["re:{f_re}:\\d+: colour: unknown field"], {"f": study(colour="red")}),
    Case("study-unknown-nested-field", V, 2, ["re:{f_re}:\\d+: base\\.ect\\.qq: unknown field"],
         {"f": study_base("ect.qq", 3)}),
    Case("study-wrong-type-seeds", V, 2, ["{f}", "seeds", "'zero'"], {"f": study(seeds="zero")}),
    Case("study-wrong-type-base", V, 2, ["{f}", "base:"], {"f": study(base=5)}),
    Case("study-wrong-type-grid", V, 2, ["{f}", "grid:"], {"f": study(grid=[1, 2])}),
    Case("study-wrong-type-kind", V, 2, ["{f}", "kind", "'whatever'"], {"f": study(kind="whatever")}),
    Case("study-negative-batch-size", ["study", "run", "{f}", "--db", "{db}"], 2,
         ["re:{f_re}:\\d+: base\\.schedule\\.batch_size", "-8"], {"f": study_base("schedule.batch_size", -8)}),
    Case("study-q-equals-1", ["study", "plan", "{f}", "--db", "{db}"], 2, ["{f}", "base.ect.q", "greater than 1"],
         {"f": study_base("ect.q", 1)}),
    Case("study-dropout-1", V, 2, ["{f}", "base.network.dropout", "less than 1"], {"f": study_base("network.dropout", 1.0)}),
    Case("study-dropout-negative", V, 2, ["{f}", "base.network.dropout", "-0.1"],
         {"f": study_base("network.dropout", -0.1)}),
    Case("study-unknown-weighting", V, 2, ["{f}", "base.ect.weighting", "'bogus'"], {"f": study_base("ect.weighting", "bogus")}),
    Case("study-unknown-data", V, 2, ["{f}", "base.data", "'mnist'"], {"f": study_base("data.name", "mnist")}),
    Case("study-unknown-arch", V, 2, ["{f}", "base.network", "'transformer'"],
         {"f": study_base("network.arch", "transformer")}),
    Case("study-workers-zero", ["study", "run", "{f}", "--db", "{db}"], 2, ["re:{f_re}:\\d+: resources\\.workers", "0"],
         {"f": study(resources={"workers": 0})}),
    Case("study-variant-workers-negative", ["study", "run", "{f}", "--db", "{db}"], 2,
         ["{f}", "variants.0.resources.workers", "-2"],
         {"f": study(grid={}, variants=[{"label": "a", "resources": {"workers": -2}}])}),
    Case("study-batch-not-divisible-by-workers", ["study", "run", "{f}", "--db", "{db}"], 2,
         ["{f}", "schedule.batch_size: 16 is not divisible by 3 workers"], {"f": study(resources={"workers": 3})}),
    Case("study-batch-not-divisible-by-micro-batches", ["study", "run", "{f}", "--db", "{db}"], 2,
         ["{f}", "schedule.batch_size: 16 is not divisible by 2 workers x batch_per_device 16"],
         {"f": {**study_base("schedule.batch_per_device", 16), "resources": {"workers": 2}}}),
    Case("study-per-worker-batch-zero", ["study", "run", "{f}", "--db", "{db}"], 2,
         ["{f}", "schedule.batch_size: 2 gives a per-worker batch of 0 with 4 workers"],
         {"f": {**study_base("schedule.batch_size", 2), "resources": {"workers": 4}}}),
    Case("study-grid-empty-list", V, 2, ["{f}", "grid.network.dropout", "at least one value"], {"f": EMPTY_GRID}),
    Case("study-grid-empty-list-line", V, 2, ["re:{f_re}:\\d+: .*grid\\.network\\.dropout"], {"f": EMPTY_GRID}),
    Case("study-grid-value-out-of-range", V, 2, ["re:{f_re}:\\d+: grid\\.network\\.dropout", "1.5"],
         {"f": study(grid={"network.dropout": [0.0, 1.5]})}),
    Case("study-duplicate-variant-labels", V, 2, ["{f}", "variant labels must be unique", "'a'"], {"f": DUP_LABELS}),
    Case("study-duplicate-variant-labels-line", V, 2, ["re:{f_re}:\\d+: .*variant labels must be unique"],
         {"f": DUP_LABELS}),
    Case("study-variants-resolve-to-same-config", V, 2, ["{f}", "'a'", "'b'"],
         {"f": study(grid={}, variants=[{"label": "a", "overrides": {"ect.q": 3}},
                                       {"label": "b", "overrides": {"ect.q": 3}}])}),
    Case("study-bad-variant-override", V, 2, ["re:{f_re}:\\d+: variants\\.0\\.overrides: ect\\.q"],
         {"f": study(grid={}, variants=[{"label": "a", "overrides": {"ect.q": 0.5}}])}),
    Case("study-negative-max-failures", V, 2, ["{f}", "max_failures"], {"f": study(max_failures=-1)}),
    Case("study-base-file-missing", V, 2, ["{tmp}/missing-base.yaml", "not found"], {"f": study(base="missing-base.yaml")}),
    Case("study-name-dotdot", V, 2, ["{f}:1:", "study name '../evil'"], {"f": study(name="../evil")}),
    Case("study-name-absolute", V, 2, ["{f}:1:", "study name '/abs'"], {"f": study(name="/abs")}),
    Case("study-name-space", V, 2, ["{f}:1:", "study name 'a b'"], {"f": study(name="a b")}),
    Case("study-name-hidden", V, 2, ["{f}:1:", "study name '.hidden'"], {"f": study(name=".hidden")}),
    Case("study-name-slash", V, 2, ["{f}:1:", "study name 'a/b'"], {"f": study(name="a/b")}),
    Case("study-variant-label-dotdot", V, 2, ["{f}", "variant label '../x'"],
         {"f": study(grid={}, variants=[{"label": "../x", "overrides": {"ect.q": 3}}])}),
    Case("study-init-missing", V, 2, ["re:{f_re}:\\d+: base\\.init: {tmp}/nope\\.pt: checkpoint file not found"],
         {"f": study_base("init", "{tmp}/nope.pt")}),
    Case("study-run-init-missing", ["study", "run", "{f}", "--db", "{tmp}/new.db", "--storage", "{tmp}/store"], 2,
         ["{f}", "base.init", "not found"], {"f": study_base("init", "{tmp}/nope.pt")},
         absent=["{tmp}/new.db", "{tmp}/store"]),
    Case("study-data-path-missing", V, 2, ["{f}", "base.data.path", "{tmp}/no-such-images", "dataset not found"],
         {"f": study(base={"data": {"name": "image_folder", "path": "{tmp}/no-such-images"}})}),
    Case("study-extractor-weights-missing", V, 2, ["{f}", "base.eval.weights", "{tmp}/no-weights", "not found"],
         {"f": {**study_base("eval.weights", "{tmp}/no-weights"), "base": {
             "data": {"name": "image_folder", "path": "{tmp}"}, "network": {"arch": "songunet"},
             "eval": {"metric": "fd_dinov2", "weights": "{tmp}/no-weights"}}}}),
    Case("study-grid-key-unknown", V, 2, ["re:{f_re}:\\d+: grid\\.optimizer\\.lr: optimizer\\.lr: unknown field; did you mean optim\\.lr\\?"],
         {"f": study(grid={"optimizer.lr": [0.1, 0.2]})}),
    Case("study-base-key-unknown", V, 2, ["re:{f_re}:\\d+: base\\.optimizer: unknown field; did you mean base\\.optim\\?"],
         {"f": study(base={**ROLL, "optimizer": {"lr": 0.1}})}),
    Case("study-plan-image-folder-missing", ["study", "plan", "{f}", "--db", "{db}"], 1,
         ["{tmp}/no-such-images", "data.path"],
         {"f": study(base={"data": {"name": "image_folder", "path": "{tmp}/no-such-images"}})}),
]

TRAIN_CASES = [
    Case("train-workers-zero", [*T, "--workers", "0"], 2, ["--workers: 0"], {"f": ROLL}, RUN_ABSENT),
    Case("train-batch-not-divisible-by-workers", [*T, "--workers", "3"], 2,
         ["{f}: schedule.batch_size: 16 is not divisible by 3 workers"], {"f": ROLL}, RUN_ABSENT),
    Case("train-yaml-syntax-error", T, 2, ["{f}:2:", "invalid YAML"], {"f": SYNTAX_CONFIG}, RUN_ABSENT),
    Case("train-yaml-not-a-mapping", T, 2, ["{f}", "expected a mapping"], {"f": "[1, 2]\n"}, RUN_ABSENT),
    Case("train-config-missing", ["train", "{tmp}/nope.yaml", "--out", "{tmp}/run"], 2, ["{tmp}/nope.yaml", "not found"],
         absent=RUN_ABSENT),
    Case("train-negative-batch-size", T, 2, ["{f}: schedule.batch_size", "-4"], {"f": roll("schedule.batch_size", -4)},
         RUN_ABSENT),
    Case("train-wrong-type-batch-size", T, 2, ["{f}: schedule.batch_size", "'lots'"],
         {"f": roll("schedule.batch_size", "lots")}, RUN_ABSENT),
    Case("train-fractional-iterations", T, 2, ["{f}: schedule.iterations", "2.5"], {"f": roll("schedule.iterations", 2.5)},
         RUN_ABSENT),
    Case("train-wrong-type-section", T, 2, ["{f}: schedule"], {"f": roll("schedule", [1, 2])}, RUN_ABSENT),
    Case("train-q-equals-1", T, 2, ["{f}: ect.q", "greater than 1"], {"f": roll("ect.q", 1)}, RUN_ABSENT),
    Case("train-dropout-1", T, 2, ["{f}: network.dropout", "less than 1"], {"f": roll("network.dropout", 1.0)}, RUN_ABSENT),
    Case("train-dropout-negative", T, 2, ["{f}: network.dropout", "-0.1"], {"f": roll("network.dropout", -0.1)}, RUN_ABSENT),
    Case("train-unknown-weighting", T, 2, ["{f}: ect.weighting", "'bogus'"], {"f": roll("ect.weighting", "bogus")},
         RUN_ABSENT),
    Case("train-unknown-data", T, 2, ["{f}: data", "'mnist'"], {"f": roll("data.name", "mnist")}, RUN_ABSENT),
    Case("train-unknown-arch", T, 2, ["{f}: network", "'transformer'"], {"f": roll("network.arch", "transformer")},
         RUN_ABSENT),
    Case("train-unknown-top-level-field", T, 2, ["{f}: schedulee: unknown field"], {"f": {**ROLL, "schedulee": {}}},
         RUN_ABSENT),
    Case("train-unknown-nested-field", T, 2, ["{f}: ect.qq: unknown field"], {"f": roll("ect.qq", 2)}, RUN_ABSENT),
    Case("train-beta-out-of-range", T, 2, ["{f}: optim.betas"], {"f": roll("optim.betas", [0.9, 1.0])}, RUN_ABSENT),
    Case("train-cifar10-without-path", T, 2, ["{f}: data.path", "required"],
         {"f": {"data": {"name": "cifar10"}, "schedule": {"iterations": 1, "batch_size": 2}}}, RUN_ABSENT),
]

DATA_CASES = [
    Case("data-cifar10-path-missing", T, 1, ["{tmp}/no-cifar", "data.path"],
         {"f": {"data": {"name": "cifar10", "path": "{tmp}/no-cifar"}, "schedule": {"iterations": 1, "batch_size": 2}}},
         RUN_ABSENT),
    Case("data-image-folder-path-missing", T, 1, ["{tmp}/no-images", "data.path"],
         {"f": {"data": {"name": "image_folder", "path": "{tmp}/no-images"}, "schedule": {"iterations": 1, "batch_size": 2}}},
         RUN_ABSENT),
    Case("data-cifar10-random-bytes-tarball", T, 1, ["{tar}", "not a readable CIFAR-10"],
         {"tar": random_bytes(4096), "f": {"data": {"name": "cifar10", "path": "{tar}"},
                                           "schedule": {"iterations": 1, "batch_size": 2}}}, RUN_ABSENT),
    Case("data-cifar10-corrupt-batches-in-tarball", T, 1, ["{tar}", "data_batch_1", "corrupt"],
         {"tar": cifar_tar_with_corrupt_batches, "f": {"data": {"name": "cifar10", "path": "{tar}"},
                                                       "schedule": {"iterations": 1, "batch_size": 2}}}, RUN_ABSENT),
    Case("data-cifar10-dir-missing-batches", T, 1, ["{cdir}", "data_batch_2"],
         {"cdir": cifar_dir_missing_batches, "f": {"data": {"name": "cifar10", "path": "{cdir}"},
                                                   "schedule": {"iterations": 1, "batch_size": 2}}}, RUN_ABSENT),
    Case("data-image-folder-non-image-png", T, 1, ["{imgs}/000.png", "cannot decode image"],
         {"imgs": image_folder_with_fake_png, "f": {"data": {"name": "image_folder", "path": "{imgs}"},
                                                    "schedule": {"iterations": 1, "batch_size": 2}}}, RUN_ABSENT),
    Case("data-image-folder-empty", T, 1, ["{imgs}", "no images found"],
         {"imgs": lambda p: p.mkdir(), "f": {"data": {"name": "image_folder", "path": "{imgs}"},
                                             "schedule": {"iterations": 1, "batch_size": 2}}}, RUN_ABSENT),
    Case("data-image-zip-corrupt", T, 1, ["{zip}", "zip"],
         {"zip": b"PK\x03\x04garbage", "f": {"data": {"name": "image_folder", "path": "{zip}"},
                                            "schedule": {"iterations": 1, "batch_size": 2}}}, RUN_ABSENT),
]

PNG = ["--out", "{tmp}/out.png"]
PNG_ABSENT = ["{tmp}/out.png"]
CHECKPOINT_CASES = [
    Case("sample-missing-file", ["sample", "{tmp}/missing.pt", *PNG], 1, ["{tmp}/missing.pt", "not found"], absent=PNG_ABSENT),
    Case("sample-truncated-checkpoint", ["sample", "{trunc}", *PNG], 1, ["{trunc}", "not a loadable"], absent=PNG_ABSENT),
    Case("sample-foreign-torch-file", ["sample", "{foreign}", *PNG], 1, ["{foreign}", "not an ECT checkpoint"],
         absent=PNG_ABSENT),
    Case("sample-text-file", ["sample", "{text}", *PNG], 1, ["{text}", "not a loadable"], absent=PNG_ABSENT),
    Case("eval-missing-file", ["eval", "{tmp}/missing.pt", "--device", "cpu"], 1, ["{tmp}/missing.pt", "not found"]),
    Case("eval-truncated-checkpoint", ["eval", "{trunc}", "--device", "cpu"], 1, ["{trunc}", "not a loadable"]),
    Case("eval-foreign-torch-file", ["eval", "{foreign}", "--device", "cpu"], 1, ["{foreign}", "not an ECT checkpoint"]),
    Case("eval-text-file", ["eval", "{text}", "--device", "cpu"], 1, ["{text}", "not a loadable"]),
    Case("eval-unknown-ema", ["eval", "{ckpt}", "--device", "cpu", "--ema", "nope"], 1, ["{ckpt}", "'nope'"]),
    Case("eval-steps-not-integers", ["eval", "{ckpt}", "--device", "cpu", "--steps", "abc"], 2, ["--steps", "'abc'"]),
    Case("eval-steps-zero", ["eval", "{ckpt}", "--device", "cpu", "--metric", "swd", "--samples", "50", "--steps", "0"],
         2, ["--steps"]),
    Case("eval-unknown-metric", ["eval", "{ckpt}", "--device", "cpu", "--metric", "fid"], 2, ["--metric", "'fid'"]),
    Case("eval-samples-below-minimum", ["eval", "{ckpt}", "--samples", "1"], 2, ["--samples"]),
    Case("eval-samples-not-a-number", ["eval", "{ckpt}", "--samples", "many"], 2, ["--samples"]),
    Case("sample-steps-zero", ["sample", "{ckpt}", "--steps", "0", *PNG], 2, ["--steps"], absent=PNG_ABSENT),
    Case("sample-num-zero", ["sample", "{ckpt}", "--num", "0", *PNG], 2, ["--num"], absent=PNG_ABSENT),
    Case("sample-unknown-device", ["sample", "{ckpt}", "--device", "tpu", *PNG], 2, ["--device", "'tpu'"],
         absent=PNG_ABSENT),
    Case("sample-unsupported-output-format", ["sample", "{ckpt}", "--out", "{tmp}/out.txt"], 2, ["--out", "out.txt"],
         absent=["{tmp}/out.txt"]),
]

IMPORT_CASES = [
    Case("import-neither-arch-nor-config", ["import-weights", "{sd}", "--out", "{tmp}/w.pt"], 2, ["--arch", "--config"],
         {"sd": state_dict_file}, ["{tmp}/w.pt"]),
    Case("import-both-arch-and-config", ["import-weights", "{sd}", "--arch", "ddpmpp", "--config", "{cfg}",
                                         "--out", "{tmp}/w.pt"], 2, ["--arch", "--config"],
         {"sd": state_dict_file, "cfg": ROLL}, ["{tmp}/w.pt"]),
    Case("import-unknown-arch", ["import-weights", "{sd}", "--arch", "resnet50", "--out", "{tmp}/w.pt"], 2,
         ["--arch", "'resnet50'"], {"sd": state_dict_file}, ["{tmp}/w.pt"]),
    Case("import-pkl-without-trust-pickle", ["import-weights", "{pkl}", "--arch", "ddpmpp", "--out", "{tmp}/w.pt"], 2,
         ["{pkl}", "--trust-pickle"], {"pkl": fake_nvidia_pickle}, ["{tmp}/w.pt"]),
    Case("import-corrupt-pkl-with-trust-pickle", ["import-weights", "{pkl}", "--trust-pickle", "--arch", "ddpmpp",
                                                  "--out", "{tmp}/w.pt"], 1, ["{pkl}", "not an EDM/EDM2 snapshot"],
         {"pkl": fake_nvidia_pickle}, ["{tmp}/w.pt"]),
    Case("import-garbage-pkl-with-trust-pickle", ["import-weights", "{pkl}", "--trust-pickle", "--arch", "ddpmpp",
                                                  "--out", "{tmp}/w.pt"], 1, ["{pkl}", "not an EDM/EDM2 snapshot"],
         {"pkl": framed_garbage_pickle}, ["{tmp}/w.pt"]),
    Case("import-missing-source", ["import-weights", "{tmp}/nope.pt", "--arch", "ddpmpp", "--out", "{tmp}/w.pt"], 1,
         ["{tmp}/nope.pt", "not found"], absent=["{tmp}/w.pt"]),
    Case("import-truncated-source", ["import-weights", "{trunc}", "--arch", "ddpmpp", "--out", "{tmp}/w.pt"], 1,
         ["{trunc}", "not a loadable"], absent=["{tmp}/w.pt"]),
    Case("import-foreign-source", ["import-weights", "{foreign}", "--arch", "ddpmpp", "--out", "{tmp}/w.pt"], 1,
         ["{foreign}", "state dict of tensors"], absent=["{tmp}/w.pt"]),
    Case("import-missing-out", ["import-weights", "{sd}", "--arch", "ddpmpp"], 2, ["--out"], {"sd": state_dict_file}),
]

DB_CASES = [
    Case("db-text-file", ["runs", "list", "--db", "{text}"], 1, ["{text}", "cannot be used as a database"]),
    Case("db-non-ect-sqlite", ["study", "list", "--db", "{other_db}"], 1, ["{other_db}", "not an ECT store"]),
    Case("db-directory-missing", ["study", "status", "s", "--db", "{tmp}/no/such/dir/ect.db"], 1,
         ["{tmp}/no/such/dir", "does not exist"], absent=["{tmp}/no"]),
    Case("db-is-a-directory", ["runs", "list", "--db", "{tmp}"], 1, ["{tmp}", "cannot be used as a database"]),
    Case("db-unparseable-url", ["runs", "list", "--db", "://"], 1, ["not a database URL"]),
    Case("db-unknown-dialect-with-password", ["runs", "list", "--db", f"foo://alice:{SECRET}@host/x"], 1,
         ["foo://alice:***@host/x"], secret=SECRET),
    Case("db-postgres-password", ["runs", "list", "--db", f"postgresql://alice:{SECRET}@127.0.0.1:1/ect"], 1,
         ["postgresql://alice:***@127.0.0.1:1/ect"], secret=SECRET),
    Case("db-mysql-password", ["study", "status", "s", "--db", f"mysql://bob:{SECRET}@localhost/ect"], 1,
         ["mysql://bob:***@localhost/ect"], secret=SECRET),
    Case("db-password-in-ECT_DB", ["study", "list"], 1, ["postgresql://alice:***@127.0.0.1:1/ect"], secret=SECRET,
         env={"ECT_DB": f"postgresql://alice:{SECRET}@127.0.0.1:1/ect"}),
    Case("db-password-url-bad-port", ["runs", "list", "--db", f"postgresql://alice:{SECRET}@dbhost:notaport/ect"], 1,
         ["dbhost"], secret=SECRET),
    Case("db-sqlite-url-with-password", ["study", "list", "--db", f"sqlite://alice:{SECRET}@/{{db}}"], 1,
         ["sqlite://alice:***@"], secret=SECRET),
]

ID_CASES = [
    Case("study-status-unknown", ["study", "status", "nope", "--db", "{db}"], 1, ["no study named 'nope'"]),
    Case("study-resume-unknown", ["study", "resume", "nope", "--db", "{db}"], 1, ["no study named 'nope'"]),
    Case("study-cancel-unknown", ["study", "cancel", "nope", "--db", "{db}"], 1, ["no study named 'nope'"]),
    Case("study-report-unknown", ["study", "report", "nope", "--db", "{db}"], 1, ["no study named 'nope'"]),
    Case("study-status-dotdot", ["study", "status", "../evil", "--db", "{db}"], 1, ["'../evil'"]),
    Case("runs-show-unknown", ["runs", "show", "deadbeef", "--db", "{db}"], 1, ["no run with id 'deadbeef'"]),
    Case("runs-show-short-prefix", ["runs", "show", "{run0_2}", "--db", "{db}"], 1, ["no run with id"]),
    Case("runs-show-path", ["runs", "show", "../../etc/passwd", "--db", "{db}"], 1, ["'../../etc/passwd'"]),
    Case("runs-metrics-unknown", ["runs", "metrics", "deadbeef", "--db", "{db}"], 1, ["no run with id 'deadbeef'"]),
    Case("runs-show-like-percent", ["runs", "show", "%{run0_tail}", "--db", "{db}"], 1, ["no run with id"]),
    Case("runs-show-like-underscore", ["runs", "show", "_{run0_mid}", "--db", "{db}"], 1, ["no run with id"]),
    Case("runs-list-unknown-study", ["runs", "list", "--study", "nope", "--db", "{db}"], 1, ["'nope'"]),
    Case("analyze-fit-unknown-study", ["analyze", "fit", "--study", "nope", "--db", "{db}"], 1,
         ["no study named 'nope'"]),
    Case("analyze-pareto-unknown-study", ["analyze", "pareto", "--study", "nope", "--db", "{db}"], 1,
         ["no study named 'nope'"]),
    Case("figures-regenerate-unknown-study", ["figures", "regenerate", "--study", "nope", "--db", "{db}",
                                              "--out", "{tmp}/figs"], 1, ["no study named 'nope'"],
         absent=["{tmp}/figs"]),
    Case("figures-regenerate-no-results", ["figures", "regenerate", "--study", "s", "--db", "{db}",
                                           "--out", "{tmp}/figs"], 1, ["'s'", "no completed evaluations"]),
    Case("figures-regenerate-no-results-writes-nothing", ["figures", "regenerate", "--study", "s", "--db", "{db}",
                                                          "--out", "{tmp}/figs"], 1, ["'s'"], absent=["{tmp}/figs"]),
]

INJECTIONS = [
    "status=completed; DROP TABLE runs",
    "status='x' OR 1=1",
    "label=a' OR '1'='1",
    "status=x) UNION SELECT run_id FROM runs --",
    "1=1",
    "dropout<0.5 OR 1",
    "run_id LIKE %",
    "status=completed; DELETE FROM studies",
    "status=\x00",
]
MALFORMED = ["status", "=x", "status==x", "status=~x", "", "status=completed,"]
WHERE_CASES = [
    *(Case(f"where-injection-{i}", ["runs", "list", "--db", "{db}", "--where", w], 2, ["--where"])
      for i, w in enumerate(INJECTIONS)),
    *(Case(f"where-malformed-{i}", ["runs", "list", "--db", "{db}", "--where", w], 2, ["--where"])
      for i, w in enumerate(MALFORMED)),
    Case("where-unknown-key", ["runs", "list", "--db", "{db}", "--where", "nokey=1"], 2, ["--where", "'nokey'"]),
    Case("where-order-needs-number", ["runs", "list", "--db", "{db}", "--where", "dropout>abc"], 2,
         ["--where", "dropout>abc"]),
    Case("where-injection-export", ["runs", "export", "{tmp}/out.csv", "--db", "{db}", "--where", "x=1 OR 1=1"], 2,
         ["--where"], absent=["{tmp}/out.csv"]),
    Case("where-missing-value", ["runs", "list", "--db", "{db}", "--where"], 2, ["--where"]),
    Case("sort-unknown-column", ["runs", "list", "--db", "{db}", "--sort", "nocol"], 2, ["--sort", "'nocol'"]),
    Case("columns-unknown", ["runs", "list", "--db", "{db}", "--columns", "label,dropot"], 2,
         ["--columns 'dropot'", "did you mean dropout?"]),
    Case("sort-injection", ["runs", "list", "--db", "{db}", "--sort", "run_id; drop table runs"], 2, ["--sort"]),
    Case("status-unknown", ["runs", "list", "--db", "{db}", "--status", "bogus"], 2, ["--status", "'bogus'"]),
    Case("json-and-csv", ["runs", "list", "--db", "{db}", "--json", "--csv"], 2, ["--json", "--csv"]),
]

# hostile YAML (issue 18): every class is refused in one line naming the file, before anything is expanded;
# tests/test_hostile_inputs.py bounds the time and memory of the same classes in a subprocess.
def alias_bomb(levels: int = 9, fan: int = 9) -> str:
    """Nested anchors and aliases: `fan ** levels` values once expanded, a few hundred bytes on disk."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fan) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def deep_block(depth: int = 400) -> str:
    return "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "x: 1\n"


STUDY_BOMB = "name: bomb\nbase: {data: {name: swissroll}, network: {arch: mlp}}\n" + alias_bomb()
DEEP_FLOW = "name: deep\ngrid: {network.dropout: " + "[" * 100_000 + "]" * 100_000 + "}\n"
DUP_KEY_STUDY = "name: dup\nseeds: [0]\nbase: {data: {name: swissroll}, network: {arch: mlp}}\nseeds: [5]\n"
DUP_KEY_CONFIG = "data: {name: swissroll}\nnetwork:\n  arch: mlp\n  hidden: 16\n  hidden: 32\n"
RECURSIVE = "name: rec\ngrid: &g {network.dropout: [*g]}\n"
MILLION = {"network.dropout": [i / 10 for i in range(10)], "ect.q": list(range(2, 12)), "ect.k": list(range(10)),
           "ect.b": list(range(1, 11)), "ect.c": list(range(10)), "optim.t_ref": list(range(1, 11))}  # 10^6 points

HOSTILE_CASES = [
    Case("study-yaml-alias-bomb", V, 2, ["re:{f_re}:\\d+: ", "aliases"], {"f": STUDY_BOMB}),
    Case("study-yaml-alias-bomb-plan", ["study", "plan", "{f}", "--db", "{db}"], 2, ["{f}:", "aliases"],
         {"f": STUDY_BOMB}),
    Case("study-yaml-expansion-bomb", V, 2, ["{f}:", "expands to more than"], {"f": "name: b\n" + alias_bomb(6, 9)}),
    Case("study-yaml-recursive-alias", V, 2, ["{f}:2:", "recursive alias"], {"f": RECURSIVE}),
    Case("study-yaml-deep-flow", V, 2, ["{f}:", "nest"], {"f": DEEP_FLOW}),
    Case("study-yaml-deep-block", V, 2, ["re:{f_re}:\\d+: nested more than \\d+ levels"], {"f": deep_block()}),
    Case("study-yaml-duplicate-key", V, 2, ["{f}:4:", "duplicate key 'seeds'", "line 2", "line 4"],
         {"f": DUP_KEY_STUDY}),
    Case("study-yaml-too-large", V, 2, ["{f}", "KiB"], {"f": "name: big\n" + "# padding\n" * 40_000}),
    Case("study-base-file-alias-bomb", V, 2, ["{b}:", "aliases"], {"b": alias_bomb(), "f": study(base="b.yaml")}),
    Case("train-yaml-alias-bomb", T, 2, ["{f}:", "aliases"], {"f": alias_bomb()}, RUN_ABSENT),
    Case("train-yaml-deep-block", T, 2, ["{f}:", "nested more than"], {"f": deep_block()}, RUN_ABSENT),
    Case("train-yaml-duplicate-key", T, 2, ["{f}:5:", "duplicate key 'hidden'", "line 4"], {"f": DUP_KEY_CONFIG},
         RUN_ABSENT),
    Case("train-yaml-not-utf8", T, 2, ["{f}", "UTF-8"], {"f": b"data: \xff\xfe\n"}, RUN_ABSENT),
]

# expansion limits, whole-string names and integer bounds
LIMIT_CASES = [
    Case("study-grid-million-runs", V, 2, ["{f}", "1000000 runs exceed the limit of 10000", "max_runs"],
         {"f": study(grid=MILLION)}),
    Case("study-grid-million-runs-run", ["study", "run", "{f}", "--db", "{db}"], 2, ["1000000 runs exceed"],
         {"f": study(grid=MILLION)}),
    Case("study-seeds-over-limit", V, 2, ["{f}", "40000 runs exceed the limit of 10000"],
         {"f": study(seeds=list(range(20_000)))}),
    Case("study-variant-seeds-over-limit", V, 2, ["{f}", "runs exceed the limit"],
         {"f": study(grid={"network.dropout": [0.0, 0.1, 0.2]},
                     variants=[{"label": "a", "seeds": list(range(5000))}])}),
    Case("study-max-runs-lowered", V, 2, ["{f}", "2 runs exceed the limit of 1 (raise with max_runs: 2"],
         {"f": study(max_runs=1)}),
    Case("study-name-trailing-newline", V, 2, ["{f}:1:", "study name 'evil\\n'"], {"f": study(name="evil\n")}),
    Case("study-label-trailing-newline", V, 2, ["{f}", "variant label 'a\\n'"],
         {"f": study(grid={}, variants=[{"label": "a\n", "overrides": {"ect.q": 3}}])}),
    Case("study-iterations-1e20", ["study", "run", "{f}", "--db", "{db}"], 2,
         ["re:{f_re}:\\d+: base\\.schedule\\.iterations"], {"f": study_base("schedule.iterations", 1e20)}),
    Case("study-grid-iterations-1e20", V, 2, ["re:{f_re}:\\d+: grid\\.schedule\\.iterations", "schedule.iterations"],
         {"f": study(grid={"schedule.iterations": [10, 10**20]})}),
    Case("study-seed-2-70", V, 2, ["re:{f_re}:\\d+: seeds\\.0"], {"f": study(seeds=[2**70])}),
    Case("study-batch-size-huge", V, 2, ["base.schedule.batch_size"], {"f": study_base("schedule.batch_size", 10**12)}),
    Case("study-max-failures-huge", V, 2, ["max_failures"], {"f": study(max_failures=10**20)}),
    Case("train-iterations-1e20", T, 2, ["{f}: schedule.iterations"], {"f": roll("schedule.iterations", 1e20)},
         RUN_ABSENT),
    Case("train-seed-2-70", T, 2, ["{f}: seed"], {"f": {**ROLL, "seed": 2**70}}, RUN_ABSENT),
    Case("train-seed-negative", T, 2, ["{f}: seed"], {"f": {**ROLL, "seed": -1}}, RUN_ABSENT),
    Case("train-eval-seed-2-64", T, 2, ["{f}: eval.seed"], {"f": roll("eval.seed", 2**64)}, RUN_ABSENT),
    Case("train-data-seed-2-40", T, 2, ["{f}: data.seed"], {"f": roll("data.seed", 2**40)}, RUN_ABSENT),
    Case("train-log-interval-huge", T, 2, ["{f}: schedule.log_interval"], {"f": roll("schedule.log_interval", 10**19)},
         RUN_ABSENT),
    Case("train-nfe-huge", T, 2, ["{f}: eval.nfe.0"], {"f": roll("eval.nfe", [10**9])}, RUN_ABSENT),
]

# output targets of `runs export`
EXPORT_CASES = [
    Case("export-onto-directory", ["runs", "export", "{tmp}", "--db", "{db}"], 2, ["{tmp}", "is a directory"],
         absent=["{tmp}.tmp"]),
    Case("export-parent-is-a-file", ["runs", "export", "{f}/out.csv", "--db", "{db}"], 2, ["{f}", "not a directory"],
         {"f": "a file, not a directory\n"}),
    Case("export-existing-file", ["runs", "export", "{f}", "--db", "{db}"], 2, ["{f}", "exists", "--force"],
         {"f": "keep me\n"}),
]


ANALYSIS_CASES = [
    Case("analyze-fit-form-cubic", ["analyze", "fit", "--study", "s", "--form", "cubic", "--db", "{db}"], 2,
         ["--form", "'cubic'"]),
    Case("analyze-fit-missing-study-option", ["analyze", "fit", "--db", "{db}"], 2, ["--study"]),
]

MISUSE_CASES = [
    Case("cli-unknown-command", ["frobnicate"], 2, ["frobnicate"]),
    Case("cli-unknown-subcommand", ["study", "frobnicate"], 2, ["frobnicate"]),
    Case("cli-train-missing-argument", ["train"], 2, ["config"]),
    Case("cli-train-unknown-option", ["train", "{f}", "--bogus"], 2, ["--bogus"], {"f": ROLL}, ["{tmp}/cwd/runs"]),
    Case("cli-plan-tflops-not-a-number", ["study", "plan", "{f}", "--db", "{db}", "--tflops", "abc"], 2, ["--tflops"],
         {"f": study()}),
    Case("cli-runs-unknown-option", ["runs", "list", "--db", "{db}", "--bogus"], 2, ["--bogus"]),
]

CASES = [*STUDY_CASES, *TRAIN_CASES, *HOSTILE_CASES, *LIMIT_CASES, *EXPORT_CASES, *DATA_CASES, *CHECKPOINT_CASES,
         *IMPORT_CASES, *DB_CASES, *ID_CASES,
         *WHERE_CASES, *ANALYSIS_CASES, *MISUSE_CASES]
assert len({c.id for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- the check


def fill(value: Any, ctx: dict[str, str]) -> Any:
    """Substitute {placeholders} in strings, recursively in YAML trees (raw file text is left alone)."""
    if isinstance(value, str):
        return value.format(**ctx)
    if isinstance(value, dict):
        return {fill(k, ctx): fill(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ctx) for v in value]
    return value


def context(world: World, tmp: Path, case: Case) -> dict[str, str]:
    ctx = {"db": str(world.db), "ckpt": str(world.ckpt), "trunc": str(world.trunc), "foreign": str(world.foreign),
           "text": str(world.text), "other_db": str(world.other_db), "tmp": str(tmp),
           "run0_2": world.run_ids[0][:2], "run0_tail": world.run_ids[0][-5:], "run0_mid": world.run_ids[0][1:6]}
    suffix = {"tar": ".tar.gz", "zip": ".zip", "pkl": ".pkl", "sd": ".pt", "imgs": "", "cdir": ""}
    for name in case.files:
        ctx[name] = str(tmp / f"{name}{suffix.get(name, '.yaml')}")
        ctx[f"{name}_re"] = re.escape(ctx[name])
    return ctx


def usage_box(text: str) -> bool:
    """Typer / click's own usage error: a rich box titled Error, or click's plain `Error:` form."""
    return "╭─ Error" in text or text.startswith("Usage:") or "\nError: " in text


def invoke(args: list[str], env: dict[str, str] | None = None):
    return runner.invoke(app, args, env=env or None)


def assert_clean_failure(res, code: int, needles: list[str], secret: str | None = None) -> None:
    err = res.stderr.strip()
    everything = res.stdout + res.stderr
    crashed = res.exception is not None and not isinstance(res.exception, SystemExit)
    assert not crashed, f"uncaught {type(res.exception).__name__}: {res.exception}"
    assert "Traceback" not in everything, everything
    assert res.exit_code == code, f"exit {res.exit_code}, want {code}: {everything}"
    assert err, "stderr is empty"
    if usage_box(err):
        assert code == 2, err
    else:
        assert "\n" not in err, f"more than one line on stderr:\n{err}"
        assert err.startswith("error:"), err
    flat = " ".join(err.split()) if usage_box(err) else err  # a box may wrap long messages
    for needle in needles:
        if needle.startswith("re:"):
            assert re.search(needle[3:], flat), f"no match for {needle[3:]!r} in: {err}"
        else:
            assert needle in flat, f"{needle!r} not in: {err}"
    if secret is not None:
        assert secret not in everything and (res.exception is None or secret not in str(res.exception))


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case: Case, world: World, tmp_path: Path, scratch_cwd: Path):
    ctx = context(world, tmp_path, case)
    for name, content in case.files.items():
        materialize(Path(ctx[name]), fill(content, ctx) if isinstance(content, (dict, list)) else content)
    args = [fill(a, ctx) for a in case.args]
    db_before, other_before = rows_digest(world.db), rows_digest(world.other_db)

    res = invoke(args, {k: fill(v, ctx) for k, v in case.env.items()})

    assert_clean_failure(res, case.code, [fill(n, ctx) for n in case.needles], case.secret)
    assert rows_digest(world.db) == db_before, "the store changed"
    assert rows_digest(world.other_db) == other_before, "the foreign database's rows changed"
    for path in case.absent:
        assert not Path(fill(path, ctx)).exists(), f"{fill(path, ctx)} was written"
    assert not (scratch_cwd / "ect.db").exists(), "a default ./ect.db was created"


# --------------------------------------------------------------------------- beyond one command


def test_corpus_is_large_enough():
    assert len(CASES) >= 35


def test_where_values_are_bound_not_spliced(world: World):
    """SQL-looking characters that the grammar allows are plain values: nothing matches, nothing changes."""
    before = rows_digest(world.db)
    for where in ("status=completed--", "label=dropout", "status=pending/**/", "node=x"):
        res = invoke(["runs", "list", "--db", str(world.db), "--where", where, "--json"])
        if res.exit_code == 0:
            assert json.loads(res.stdout) == [], (where, res.stdout)
        else:
            assert_clean_failure(res, 2, ["--where"])
    res = invoke(["runs", "list", "--db", str(world.db), "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == len(world.run_ids)
    assert rows_digest(world.db) == before


def test_foreign_sqlite_file_is_left_byte_identical(tmp_path: Path):
    other = tmp_path / "foreign.db"
    con = sqlite3.connect(other)
    con.execute("create table t (x)")
    con.execute("insert into t values (1)")
    con.commit()
    con.close()
    before = other.read_bytes()
    res = invoke(["study", "list", "--db", str(other)])
    assert_clean_failure(res, 1, [str(other), "not an ECT store"])
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cwd") == ["foreign.db"]  # no -wal / -shm


@pytest.mark.parametrize("cmd", [["runs", "list"], ["study", "list"], ["study", "status", "s"]])
def test_read_commands_create_no_database(cmd: list[str], tmp_path: Path):
    missing = tmp_path / "typo.db"
    res = invoke([*cmd, "--db", str(missing)])
    assert_clean_failure(res, 1, [str(missing)])
    assert not missing.exists()


def test_plan_creates_no_store(tmp_path: Path):
    spec = tmp_path / "ok.yaml"
    spec.write_text(yaml.safe_dump(study(name="ok")))
    missing = tmp_path / "typo.db"
    res = invoke(["study", "plan", str(spec), "--db", str(missing)])
    assert res.exit_code == 0, res.output
    assert not missing.exists()
