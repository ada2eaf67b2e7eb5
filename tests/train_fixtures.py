"""Test data for the trainer: a tiny synthetic world and a pseudo-label store written by hand.

The store follows docs/pseudo-labels.md exactly (it is written with the store's own writers):
the pseudo-labels of an image are its general-set GT masks (entities and parts), the logits
s are ±8 inside/outside each mask in the low-res frame, and U (when asked) is 0.8 on a 2-pixel
band along each mask's outline and 0.05 elsewhere, as uint8 round(255·U).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sumseg.data.coco import read_coco
from sumseg.data.rle import encode
from sumseg.data.synthetic_world import SPLITS, write_world
from sumseg.models.sum_sam import input_size
from sumseg.pipeline.store import (
    FORMAT,
    UNCERTAINTY_FORMAT,
    VERSION,
    ImageLabels,
    Shard,
    StoreEntry,
    image_stem,
    write_image,
    write_index,
)
from sumseg.prompts.geometry import tight_boxes
from sumseg.tensor_files import file_digest, save_tensors

IMAGE_SIZE = 256  # the tiny model's input S
LOWRES = IMAGE_SIZE // 4


def tiny_world(root: Path, labelled: int = 3, unlabelled: int = 3, side: int = 64) -> Path:
    """``root`` with ``task1_train`` and ``task3_train`` (``labelled`` images each) and ``pretrain``
    (``unlabelled`` images: its general masks become the hand-written pseudo-labels)."""
    sizes = {s: 0 for s in SPLITS} | {"task1_train": labelled, "task3_train": labelled, "pretrain": unlabelled}
    write_world(root, seed=0, sizes=sizes, image_size=side, workers=1, progress=False)
    return root


def _lowres(masks: np.ndarray) -> torch.Tensor:
    """(K, H, W) bool → (K, L, L) float fraction inside, in the padded input frame."""
    k, h, w = masks.shape
    nh, nw = input_size(h, w, IMAGE_SIZE)
    x = F.interpolate(torch.from_numpy(masks[:, None]).float(), (nh, nw), mode="nearest")
    x = F.pad(x, (0, IMAGE_SIZE - nw, 0, IMAGE_SIZE - nh))
    return F.interpolate(x, (LOWRES, LOWRES), mode="area")[:, 0]


def write_store(images: Path, out: Path, uncertainty: bool = True, max_masks: int = 6) -> Path:
    """A finished pseudo-label store at ``out`` for the COCO split folder ``images``."""
    ds = read_coco(images / "annotations.json")
    labels_dir, index_dir = out / "labels", out / "index"
    labels_dir.mkdir(parents=True)
    index_dir.mkdir()
    entries = []
    for pos, rec in enumerate(ds.records):
        masks = rec.mask_stack()[:max_masks]
        frac = _lowres(masks)
        boxes, _ = tight_boxes(torch.from_numpy(masks))
        centre = torch.stack([boxes[:, [0, 2]].mean(1), boxes[:, [1, 3]].mean(1)], 1)
        k = len(masks)
        labels = ImageLabels([encode(m) for m in masks], torch.where(frac > 0.5, 8.0, -8.0), boxes, centre.floor(),
                             torch.full((k,), 0.9), torch.full((k,), 0.96))
        stem = image_stem(rec.image_id)
        entry = StoreEntry(pos, rec.image_id, stem, str(Path("..") / ".." / rec.image_path.relative_to(out.parent)),
                           rec.height, rec.width, k, [0, 0, 0, k, 0])
        write_image(labels_dir, entry, labels)
        if uncertainty:
            inside = (frac > 0.5).float()[:, None]
            dilated, eroded = F.max_pool2d(inside, 3, 1, 1), -F.max_pool2d(-inside, 3, 1, 1)
            border = (dilated != eroded)[:, 0]  # a 2-pixel band along each mask's outline
            u8 = torch.where(border, round(0.8 * 255), round(0.05 * 255)).to(torch.uint8)
            save_tensors(labels_dir / f"{stem}.uncertainty.safetensors", {"uncertainty": u8},
                         {"format": UNCERTAINTY_FORMAT, "version": VERSION, "refiner_fingerprint": "hand",
                          "labels_digest": file_digest(labels_dir / f"{stem}.safetensors")})
        entries.append(entry)
    write_index(index_dir, Shard(), entries, [], complete=True)
    meta = {"format": FORMAT, "version": VERSION, "model": "tiny", "image_size": IMAGE_SIZE, "lowres_size": LOWRES,
            "model_fingerprint": "hand", "input": str(images), "input_digest": "hand", "num_images": len(entries),
            "settings": {}, "thresholds": {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95},
            "calibration": None}  # every field sumseg pseudo-label writes (meta.json is schema-checked when read)
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def world_and_store(root: Path) -> tuple[Path, Path]:
    """(world folder, pseudo-label store) under ``root``; the store sits beside the world."""
    world = tiny_world(root / "world")
    return world, write_store(world / "pretrain", root / "pl")


def overrides(world: Path, store: Path, out: Path, *extra: str) -> list[str]:
    """The tiny, fast settings every trainer test starts from (any key can be overridden after)."""
    return [
        "model.name=tiny",
        f"data.labelled=[{{path: {world / 'task1_train'}, task: 1}}, {{path: {world / 'task3_train'}, task: 3}}]",
        f"data.pseudo_labels={store}",
        "data.masks_per_image=2", "data.images_per_step=2",
        "rounds.corrections=1", "rounds.final_round=true",
        "optim.lr=1e-3", "optim.steps=3", "optim.layer_decay=0.9",
        "run.device=cpu", "run.progress=false", "run.save_every=100", "run.log_every=1",
        f"run.out={out}", "lora.rank=2", *extra,
    ]
