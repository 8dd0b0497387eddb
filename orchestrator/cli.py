"""The `ect` command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, get_args

import typer
from rich.table import Table

from pydantic import ValidationError

from trainer.config import ConfigError, FDMetric, PointMetric, batch_error, format_validation_error, load_config, valid_device

from . import cli_analysis, cli_db, cli_runs, cli_study, cli_toy
from .cli_options import print_json
from .common import RUNTIME, clean_errors, err, out

if TYPE_CHECKING:
    import torch

# torch and the trainer's modules that need it are imported inside the commands that use them, so that
# `ect --help` and the store commands start in well under a second.


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        out.print(f"ect {metadata.version('ect-scaling')}", highlight=False)
        raise typer.Exit()


app = typer.Typer(
    help="Scaling-law studies of consistency models trained with Easy Consistency Tuning (ECT).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Scaling-law studies of consistency models trained with Easy Consistency Tuning (ECT)."""

app.add_typer(cli_study.app, name="study")
app.add_typer(cli_runs.app, name="runs")
app.add_typer(cli_analysis.analyze_app, name="analyze")
app.add_typer(cli_analysis.figures_app, name="figures")
app.add_typer(cli_toy.app, name="toy")
app.add_typer(cli_db.app, name="db")
@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="TrainConfig YAML file (see configs/)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", show_default="runs/CONFIG-NAME", help="Run directory for the checkpoint."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue from OUT/checkpoint.pt if present, or start over."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    workers: int = typer.Option(1, "--workers", help="Data-parallel ranks (more than 1: DDP under Ray Train on a local Ray; the config's batch_size is the global batch)."),
) -> None:
    """Train one ECT (or diffusion pretraining) run with a progress bar; resumes from its checkpoint."""
    from trainer.loop import train

    from .console import ProgressReporter

    out_dir = out_dir or Path("runs") / config.stem
    keys = ("status", "step", "images_seen", "train_flops", "normalized_compute", "flops_per_sample", "num_params",
            "final_loss", "checkpoint", "message")
    with clean_errors():
        if workers < 1:
            raise ConfigError(f"--workers: {workers}; expected at least 1")
        cfg = load_config(config)
        problem = batch_error(cfg.schedule.batch_size, workers, cfg.schedule.batch_per_device)
        if problem:
            raise ConfigError(f"{config}: {problem} (--workers {workers})")
        if not resume:
            (out_dir / "checkpoint.pt").unlink(missing_ok=True)
        with ProgressReporter(cfg.schedule.iterations, err, description=config.stem) as reporter:
            if workers == 1:
                result = train(cfg, out_dir, reporter)
                values = {**result.__dict__, "normalized_compute": result.normalized_compute,
                          "checkpoint": str(result.checkpoint) if result.checkpoint else None}
            else:
                from .ray_backend import train_on_local_workers

                values = train_on_local_workers(cfg.to_json(), out_dir, workers, reporter)
    summary = {k: values[k] for k in keys}
    if json_out:
        print_json(summary)
    else:
        table = Table(title=f"ect train {config}", show_header=False)
        for k, v in summary.items():
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
        out.print(table)
    if summary["status"] != "completed":
        err.print(f"[red]error:[/] run {summary['status']}: {summary['message']}")
        raise typer.Exit(RUNTIME)


IMPORT_ARCHS = ("ddpmpp", "ddpmpp-cond", "edm2-s", "edm2-m", "edm2-l", "edm2-xl")  # trainer.importer.ARCHS (a test checks)


