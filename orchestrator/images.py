"""Writing samples to disk: an image grid (PNG) or, for 2-D data, a scatter plot (PNG or PDF)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tile_images(images: torch.Tensor, pad: int = 1, cols: int | None = None) -> np.ndarray:
    """[N, C, H, W] images in [-1, 1] -> one uint8 array [rows*(H+pad)-pad, cols*(W+pad)-pad, C]
    with mid-grey gaps; `cols` defaults to a near-square grid."""
    n, c, h, w = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), 128, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = r * (h + pad), col * (w + pad)
        grid[y : y + h, x : x + w] = arr[i].transpose(1, 2, 0)
    return grid


def save_image_grid(images: torch.Tensor, path: Path, scale: int = 1, pad: int = 1) -> Path:
    """Tile [N, C, H, W] images in [-1, 1] into a near-square grid (mid-grey gaps of `pad` pixels)
    and write it as an image file, each pixel enlarged `scale` times."""
    grid = tile_images(images, pad)
    c = grid.shape[-1]
    img = Image.fromarray(grid[..., 0] if c == 1 else grid, mode="L" if c == 1 else "RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_scatter(points: torch.Tensor, path: Path, reference: torch.Tensor | None = None, title: str = "") -> Path:
    """Scatter 2-D samples (and optionally the data) and write PNG or PDF by the file suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=150)
    if reference is not None:
        ref = reference.detach().cpu().numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", label="data")
    pts = points.detach().cpu().numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="C0", label="samples")
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
