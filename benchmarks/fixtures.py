"""Inputs the pseudo-label benchmark and its tests share: a tiny SAM whose mask logits are sharp
enough that SAM's stability score varies as it does on a trained model, and a few world images."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from sumseg.data.synthetic_world import write_world
from sumseg.models.checkpoint import build_model
from sumseg.models.sum_sam import SumSam


def sharpened_tiny(scale: float = 50.0) -> SumSam:
    """The tiny model (seeded random weights) with mask logits scaled up, so stability varies as SAM's does."""
    model = build_model("tiny")
    with torch.no_grad():
        for mlp in model.sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(scale)
    return model


def write_images(folder: Path, n: int = 3) -> Path:
    """``n`` synthetic-world images, the last one cropped to 192×256 (not square), as PNGs in ``folder``."""
    world = folder.parent / f"{folder.name}_world"
    sizes = {"pretrain": 0, "task1_train": 0, "task2_train": 0, "task3_train": 0, "task1_test": 0,
             "task2_test": 0, "task3_test": 0, "general_test": 0, "unlabeled": n}
    write_world(world, sizes=sizes, workers=1, progress=False)
    folder.mkdir(parents=True)
    for i, src in enumerate(sorted((world / "unlabeled" / "images").glob("*.png"))):
        im = Image.open(src)
        (im.crop((0, 0, 256, 192)) if i == n - 1 else im).save(folder / f"img{i}.png")
    return folder
