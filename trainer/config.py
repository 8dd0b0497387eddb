"""`TrainConfig`: every option of one ECT training run, and the single source of its defaults.

The defaults follow the paper's CIFAR-10 recipe (Appendix C, Table 7) where one exists.
Configs are plain YAML; unknown or ill-typed fields are rejected with the field path.
"""

from __future__ import annotations

import difflib
import json
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .yamlio import ConfigError, parse_yaml, read_yaml  # noqa: F401 - re-exported: studies/ imports trainer.config only


# Upper bounds of the counts that reach the store (64-bit integers) or a torch / numpy RNG, checked at
# validation so that a typo (iterations: 1e20) is refused naming its field, not at run time.
MAX_SEED = 2**63 - 2  # seeds, and seed + 1 (the data stream), fit torch.manual_seed and a 64-bit integer column
MAX_ITERATIONS = 10**10
MAX_BATCH = 10**8  # MAX_ITERATIONS * MAX_BATCH < 2**63: images seen fit a 64-bit integer
MAX_SAMPLES = 10**8
MAX_STEPS = 10**4  # sampler steps, NFE, ECT stages
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
DataSeed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's RandomState (scikit-learn generators) takes 32 bits


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------- data


class DigitsData(Strict):
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), optionally upsampled."""

    name: Literal["digits"] = "digits"
    resolution: Literal[8, 16, 32] = 8


class SwissRollData(Strict):
    """2-D swiss roll (scikit-learn's generator), scaled to roughly unit-σ_data spread."""

    name: Literal["swissroll"] = "swissroll"
    num_samples: int = Field(10_000, ge=16, le=MAX_SAMPLES)
    noise: float = Field(0.3, ge=0.0)
    seed: DataSeed = 0


class Cifar10Data(Strict):
    """CIFAR-10 from the standard python-pickle batches: a directory or the .tar.gz."""

    name: Literal["cifar10"] = "cifar10"
    path: Path
    xflip: bool = Field(False, description="flip each drawn image left-right with probability 1/2")


class ImageFolderData(Strict):
    """A folder or EDM-style zip of PNG/JPEG images with an optional `dataset.json` of labels.

    `resolution`, `channels` and `num_classes`, when given, are checked against the files and let
    `ect study plan` size the network without reading the dataset.
    """

    name: Literal["image_folder"] = "image_folder"
    path: Path
    resolution: int | None = Field(None, ge=4)
    channels: Literal[1, 3] | None = None
    num_classes: int | None = Field(None, ge=0)
    xflip: bool = Field(False, description="flip each drawn image left-right with probability 1/2")
    loader_workers: int = Field(2, ge=0, description="DataLoader processes per rank decoding images (0: in the "
                                                     "training process)")


DataConfig = Annotated[
    Union[DigitsData, SwissRollData, Cifar10Data, ImageFolderData], Field(discriminator="name")
]


# --------------------------------------------------------------------------- networks


class SongUNetConfig(Strict):
    """DDPM++ (EDM's `SongUNet`). Defaults are a ~0.2 M-parameter CPU preset; see configs/ for paper scale."""

    arch: Literal["songunet"] = "songunet"
    model_channels: int = Field(16, ge=4)
    channel_mult: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2], min_length=1)
    channel_mult_emb: int = Field(4, ge=1)
    channel_mult_noise: int = Field(1, ge=1)
    num_blocks: int = Field(1, ge=1)
    attn_resolutions: list[int] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    label_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    conditional: bool = False
    augment_dim: int = Field(0, ge=0)


class MLPConfig(Strict):
    """A residual MLP for 2-D toy data."""

    arch: Literal["mlp"] = "mlp"
    hidden: int = Field(128, ge=4)
    depth: int = Field(3, ge=1)
    emb_dim: int = Field(32, ge=2)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    conditional: bool = False

    @field_validator("emb_dim")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (sin/cos pairs)")
        return v


