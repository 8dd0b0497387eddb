"""`ect toy ...`: the paper's toy experiments. `flow-matching` is Appendix B / Fig. 6 on the swiss roll."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from trainer.config import ConfigError, SwissRollData, error_message

from .cli_options import print_json
from .common import clean_errors, err, out

if TYPE_CHECKING:  # torch, pandas, matplotlib and the trainer's torch modules load inside the functions
    import pandas as pd
    import torch

    from trainer.flow_matching import FlowToyConfig

app = typer.Typer(help="The paper's toy experiments (Appendix B).", no_args_is_help=True)

HELDOUT_SEED_OFFSET = 10_000
"""Held-out swiss-roll points use seed + this offset, so they never coincide with the training points."""
SAMPLE_SEED_OFFSET = 1
"""Every (p, steps) cell starts from the same noise (seed + this offset): common random numbers."""
FIGURE_NAME = "flow_matching_samples"
CSV_NAME = "flow_matching_distances.csv"


def parse_list(text: str, option: str, kind: type, minimum: float) -> list[Any]:
    """'0,0.5,1' -> [0.0, 0.5, 1.0]; a ConfigError naming `option` for empty, unparsable or too-small items."""
    items = [s.strip() for s in text.split(",")]
    what = "integers" if kind is int else "numbers"
    try:
        values = [kind(s) for s in items]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated {what} >= {minimum:g}") from None
    bad = [s for s, v in zip(items, values) if not math.isfinite(v) or v < minimum]
    if bad:
        raise ConfigError(f"{option} {text!r}: {', '.join(bad)} not >= {minimum:g} (expected {what} >= {minimum:g})")
    return sorted(set(values))


def build_config(**fields: Any) -> FlowToyConfig:
    """A FlowToyConfig from CLI values; pydantic errors become one ConfigError line naming the options."""
    from trainer.flow_matching import FlowToyConfig

    try:
        return FlowToyConfig(**fields)
    except ValidationError as e:
        problems = [f"--{str(x['loc'][0]).replace('_', '-')}: {error_message(x)}" for x in e.errors()]
        raise ConfigError("; ".join(problems)) from None


def save_figure(fig: Any, path: Path) -> list[Path]:
    """analysis.save_figure, imported on use (matplotlib stays out of `ect --help`)."""
    from analysis.figures import save_figure as save

    return save(fig, path)


def run_flow_matching(base: FlowToyConfig, ps: list[float], steps: list[int], eval_samples: int
                      ) -> tuple[pd.DataFrame, pd.DataFrame, torch.Tensor, dict[float, float]]:
    """Train one flow per p, sample each with every step count; return (distances, points, held-out, seconds)."""
    import pandas as pd

    from trainer.data import load_dataset
    from trainer.flow_matching import sample_flow, train_flow
    from trainer.metrics.points import energy_distance, sliced_wasserstein

    heldout = load_dataset(SwissRollData(num_samples=eval_samples, noise=base.noise,
                                         seed=base.seed + HELDOUT_SEED_OFFSET)).x
    rows: list[dict[str, Any]] = []
    points: list[pd.DataFrame] = []
    seconds: dict[float, float] = {}
    for p in ps:
        start = time.perf_counter()
        model = train_flow(base.model_copy(update={"p": p}))
        seconds[p] = time.perf_counter() - start
        err.print(f"p = {p:g}: trained {base.iterations} iterations in {seconds[p]:.1f} s", highlight=False)
        for n in steps:
            x = sample_flow(model, eval_samples, n, seed=base.seed + SAMPLE_SEED_OFFSET)
            rows.append({"p": p, "steps": n, "swd": sliced_wasserstein(x, heldout, seed=base.seed),
                         "energy": energy_distance(x, heldout)})
            points.append(pd.DataFrame({"p": p, "steps": n, "x": x[:, 0].numpy(), "y": x[:, 1].numpy()}))
    return pd.DataFrame(rows), pd.concat(points, ignore_index=True), heldout, seconds


def _table(dist: pd.DataFrame, ps: list[float], steps: list[int]) -> Table:
    table = Table(title="Flow matching, w(Δ) = 1/(‖Δ‖² + c²)^p: sliced W1 (energy distance) vs held-out data")
    table.add_column("p", justify="right")
    for n in steps:
        table.add_column(f"{n}-step", justify="right")
    cells = dist.set_index(["p", "steps"])
    for p in ps:
        table.add_row(f"{p:g}", *(f"{cells.loc[(p, n), 'swd']:.4f} ({cells.loc[(p, n), 'energy']:.4f})"
                                  for n in steps))
    return table


@app.command("flow-matching")
def flow_matching_cmd(
    out_dir: Path = typer.Option(Path("runs/toy-flow-matching"), "--out", "-o", help="Directory for the figure (PNG, PDF) and the distances CSV."),
    p_list: str = typer.Option("0,0.25,0.5,0.75,1", "--p", help="Comma-separated exponents p >= 0 of w(Δ) = 1/(‖Δ‖² + c²)^p; one flow model each (0 = plain flow matching)."),
    steps_list: str = typer.Option("1,2,4,8", "--steps", help="Comma-separated Euler step counts >= 1 (NFE) to sample every model with."),
    iterations: int = typer.Option(2000, "--iterations", help="Adam steps per model."),
    batch_size: int = typer.Option(256, "--batch-size", help="Points per training step."),
    hidden: int = typer.Option(128, "--hidden", help="Width of the MLP velocity network."),
    depth: int = typer.Option(3, "--depth", help="Residual blocks of the MLP velocity network."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    eps: float = typer.Option(1e-6, "--eps", help="c² in w(Δ) (the paper's 1e-6)."),
    num_samples: int = typer.Option(10_000, "--num-samples", help="Swiss-roll training points."),
    eval_samples: int = typer.Option(2000, "--eval-samples", help="Samples per (p, steps) cell and held-out swiss-roll points they are compared with."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training data, initialisation, batches and sampling noise (held-out data: seed + 10000)."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads (the toy MLP gains little from more, and loses much when cores are shared)."),
    json_out: bool = typer.Option(False, "--json", help="Print the distances as JSON on stdout instead of a table."),
) -> None:
    """Appendix B / Fig. 6: flow matching on the swiss roll with adaptive weighting w(Δ), p x few-step sampling."""
    started = time.perf_counter()
    with clean_errors():
        ps = parse_list(p_list, "--p", float, 0.0)
        steps = parse_list(steps_list, "--steps", int, 1)
        if eval_samples < 16:
            raise ConfigError(f"--eval-samples: must be >= 16 (got {eval_samples})")
        if threads < 1:
            raise ConfigError(f"--threads: must be >= 1 (got {threads})")
        base = build_config(num_samples=num_samples, hidden=hidden, depth=depth, iterations=iterations,
                            batch_size=batch_size, lr=lr, eps=eps, seed=seed)
        from trainer.loop import torch_threads

        with torch_threads(threads):
            dist, points, heldout, seconds = run_flow_matching(base, ps, steps, eval_samples)
        from analysis.figures import fig_point_samples

        fig = fig_point_samples(points, row="p", col="steps", reference=heldout.numpy(), scores=dist, score="swd")
        files = save_figure(fig, out_dir / FIGURE_NAME)
        files.append(out_dir / CSV_NAME)
        dist.to_csv(files[-1], index=False)
    if json_out:
        payload = {"config": base.model_dump(exclude={"p"}), "eval_samples": eval_samples, "p": ps, "steps": steps,
                   "results": dist.to_dict(orient="records"), "train_seconds": {f"{p:g}": s for p, s in seconds.items()},
                   "wall_seconds": time.perf_counter() - started, "files": [str(f) for f in files]}
        print_json(payload)
        return
    out.print(_table(dist, ps, steps))
    out.print(f"wrote {', '.join(str(f) for f in files)} in {time.perf_counter() - started:.1f} s", highlight=False)
