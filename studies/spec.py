"""`StudySpec`: a declared study, and `expand()` into `RunSpec`s with content-hash run ids.

A study is a base `TrainConfig`, variants (labelled overrides and/or a grid over dotted config
paths), optional diffusion pretraining whose checkpoint initialises the tuning runs, seeds,
per-run resources and evaluations. Run ids hash what determines the weights (and the run it starts from),
so submitting a study twice runs nothing new and a run shared by two studies is trained once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from trainer.config import (MAX_SAMPLES, MAX_STEPS, TAGS, ConfigError, FDMetric, PointMetric, Seed, TrainConfig,
                            batch_error, check_mid_times, config_paths, error_message, error_path, field_paths,
                            parse_yaml, read_yaml, suggest_key, weights_identity)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # matched with fullmatch: no trailing newline
MAX_NAME_LENGTH = 64  # the store's column for study names
MAX_LABEL_LENGTH = 128  # the store's column for run labels (variant label, grid values and seed joined)
MAX_RUNS = 10_000  # default of StudySpec.max_runs: the paper's studies have at most a few hundred runs


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_name(value: str, what: str = "name") -> str:
    """Names become directory names: letters, digits, '_', '-', '.', no leading dot, at most 64."""
    if not NAME_RE.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r}: use letters, digits, '_', '-' and '.' (no '..', no leading dot)")
    return value


class Resources(Strict):
    """What one run asks of the cluster: `workers` data-parallel ranks, each with its CPUs and GPUs.

    One worker trains in the Tune trial itself; more train under Ray Train's TorchTrainer (DDP).
    Not part of the run id: the same config on more workers is the same run.
    """

    workers: int = Field(1, ge=1, description="data-parallel ranks; schedule.batch_size is split across them")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)

    @property
    def cpus(self) -> float:
        """CPUs of the whole run (all its workers): what a scheduler must find free to start it."""
        return self.workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        """GPUs of the whole run (all its workers)."""
        return self.workers * self.gpus_per_worker


class Variant(Strict):
    """A labelled set of overrides of the base config, by dotted path (e.g. `ect.q: 4`)."""

    label: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    seeds: list[Seed] | None = Field(None, min_length=1,
                                    description="training seeds of this variant (e.g. extra seeds at the ends of a "
                                                "scaling curve); default: the study's seeds")
    resources: Resources | None = Field(None, description="this variant's runs; default: the study's resources "
                                                          "(e.g. more workers for the larger models)")

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        return check_name(v, "variant label")


class Pretrain(Strict):
    """Diffusion pretraining (ECT stage a = 0) whose final EMA initialises the tuning runs.

    The pretraining config is the base config with `overrides`. Keys listed in `inherit` (dotted
    config paths, e.g. `network.model_channels` for a model-size study) take each tuning run's value,
    giving one pretraining run per distinct value; runs with equal pretraining configs share one.
    """

    overrides: dict[str, Any] = Field(default_factory=dict)
    inherit: list[str] = Field(default_factory=list)
    resources: Resources | None = Field(None, description="per pretraining run; default: the study's resources "
                                                          "(e.g. all cores for the one pretraining run, one per tuning run)")


class Evaluate(Strict):
    """What `ect study evaluate NAME` measures when no option overrides it: consistency sampling at each of `steps`
    (intermediate times `mid_times`, default each run's sampling.mid_times), EDM's Heun sampler with `heun_steps`,
    and, for each step count in `tune`, intermediate times searched in `tune_range` on the noise of seed + 1."""

    steps: list[Annotated[int, Field(ge=1, le=MAX_STEPS)]] = Field(default_factory=lambda: [1, 2], min_length=1)
    mid_times: list[float] | None = Field(None, description="decreasing, inside (sigma_min, sigma_max)")
    heun_steps: int | None = Field(None, ge=2, le=MAX_STEPS, description="also EDM's Heun sampler (2n - 1 NFE)")
    tune: list[Annotated[int, Field(ge=2, le=4)]] = Field(
        default_factory=list, description="step counts whose intermediate times are searched (2: t_mid)")
    tune_range: tuple[float, float] = Field((0.05, 20.0), description="bounds of the searched times")
    tune_iterations: int = Field(8, ge=1, le=100, description="golden-section steps per time searched")
    tune_rounds: int = Field(2, ge=1, le=20, description="coordinate-search sweeps (3 and 4 steps)")
    tune_samples: int | None = Field(None, ge=2, le=MAX_SAMPLES,
                                     description="samples per search measurement; default: num_samples")
    metric: PointMetric | FDMetric | None = Field(None, description="default: each run's eval.metric")
    num_samples: int | None = Field(None, ge=2, le=MAX_SAMPLES, description="default: each run's eval.num_samples")
    seed: Seed = Field(0, description="seed of the reported noise (and class labels); the search uses seed + 1")

    def check_times(self, sigma_min: float, sigma_max: float, default_mid_times: list[float]) -> None:
        """Times inside (sigma_min, sigma_max), decreasing, and enough of them for every step count."""
        try:
            check_mid_times(self.mid_times or [], sigma_min, sigma_max)
        except ValueError as e:
            raise ValueError(f"mid_times: {e}") from None
        lo, hi = self.tune_range
        if not (sigma_min < lo < hi < sigma_max):
            raise ValueError(f"tune_range {[lo, hi]}: expected LOW < HIGH inside (sigma_min, sigma_max) = "
                             f"({sigma_min:g}, {sigma_max:g})")
        have = len(self.mid_times if self.mid_times is not None else default_mid_times)
        short = [n for n in self.steps if n - 1 > have]
        if short:
            raise ValueError(f"steps: {short} need {max(short) - 1} mid_times, have {have}")


TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def parse_tracking(value: str) -> tuple[str, str | None]:
    """`mlflow` or `mlflow:URI` (a URI of a known scheme, or a local path) -> ('mlflow', URI or None)."""
    kind, colon, uri = value.partition(":")
    if kind != "mlflow" or (colon and not uri):
        raise ValueError(f"{value!r}: unknown tracker, expected mlflow or mlflow:URI")
    if "://" in uri and uri.split("://", 1)[0].split("+", 1)[0] not in TRACKING_SCHEMES:
        raise ValueError(f"{value!r}: unknown URI scheme, expected one of {', '.join(TRACKING_SCHEMES)}")
    return kind, uri or None


class StudySpec(Strict):
    name: str
    description: str = ""
    kind: Literal["compute_scaling", "model_size", "ablation", "custom"] = "custom"
    base: TrainConfig = Field(default_factory=TrainConfig)
    variants: list[Variant] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    pretrain: Pretrain | None = None
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(2, ge=0, le=1000, description="retries of a failed run, each from its last checkpoint")
    max_runs: int = Field(MAX_RUNS, ge=1, validate_default=True,
                          description="refuse a study that expands to more runs than this (checked before "
                                      "expanding); raise it for a larger study")
    tracking: str | None = Field(None, description="mirror the study into an experiment tracker: mlflow or mlflow:URI "
                                                   "(`--track` overrides it)")
    evaluate: Evaluate = Field(default_factory=Evaluate, description="what `ect study evaluate` measures by default")

    @field_validator("evaluate")
    @classmethod
    def _evaluate_times(cls, ev: Evaluate, info: ValidationInfo) -> Evaluate:
        """Checked against the base config's sigma_min, sigma_max and mid_times."""
        base = info.data.get("base")
        if base is not None:
            ev.check_times(base.precond.sigma_min, base.sampling.sigma_max, base.sampling.mid_times)
        return ev

    @field_validator("tracking")
    @classmethod
    def _tracking(cls, v: str | None) -> str | None:
        if v is not None:
            parse_tracking(v)
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "study name")

    @field_validator("max_runs")
    @classmethod
    def _run_limit(cls, limit: int, info: ValidationInfo) -> int:
        """Checked on the declared sizes (fields above this one), before anything is expanded."""
        if {"grid", "seeds", "variants", "pretrain"} <= info.data.keys():
            n = run_count(**{k: info.data[k] for k in ("grid", "seeds", "variants", "pretrain")})
            if n > limit:
                raise ValueError(f"{n} runs exceed the limit of {limit} (raise with max_runs: {n} in the study file)")
        return limit

    @field_validator("variants")
    @classmethod
    def _unique_labels(cls, variants: list[Variant]) -> list[Variant]:
        labels = [v.label for v in variants]
        dupes = sorted(x for x, n in Counter(labels).items() if n > 1)  # linear: a file may hold thousands
        if dupes:
            raise ValueError(f"variant labels must be unique, repeated: {dupes}")
        return variants

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, values in grid.items() if not values]
        if empty:
            raise ValueError(f"each grid axis needs at least one value: {', '.join('grid.' + k for k in empty)}")
        return grid