class EDM2Config(Strict):
    """EDM2's magnitude-preserving UNet (Karras et al. 2024), ImageNet-64 layout.

    Defaults are EDM2-S (192 channels); M/L/XL set model_channels 256/320/384 (see configs/paper/).
    Dropout acts only in blocks at resolutions <= dropout_res, as in the ECT paper.
    """

    arch: Literal["edm2"] = "edm2"
    model_channels: int = Field(192, ge=8)
    channel_mult: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 3, 4], min_length=1)
    num_blocks: int = Field(3, ge=1)
    attn_resolutions: list[int] = Field(default_factory=lambda: [16, 8])
    label_balance: float = Field(0.5, ge=0.0, le=1.0)
    concat_balance: float = Field(0.5, ge=0.0, le=1.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    dropout_res: int = Field(16, ge=1, description="apply dropout only at resolutions <= this")
    conditional: bool = False


NetworkConfig = Annotated[Union[SongUNetConfig, MLPConfig, EDM2Config], Field(discriminator="arch")]


# --------------------------------------------------------------------------- ECT


class PrecondConfig(Strict):
    """EDM preconditioning (Karras et al. 2022, Table 1)."""

    sigma_data: float = Field(0.5, gt=0.0)
    sigma_min: float = Field(
        0.003,
        ge=0.0,
        description="boundary time of the authors' CIFAR code: c_skip/c_out are shifted by it at sampling"
        " so that f(x, sigma_min) = x",
    )


Weighting = Literal[
    "uniform",  # 1
    "inv_t",  # 1/t
    "inv_delta_t",  # 1/(t - r)
    "inv_t_plus_inv_sigma_data",  # 1/t + 1/sigma_d
    "snr",  # 1/t^2
    "snr_plus_one",  # 1/t^2 + 1
    "edm",  # 1/t^2 + 1/sigma_d^2
    "soft_min_snr",  # 1/(t^2 + sigma_d^2)
]


FLOAT32_RESOLUTION = 2.0**23  # 1 / machine epsilon of float32: q^a at which t - r = t n(t)/q^a falls to ~1 ulp of t


class ECTConfig(Strict):
    """The ECT objective: noise distribution, mapping function r(t, iters), weightings (paper Eqs. 15-16)."""

    mode: Literal["tuning", "pretraining"] = Field(
        "tuning", description="tuning: stage a = ceil(iters/d) >= 1; pretraining: a = 0, i.e. r = 0 (diffusion)"
    )
    P_mean: float = -1.1
    P_std: float = Field(2.0, gt=0.0)
    q: float = Field(2.0, gt=1.0)
    stages: int = Field(8, ge=1, le=MAX_STEPS, description="number of stages; d = ceil(iterations / stages), shortened where needed to reach the last stage")
    k: float = Field(8.0, ge=0.0)
    b: float = Field(1.0, gt=0.0)
    weighting: Weighting = "inv_delta_t"
    p: float = Field(0.5, ge=0.0, description="adaptive weighting exponent: w(D) = 1/(|D|_2^2 + c^2)^p")
    c: float = Field(0.0, ge=0.0, description="adaptive weighting smoothing")
    adaptive_norm: Literal["l2", "l1"] = Field(
        "l2", description="l1: w(D) = 1/(|D|_1 + c)^(2p), the paper's Table 4 row 1/(|D|_1 + c) at p = 1/2"
    )

    @model_validator(mode="after")
    def _resolvable(self) -> "ECTConfig":
        """r = t (1 - n(t) / q^a) must stay distinguishable from t in float32 (the dtype of t and r in training)."""
        gap = self.q**self.stages
        if self.mode == "tuning" and gap >= FLOAT32_RESOLUTION:
            raise ValueError(
                f"q = {self.q:g} with stages = {self.stages}: q^stages = {gap:.3g} >= {FLOAT32_RESOLUTION:.3g} "
                "= 1/eps(float32), so in the last stage r = t (1 - n(t)/q^a) is within an ulp of t and "
                "1/(t - r) is infinite or noise; use a smaller q or fewer stages")
        return self


# --------------------------------------------------------------------------- optimisation


class OptimConfig(Strict):
    name: Literal["radam", "adam"] = "radam"
    lr: float = Field(1e-4, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    decay: Literal["constant", "inv_sqrt"] = Field(
        "constant", description="inv_sqrt: lr / sqrt(max(iters / t_ref, 1)) (EDM2)"
    )
    t_ref: int = Field(2000, ge=1, le=MAX_ITERATIONS)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


class ClassicEMAConfig(Strict):
    """EMA with a fixed rate; `warmup` uses beta_i = min(beta, (1 + i) / (10 + i)) for short runs."""

    kind: Literal["classic"] = "classic"
    beta: float = Field(0.9999, ge=0.0, lt=1.0)
    warmup: bool = False


class PowerEMAConfig(Strict):
    """EDM2's power-function EMA, one averaged model per relative standard deviation."""

    kind: Literal["power"] = "power"
    sigma_rels: list[Annotated[float, Field(gt=0.0, lt=0.28)]] = Field(
        default_factory=lambda: [0.01, 0.05, 0.10], min_length=1
    )


EMAConfig = Annotated[Union[ClassicEMAConfig, PowerEMAConfig], Field(discriminator="kind")]


class ScheduleConfig(Strict):
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    batch_per_device: int | None = Field(
        None, ge=1, le=MAX_BATCH, description="micro-batch per forward; gradients are accumulated up to batch_size"
    )
    iterations: int = Field(100_000, ge=1, le=MAX_ITERATIONS)
    log_interval: int = Field(100, ge=1, le=MAX_ITERATIONS)
    eval_interval: int = Field(0, ge=0, le=MAX_ITERATIONS, description="0: evaluate at the end only (when eval.metric is set)")
    checkpoint_interval: int = Field(0, ge=0, le=MAX_ITERATIONS, description="0: checkpoint at the end only")


class GPUConfig(Strict):
    """Speed options that act on CUDA only; on a CPU each is a no-op."""

    channels_last: bool = Field(False, description="channels_last memory format for image networks")
    tf32: bool = Field(True, description="TF32 matmuls and convolutions on Ampere and newer")
    compile: bool = Field(False, description="torch.compile the network for training steps")


class SamplingConfig(Strict):
    sigma_max: float = Field(80.0, gt=0.0)
    mid_times: list[Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=lambda: [0.821], description="intermediate times for multistep consistency sampling"
    )
    heun_steps: int = Field(18, ge=2, le=MAX_STEPS, description="EDM Heun sampler steps (2n - 1 NFE)")
    heun_sigma_min: float = Field(0.002, gt=0.0)
    rho: float = Field(7.0, gt=0.0)


def check_mid_times(times: list[float], sigma_min: float, sigma_max: float) -> None:
    """Intermediate times of multistep sampling must decrease strictly and lie inside (sigma_min, sigma_max)."""
    inside = all(sigma_min < t < sigma_max for t in times)
    if not inside or any(b >= a for a, b in zip(times, times[1:])):
        raise ValueError(f"intermediate times {times} must decrease strictly and lie in (sigma_min, sigma_max) = "
                         f"({sigma_min:g}, {sigma_max:g})")


PointMetric = Literal["swd", "energy"]
FDMetric = Literal["fd_digits", "fd_inception", "fd_dinov2", "fd_dinov2_vitb14"]


class EvalConfig(Strict):
    """Evaluation: sample the (first) EMA at each NFE and measure a distance to the training data.

    swd / energy compare 2-D points directly; fd_* are Fréchet distances in an extractor's feature
    space (fd_digits: a small CNN trained on digits on first use, no download; fd_inception / fd_dinov2
    need a local weights file: `weights`, or $ECT_INCEPTION_WEIGHTS / $ECT_DINOV2_WEIGHTS).
    """

    metric: PointMetric | FDMetric | None = Field(None, description="None: no evaluation")
    nfe: list[Annotated[int, Field(ge=1, le=MAX_STEPS)]] = Field(default_factory=lambda: [1, 2])
    heun: bool = Field(False, description="also evaluate EDM's Heun sampler (the diffusion baseline, 35 NFE)")
    num_samples: int = Field(2000, ge=2, le=MAX_SAMPLES)
    batch_size: int = Field(500, ge=1, le=MAX_BATCH, description="samples generated per batch")
    seed: Seed = 0
    weights: Path | None = Field(None, description="feature extractor weights (fd_inception, fd_dinov2)")
    cache_dir: Path | None = Field(None, description="extractor and reference-statistics cache [default: $ECT_CACHE_DIR or ~/.cache/ect]")


class TrainConfig(Strict):
    """One ECT (or diffusion pretraining) run."""

    data: DataConfig = Field(default_factory=DigitsData)
    network: NetworkConfig = Field(default_factory=SongUNetConfig)
    precond: PrecondConfig = Field(default_factory=PrecondConfig)
    ect: ECTConfig = Field(default_factory=ECTConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    ema: EMAConfig = Field(default_factory=ClassicEMAConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    gpu: GPUConfig = Field(default_factory=GPUConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    init: Path | None = Field(None, description="checkpoint or state dict whose weights initialise the network")
    seed: Seed = 0
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast (CUDA only)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if valid_device(v):
            return v
        raise ValueError("expected auto, cpu, cuda or cuda:N")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        metric = self.eval.metric
        if metric in ("swd", "energy") and self.data.name != "swissroll":
            raise ValueError(f"eval.metric {metric!r} is for 2-D point data (data.name: swissroll)")
        if metric is not None and metric.startswith("fd_") and self.data.name == "swissroll":
            raise ValueError(f"eval.metric {metric!r} is for images; use swd or energy for 2-D data")
        if metric == "fd_digits" and self.data.name != "digits":
            raise ValueError("eval.metric 'fd_digits' needs data.name: digits")
        b, micro = self.schedule.batch_size, self.schedule.batch_per_device
        if micro is not None and b % micro:
            raise ValueError(f"schedule.batch_per_device ({micro}) must divide schedule.batch_size ({b})")
        if (self.data.name == "swissroll") != (self.network.arch == "mlp"):
            raise ValueError("network.arch must be 'mlp' for 2-D data (swissroll) and an image network otherwise")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.model_validate(json.loads(text))


# What does not determine the trained weights: evaluation and sampling settings, logging and checkpoint
# cadence, where the run executes (device, gpu.*) and where files live. `schedule.batch_per_device` is
# out too: micro-batches accumulate the gradient of the same batch with noise drawn for the whole batch,
# so it changes float rounding only, like gpu.tf32 or gpu.compile (a run may resume on another GPU).
NOT_WEIGHTS = ("eval", "sampling", "gpu", "device", "init")
NOT_WEIGHTS_SCHEDULE = ("batch_per_device", "log_interval", "eval_interval", "checkpoint_interval")


def weights_identity(cfg: TrainConfig) -> dict:
    """The part of a config that determines the trained weights: what a run id hashes and a resume compares.

    `init` is left out (a path): the trainer compares the init weights' digest, a study hashes the init's run
    id. A dataset is its kind and content fields: CIFAR-10 has no location in it, an image folder its file name.
    """
    tree = json.loads(cfg.model_dump_json(exclude=set(NOT_WEIGHTS)))
    for key in NOT_WEIGHTS_SCHEDULE:
        del tree["schedule"][key]
    data = tree["data"]
    if data["name"] == "cifar10":
        del data["path"]
    elif "path" in data:
        data["path"] = Path(data["path"]).name
    return tree


def valid_device(name: str) -> bool:
    """auto, cpu, cuda or cuda:N."""
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())


def batch_error(global_batch: int, workers: int, batch_per_device: int | None) -> str | None:
    """Why a global batch cannot be split over `workers` ranks (then micro-batches), or None if it can."""
    if global_batch // workers == 0:
        return f"schedule.batch_size: {global_batch} gives a per-worker batch of 0 with {workers} workers"
    step = workers * (batch_per_device or 1)
    if global_batch % step:
        what = f"{workers} workers x batch_per_device {batch_per_device}" if batch_per_device else f"{workers} workers"
        return f"schedule.batch_size: {global_batch} is not divisible by {what} ({step})"
    return None


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`; did you mean X?` for the closest of `choices` (difflib), or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds: itself, a union's members, a list's or Optional's item."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    if origin is dict:
        return []
    if origin is Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType, list, tuple):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return []


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of a model, sections included (`optim`, `optim.lr`), through nested models,
    lists of models and every member of a tagged union (`network.dropout` of each architecture)."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        for sub in _models_in(info.annotation):
            out.extend(p for p in field_paths(sub, path + ".") if p not in out)
    return out


def suggest_key(dotted: str, paths: Sequence[str]) -> str:
    """`; did you mean X?` for an unknown dotted key: the closest path of the same depth, else of any depth."""
    depth = dotted.count(".")
    same = [p for p in paths if p.count(".") == depth]
    return did_you_mean(dotted, same) or did_you_mean(dotted, paths)


def error_message(e: dict, paths: Sequence[str] = ()) -> str:
    """The message of one pydantic error, with the offending value where it is a scalar; an unknown field gets
    the closest valid one of `paths` (dotted, list indices left out) as a suggestion."""
    if e["type"] == "extra_forbidden":
        return "unknown field" + (suggest_key(plain_path(tuple(e["loc"])), paths) if paths else "")
    if "input" in e and e["type"] != "missing" and not isinstance(e["input"], (dict, list)):
        return f"{e['msg']} (got {e['input']!r})"
    return e["msg"]


TAGS = {"data": "name", "network": "arch", "ema": "kind"}  # the discriminator of each tagged section
TAGGED_SECTIONS = tuple(TAGS)


def error_path(loc: tuple) -> str:
    """Dotted path of an error location as a user writes it: pydantic's union tag is dropped
    (`network.mlp.dropout` -> `network.dropout`)."""
    parts = list(loc)
    for i, part in enumerate(parts):
        if part in TAGGED_SECTIONS and i + 2 < len(parts):
            del parts[i + 1]
            break
    return ".".join(str(p) for p in parts) or "(top level)"


def plain_path(loc: tuple) -> str:
    """`error_path` without list indices (`variants.0.label` -> `variants.label`): a path of `field_paths`."""
    return error_path(tuple(p for p in loc if not isinstance(p, int)))


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per error: `source: dotted.field.path: message` (an unknown field with a suggestion)."""
    paths = config_paths()
    return "\n".join(f"{source}: {error_path(e['loc'])}: {error_message(e, paths)}" for e in err.errors())


_CONFIG_PATHS: list[str] = []


def config_paths() -> list[str]:
    """Every dotted path of a TrainConfig (computed once)."""
    if not _CONFIG_PATHS:
        _CONFIG_PATHS.extend(field_paths(TrainConfig))
    return _CONFIG_PATHS


def load_yaml(path: Path) -> dict:
    """Read a YAML mapping (bounded, duplicate keys refused: `yamlio.read_yaml`); problems are ConfigErrors."""
    path = Path(path)
    raw = read_yaml(path).data
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(raw).__name__}")
    return raw


def load_config(path: Path) -> TrainConfig:
    """Load and validate a TrainConfig YAML file."""
    raw = load_yaml(path)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None
