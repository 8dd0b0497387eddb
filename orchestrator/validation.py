"""A study's inputs, resolved before anything starts: every run's init checkpoint, dataset and extractor weights.

`load_study` checks what a study file says (fields, types, names and labels that fit the store); this
module checks what its runs will read: an `init` that is neither on disk nor the output of the study's
own pretraining, a missing `data.path`, absent extractor weights. Each problem is one line naming the
file (the study file, or the base config file that set the value), the field and what is missing, so
`ect study validate` and `ect study run` refuse such a study in about a second and Ray never starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from studies.spec import StudySpec, base_file_of, expand, load_study
from trainer.config import ConfigError, read_yaml
from trainer.inputs import input_problems

INPUT_FIELDS = ("init", "data.path", "eval.weights", "eval.cache_dir")  # config fields that name files
RELATIVE = " (a relative path is from the current directory)"
PRETRAIN_HINT = " (or give the study a `pretrain:` block so that its runs start from its own pretraining)"


def _where(spec: StudySpec, raw: dict, field: str, role: str, params: dict[str, Any]) -> tuple[str, tuple, str]:
    """(the key path in the study file, or 'base' for the base config, its location, the field as written there)
    of the value a run's `field` came from: its grid axis, its variant's overrides, pretrain's overrides or the base."""
    if role == "pretrain" and spec.pretrain is not None and field in spec.pretrain.overrides:
        return "study", ("pretrain", "overrides", field), f"pretrain.overrides.{field}"
    if field in spec.grid:
        return "study", ("grid", field), f"grid.{field}"
    for i, v in enumerate(spec.variants):
        if field in v.overrides and params.get(field, object()) == v.overrides[field]:
            return "study", ("variants", i, "overrides", field), f"variants.{i}.overrides.{field}"
    if isinstance(raw.get("base"), str):
        return "base", tuple(field.split(".")), field
    return "study", ("base", *field.split(".")), f"base.{field}"


def _line(lines: dict[tuple, int], loc: tuple) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def input_errors(spec: StudySpec, spec_file: Path | None = None, source: str | None = None) -> list[str]:
    """One line per missing input of any run of the study (the same problem once), naming the file, line and
    field; a spec without its file (a stored one) is named by `source`."""
    doc = read_yaml(spec_file, "study file") if spec_file is not None else None
    raw = doc.data if doc is not None and isinstance(doc.data, dict) else {}
    base = base_file_of(spec_file, raw["base"]) if isinstance(raw.get("base"), str) else None
    files = {"study": (spec_file or source or spec.name, doc.lines if doc is not None else {}),
             "base": (base, read_yaml(base).lines if base is not None else {})}
    out: list[str] = []
    for run in expand(spec):
        for p in input_problems(run.config, init_from_run=run.depends_on is not None):
            which, loc, written = _where(spec, raw, p.field, run.role, run.params)
            file, lines = files[which]
            where = f"{file}:{_line(lines, loc)}" if _line(lines, loc) else f"{file}"
            hint = (RELATIVE if p.path is not None and not p.path.is_absolute() else "") + \
                (PRETRAIN_HINT if p.field == "init" and spec.pretrain is None else "")
            line = f"{where}: {written}: {p.message}{hint}"
            if line not in out:
                out.append(line)
    return out


def check_study(spec_file: Path) -> StudySpec:
    """Load a study file and resolve its runs' inputs; every problem at once as a ConfigError (one line each)."""
    spec = load_study(spec_file)
    problems = input_errors(spec, spec_file)
    if problems:
        raise ConfigError("\n".join(problems))
    return spec


def _absolute(value: Any, cwd: Path) -> Any:
    return str(cwd / value) if isinstance(value, str) and value and not os.path.isabs(value) else value


def with_absolute_inputs(spec: StudySpec, cwd: Path | None = None) -> StudySpec:
    """The spec with relative input paths (init, data.path, eval.weights, eval.cache_dir) made absolute from
    `cwd` (default: the current directory), as validation read them: a Ray trial runs in its own directory.
    Run ids do not change (they hash file names, not their folders)."""
    cwd = Path(cwd or os.getcwd())
    tree = spec.model_dump(mode="json")
    base = tree["base"]
    for field in INPUT_FIELDS:
        *parents, leaf = field.split(".")
        node = base
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            node[leaf] = _absolute(node[leaf], cwd)
    overrides = [v["overrides"] for v in tree["variants"]] + ([tree["pretrain"]["overrides"]] if tree["pretrain"] else [])
    for o in overrides:
        for field in INPUT_FIELDS:
            if field in o:
                o[field] = _absolute(o[field], cwd)
    for field in INPUT_FIELDS:
        if field in tree["grid"]:
            tree["grid"][field] = [_absolute(v, cwd) for v in tree["grid"][field]]
    return StudySpec.model_validate(tree)