def varied_keys(spec: StudySpec) -> list[str]:
    """The config keys a study varies, in declaration order: grid axes, variants' override keys, and `seed`
    when a run has more than one."""
    keys = list(spec.grid)
    for v in spec.variants:
        keys += [k for k in v.overrides if k not in keys]
    if len(spec.seeds) > 1 or any(v.seeds and len(v.seeds) > 1 for v in spec.variants):
        keys.append("seed")
    return keys


def run_count(grid: dict[str, list[Any]], seeds: list[int], variants: list[Variant], pretrain: Pretrain | None) -> int:
    """Runs a study expands to, by arithmetic alone (nothing is expanded): per variant, grid points x seeds,
    plus at most one pretraining run per grid point and variant."""
    points = math.prod(len(v) for v in grid.values())
    per_variant = [len(v.seeds or seeds) for v in variants] or [len(seeds)]
    pretrains = points * len(per_variant) if pretrain is not None else 0
    return points * sum(per_variant) + pretrains


class RunSpec(BaseModel):
    """One training run of a study, fully resolved."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    study: str
    label: str
    role: Literal["pretrain", "tune", "run"]
    config: TrainConfig
    params: dict[str, Any]  # the values this run varies (variant overrides, grid axes, seed)
    depends_on: str | None = None  # run id whose checkpoint initialises this one
    resources: Resources


# --------------------------------------------------------------------------- overrides


def set_path(tree: dict, dotted: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for `a.b.c`, creating mappings on the way."""
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def apply_overrides(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A validated copy of `base` with dotted-path overrides applied.

    Switching the kind of a tagged section (`data.name`, `network.arch`, `ema.kind`) starts that
    section from the new kind's defaults; such switches are applied before the other overrides.
    """
    tree = json.loads(base.model_dump_json())
    tags = {f"{sec}.{TAGS[sec]}" for sec in TAGS}
    for dotted, value in sorted(overrides.items(), key=lambda kv: kv[0] not in tags):
        if dotted in tags:
            section = dotted.split(".")[0]
            if not isinstance(tree.get(section), dict) or tree[section].get(TAGS[section]) != value:
                tree[section] = {}
        set_path(tree, dotted, value)
    return TrainConfig.model_validate(tree)


def run_id_of(config: TrainConfig, depends_on: str | None) -> str:
    """Content hash of what determines the weights and of the run it starts from: equal runs share an id, and
    changing evaluation, device, GPU options or paths trains nothing again. An `init` file given in the
    config itself (not a run) counts by its file name."""
    init_file = config.init.name if config.init is not None else None
    payload = json.dumps({"config": weights_identity(config), "init_run": depends_on, "init_file": init_file},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _combinations(spec: StudySpec) -> list[tuple[str, dict[str, Any], list[int], Resources]]:
    """(label, overrides, seeds, resources) for every variant x grid point (a study without variants has one, 'base')."""
    variants = spec.variants or [Variant(label="base")]
    axes = list(spec.grid.items())
    out = []
    for variant in variants:
        for values in itertools.product(*(vals for _, vals in axes)) if axes else [()]:
            overrides = dict(variant.overrides)
            parts = [] if (variant.label == "base" and axes) else [variant.label]
            for (key, _), value in zip(axes, values):
                overrides[key] = value
                parts.append(f"{key.split('.')[-1]}={value}")
            out.append(("_".join(parts) if parts else variant.label, overrides, variant.seeds or spec.seeds,
                        variant.resources or spec.resources))
    return out


def _pretrain_for(spec: StudySpec, overrides: dict[str, Any]) -> TrainConfig:
    """The pretraining config that a tuning run with these overrides starts from."""
    inherited = {k: v for k, v in overrides.items() if k in spec.pretrain.inherit}
    return apply_overrides(spec.base, {**inherited, "ect.mode": "pretraining", "init": None,
                                       **spec.pretrain.overrides})


def expand(spec: StudySpec) -> list[RunSpec]:
    """All runs of the study: pretraining runs (if any) first, then one run per variant, grid point and seed."""
    pretrains: dict[str, RunSpec] = {}
    runs: list[RunSpec] = []
    for label, overrides, seeds, resources in _combinations(spec):
        pre_id = None
        if spec.pretrain is not None:
            pre_cfg = _pretrain_for(spec, overrides)
            pre_id = run_id_of(pre_cfg, None)
            if pre_id not in pretrains:
                inherited = {k: v for k, v in overrides.items() if k in spec.pretrain.inherit}
                pre_label = "_".join(["pretrain"] + [f"{k.split('.')[-1]}={v}" for k, v in inherited.items()])
                pretrains[pre_id] = RunSpec(run_id=pre_id, study=spec.name, label=pre_label, role="pretrain",
                                            config=pre_cfg, params={"stage": "pretrain", **inherited},
                                            resources=spec.pretrain.resources or spec.resources)
        for seed in seeds:
            cfg = apply_overrides(spec.base, {**overrides, "seed": seed})
            run_label = label if len(seeds) == 1 else f"{label}_seed{seed}"
            runs.append(RunSpec(
                run_id=run_id_of(cfg, pre_id), study=spec.name, label=run_label,
                role="tune" if pre_id else "run", config=cfg, params={**overrides, "seed": seed},
                depends_on=pre_id, resources=resources,
            ))
    runs = list(pretrains.values()) + runs
    seen: dict[str, str] = {}
    for r in runs:
        if len(r.label) > MAX_LABEL_LENGTH:
            raise ValueError(f"run label {r.label!r} has {len(r.label)} characters, the store holds at most "
                             f"{MAX_LABEL_LENGTH} (shorten the variant label or grid values)")
        if r.run_id in seen:
            raise ValueError(f"runs {seen[r.run_id]!r} and {r.label!r} resolve to the same config")
        seen[r.run_id] = r.label
        problem = batch_error(r.config.schedule.batch_size, r.resources.workers, r.config.schedule.batch_per_device)
        if problem:
            raise ValueError(f"run {r.label!r}: {problem}")
    return runs


# --------------------------------------------------------------------------- loading with YAML lines


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    """The YAML line of the longest known prefix of an error location."""
    for n in range(len(loc), 0, -1):
        if tuple(loc[:n]) in lines:
            return lines[tuple(loc[:n])]
    return None


_STUDY_PATHS: list[str] = []


def study_paths() -> list[str]:
    """Every dotted field path of a study file (`base.optim.lr`, `variants.label`, ...), computed once."""
    if not _STUDY_PATHS:
        _STUDY_PATHS.extend(field_paths(StudySpec))
    return _STUDY_PATHS


def _errors(err: ValidationError, source: str, lines: dict[tuple, int], base_file: tuple[str, dict] | None = None) -> list[str]:
    """`source:LINE: dotted.path: message`, one per error; an error in a base config read from its own file
    names that file, its line and the field as written there."""
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        if base_file is not None and loc[:1] == ("base",) and len(loc) > 1:
            file, base_lines = base_file
            out.append(f"{file}:{_line_for(loc[1:], base_lines) or '?'}: {error_path(loc[1:])}: "
                       f"{error_message({**e, 'loc': loc[1:]}, config_paths())}")
            continue
        out.append(f"{source}:{_line_for(loc, lines) or '?'}: {error_path(loc)}: {error_message(e, study_paths())}")
    return out


def load_study(path: Path) -> StudySpec:
    """Load a study YAML; every problem (also in variants and grid points) is reported at once with its line."""
    path = Path(path)
    doc = read_yaml(path, "study file")
    raw, lines = doc.data, doc.lines
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with name, kind, base, variants/grid")
    base_file = None
    if isinstance(raw.get("base"), str):  # base: a TrainConfig YAML file, relative to the study file
        base_path = base_file_of(path, raw["base"])
        base_doc = read_yaml(base_path, "base config file")
        if not isinstance(base_doc.data, (dict, type(None))):
            raise ConfigError(f"{base_path}: expected a mapping of config sections, got {type(base_doc.data).__name__}")
        raw["base"], base_file = base_doc.data or {}, (str(base_path), base_doc.lines)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("\n".join(_errors(e, str(path), lines, base_file))) from None
    problems = _resolution_errors(spec, raw, str(path), lines)
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        expand(spec)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return spec


def base_file_of(study_file: Path, base: str) -> Path:
    """The base config file a study names (`base: FILE`), relative to the study file's folder."""
    return Path(study_file).parent / base


def _resolution_errors(spec: StudySpec, raw: dict, source: str, lines: dict[tuple, int]) -> list[str]:
    """Validate every override set against TrainConfig, naming the variant / grid key and its line."""
    problems: list[str] = []
    checks: list[tuple[tuple, dict[str, Any]]] = []
    if spec.pretrain is not None:
        checks.append((("pretrain", "overrides"), {"ect.mode": "pretraining", **spec.pretrain.overrides}))
    for i, v in enumerate(spec.variants):
        checks.append((("variants", i, "overrides"), v.overrides))
    for key, values in spec.grid.items():
        for j, value in enumerate(values):
            checks.append((("grid", key, j), {key: value}))
    for where, overrides in checks:
        try:
            apply_overrides(spec.base, overrides)
        except ValidationError as e:
            for err in e.errors():
                dotted = error_path(tuple(err["loc"]))
                key = next((k for k in overrides if dotted.startswith(k) or k.startswith(dotted)), None)
                loc = where + ((key,) if key and where[-1] == "overrides" else ())
                line = _line_for(loc, lines)
                label = ".".join(str(p) for p in where)
                if err["type"] == "extra_forbidden" and key is not None:  # the key as written, with a suggestion
                    if where[0] == "grid":  # once per grid axis, not per value
                        line, label = _line_for(where[:2], lines), f"grid.{key}"
                    problem = f"{source}:{line or '?'}: {label}: {key}: unknown field{suggest_key(key, config_paths())}"
                    if problem not in problems:
                        problems.append(problem)
                    continue
                problems.append(f"{source}:{line or '?'}: {label}: {dotted or '(config)'}: {error_message(err)}")
    return problems


def stored_spec(text: str, source: str) -> StudySpec:
    """A study spec from the YAML stored with it (see `dump_spec`), parsed with the same bounds as a file."""
    try:
        return StudySpec.model_validate(parse_yaml(text, source).data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {error_path(tuple(e.errors()[0]['loc']))}: "
                          f"{error_message(e.errors()[0], study_paths())}") from None


def dump_spec(spec: StudySpec) -> str:
    """The spec as YAML (stored with the study so a study can be resumed from the store alone)."""
    return yaml.safe_dump(json.loads(spec.model_dump_json()), sort_keys=False)