@app.command("import-weights")
def import_weights_cmd(
    src: Path = typer.Argument(..., help="EDM/EDM2 weights: a state-dict file, or NVIDIA's .pkl snapshot (needs --trust-pickle)."),
    arch: Optional[str] = typer.Option(None, "--arch", help=f"Target network: {', '.join(IMPORT_ARCHS)}."),
    config: Optional[Path] = typer.Option(None, "--config", help="Or: the network of this TrainConfig YAML."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Output state dict (use it as `init:` in a config)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow reading a .pkl snapshot (pickles can run code; the embedded source is never executed, only tensors are read)."),
) -> None:
    """Convert published EDM / EDM2 weights into a weights-only state dict for `init:`, reporting key mismatches."""
    from trainer.checkpoint import CheckpointError, save_state_dict
    from trainer.importer import ARCHS, import_weights
    from trainer.loop import meta_model
    from trainer.precond import Precond

    with clean_errors():
        if (arch is None) == (config is None):
            raise ConfigError("import-weights: give exactly one of --arch or --config")
        if arch is not None and arch not in ARCHS:
            raise ConfigError(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
        if src.suffix == ".pkl" and not trust_pickle:
            raise ConfigError(f"{src}: NVIDIA .pkl snapshots are pickles that can execute code; "
                              "pass --trust-pickle to import it")
        target: str | Precond = arch if arch is not None else meta_model(load_config(config))
        state, report = import_weights(src, target, trust_pickle=trust_pickle)
        for line in report.lines():
            out.print(line, highlight=False)
        if not report.ok:
            raise CheckpointError(f"{src}: keys do not match the target network (see above); nothing written")
        save_state_dict(out_path, state)
    out.print(f"wrote {len(state)} tensors to {out_path}")


METRICS = [*get_args(FDMetric), *get_args(PointMetric)]


def cli_device(name: str) -> "torch.device":
    """--device: auto, cpu, cuda or cuda:N (a usage error otherwise)."""
    from trainer.loop import resolve_device

    if not valid_device(name):
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    return resolve_device(name)


@app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="An ECT checkpoint."),
    metric: Optional[str] = typer.Option(None, "--metric", show_default="the run's eval.metric", help="fd_digits, fd_inception, fd_dinov2, fd_dinov2_vitb14, swd or energy."),
    steps: str = typer.Option("1,2", "--steps", help="Comma-separated consistency sampling steps (NFE)."),
    heun: bool = typer.Option(False, "--heun", help="Also evaluate EDM's Heun sampler (35 NFE)."),
    samples: Optional[int] = typer.Option(None, "--samples", min=2, show_default="the run's eval.num_samples", help="Samples per evaluation."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Extractor weights file (fd_inception, fd_dinov2)."),
    ema: Optional[str] = typer.Option(None, "--ema", help="Which EMA of the checkpoint (default: the first)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate a checkpoint's EMA at the given NFEs; prints a table or JSON."""
    from trainer.data import load_dataset
    from trainer.evaluation import Evaluator
    from trainer.loop import load_model
    from trainer.reporter import NullReporter

    with clean_errors():
        try:
            nfes = [int(x) for x in steps.split(",") if x.strip()]
        except ValueError:
            nfes = []
        if not nfes or min(nfes) < 1:
            raise ConfigError(f"--steps {steps!r}: expected comma-separated integers >= 1, e.g. 1,2")
        if metric is not None and metric not in METRICS:
            raise ConfigError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
        dev = cli_device(device)
        net, cfg, _ = load_model(checkpoint, ema, str(dev))
        updates = {"seed": seed, "heun": heun}
        if metric is not None:
            updates["metric"] = metric
        if samples is not None:
            updates["num_samples"] = samples
        if weights is not None:
            updates["weights"] = weights
        try:
            cfg = cfg.model_validate({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), **updates}})
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, "ect eval")) from None
        evaluator = Evaluator(cfg.eval, cfg.sampling, load_dataset(cfg.data), dev)
        results = evaluator.evaluate(net, step=0, reporter=NullReporter(), nfes=nfes)
    rows = [r.__dict__ for r in results]
    if json_out:
        print_json({"checkpoint": str(checkpoint), "results": rows})
        return
    table = Table(title=f"ect eval {checkpoint}")
    for col in ("nfe", "sampler", "metric", "value", "extractor", "num_samples"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                        for c in ("nfe", "sampler", "metric", "value", "extractor", "num_samples")))
    out.print(table)


@app.command("sample")
def sample_cmd(
    checkpoint: Path = typer.Argument(..., help="An ECT checkpoint (checkpoint.pt of a run directory)."),
    steps: int = typer.Option(1, "--steps", min=1, help="Consistency sampling steps (1 NFE each; needs steps-1 mid times)."),
    heun: bool = typer.Option(False, "--heun", help="Use EDM's Heun sampler instead (diffusion baseline, 35 NFE)."),
    out_path: Path = typer.Option(Path("samples.png"), "--out", "-o", help="Output image: PNG grid, or a scatter plot (PNG/PDF) for 2-D data."),
    num: int = typer.Option(64, "--num", "-n", min=1, help="Number of samples."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    ema: Optional[str] = typer.Option(None, "--ema", help="Which EMA of the checkpoint (default: the first)."),
    class_label: Optional[int] = typer.Option(None, "--class", help="Class for a conditional model (default: random)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Draw samples from a checkpoint's EMA and write an image grid or a scatter plot."""
    import torch

    from trainer.loop import load_model
    from trainer.sampling import sample, sampler_for

    from .images import save_image_grid, save_scatter

    with clean_errors():
        if out_path.suffix.lower() not in (".png", ".pdf"):
            raise ConfigError(f"--out {out_path}: expected a .png or .pdf file")
        dev = cli_device(device)
        net, cfg, sample_shape = load_model(checkpoint, ema, str(dev))
        labels = None
        if net.label_dim and class_label is not None:
            if not 0 <= class_label < net.label_dim:
                raise ValueError(f"--class must be in 0..{net.label_dim - 1}")
            labels = torch.full((num,), class_label, device=dev)
        gen = torch.Generator(device=dev).manual_seed(seed)
        x, nfe = sample(net, sampler_for(cfg.sampling, steps, heun), num, sample_shape, gen, dev, labels)
        if x.ndim == 2:
            path = save_scatter(x, out_path, title=f"{checkpoint} · NFE {nfe}")
        else:
            path = save_image_grid(x, out_path, scale=max(1, 64 // x.shape[-1]))
    out.print(f"wrote {num} samples (NFE {nfe}) to {path}")

