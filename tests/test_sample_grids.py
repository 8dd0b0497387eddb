"""Which runs a study's sample grid shows: the pretraining, then the lowest seed per budget, only where the
checkpoint exists; tiles keep every pixel."""

import pandas as pd
import torch

from orchestrator.images import tile_images
from orchestrator.sample_grids import budget_label, is_image_study, one_run_per_budget


def test_one_run_per_budget(tmp_path):
    ckpt = {}
    for name in ("pre", "a0", "a1", "b1", "b0", "c0"):
        ckpt[name] = tmp_path / f"{name}.pt"
        if name != "c0":  # c0's checkpoint was deleted
            ckpt[name].write_bytes(b"x")
    rows = [("pre", "pretrain", 0, 100, "completed"), ("a0", "tune", 0, 10, "completed"),
            ("a1", "tune", 1, 10, "completed"), ("b1", "tune", 1, 20, "completed"),
            ("b0", "tune", 0, 20, "failed"), ("c0", "tune", 0, 40, "completed")]
    frame = pd.DataFrame([{"run_id": r, "label": r, "role": role, "seed": seed, "images_seen": seen,
                           "status": status, "checkpoint": str(ckpt[r]), "nfe": nfe}
                          for r, role, seed, seen, status in rows for nfe in (1, 2)])
    picked = one_run_per_budget(frame)
    assert list(picked["run_id"]) == ["pre", "a0", "b1"]
    assert is_image_study(frame.assign(**{"data.name": "digits"}))
    assert not is_image_study(frame.assign(**{"data.name": "swissroll"}))


def test_tile_images_layout_and_values():
    images = torch.linspace(-1, 1, 5 * 2 * 3).reshape(5, 1, 2, 3)
    tile = tile_images(images, pad=1, cols=2)
    assert tile.shape == (3 * 3 - 1, 2 * 4 - 1, 1)
    assert tile[0, 0, 0] == 0 and tile[-2:, -3:, 0].tolist() == [[128] * 3] * 2  # first pixel; empty 6th cell
    assert tile[2, 0, 0] == 128  # the gap row between image rows
    assert tile[3:5, 0:3, 0].tolist() == ((images[2, 0] + 1) * 127.5).round().int().tolist()


def test_budget_label_reads_budget_iterations_and_share_of_pretraining():
    """The mini compute-scaling budget-2e3: 400 ECT iterations of 64 images (4 forward-equivalents) against
    1500 pretraining iterations of 128 (3 forward-equivalents): 17.8 %."""
    pretrain_flops = 1500 * 128 * 3.0
    run = {"images_seen": 400 * 64, "schedule.iterations": 400, "train_flops": 400 * 64 * 4.0}
    assert budget_label(run, 50 * 64, pretrain_flops) == "2^3 · 400 it · 17.8 % of pretraining"
    odd = {"images_seen": 75 * 64, "schedule.iterations": 75, "train_flops": 75 * 64 * 4.0}
    assert budget_label(odd, 50 * 64, None) == "1.5× · 75 it"
