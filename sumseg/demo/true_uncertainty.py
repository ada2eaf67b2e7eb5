"""The true uncertainty map of the demo's pseudo-labels: a diagnostic of the method, not part of it.

SUM's U is a refiner's disagreement with a pseudo-label. On the synthetic world the truth is
known, so the U of a perfect refiner can be written instead: 1 where a pseudo-label differs from
the true mask it overlaps most (:func:`sumseg.demo.stats.best_match`, entities and parts of its
image), 0 elsewhere, brought to the store's low-res frame as the U maps are (an area mean over
each low-res cell, :func:`sumseg.models.interface.image_to_lowres_in`). A pseudo-label that is a
whole wrong mask (best IoU < 0.5) gets U = 1 on more than half of its union with that mask.

The demo's ``sum_true_u`` trains SUM on a copy of the store that holds these maps: it tells a
refiner that does not see the pseudo-labels' errors apart from errors that do not hurt
(docs/demo.md).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sumseg.atomic import write_json
from sumseg.data.synthetic import AppearanceShift
from sumseg.demo.stats import best_match, true_masks
from sumseg.models.interface import image_to_lowres_in
from sumseg.pipeline.store import open_store
from sumseg.pipeline.uncertainty import quantise, write_u_map, write_uncertainty_meta
from sumseg.tensor_files import file_digest

TRUTH = "synthetic truth"  # what made the maps, in place of a refiner's fingerprint
DONE = "true_uncertainty.json"  # written last: the copy is whole, and of which store


def true_uncertainty(masks: np.ndarray, truth: np.ndarray, frame: str, image_size: int) -> torch.Tensor:
    """(K, L, L) float U in [0, 1] of K pseudo-labels (K, H, W) bool against the image's true masks
    (G, H, W) bool: the share of each low-res cell's pixels where the pseudo-label differs from its
    best-matching true mask."""
    best, _ = best_match(masks, truth)
    wrong = torch.from_numpy(masks != truth[best]).float()
    return image_to_lowres_in(frame, wrong, image_size).clamp(0, 1)


def _copy_labels(src: Path, dst: Path) -> None:
    """The store's meta, indexes and labels, without its U maps and overlays."""
    if dst.exists():
        shutil.rmtree(dst)
    ignore = shutil.ignore_patterns("*.uncertainty.safetensors", "uncertainty.json", "overlays", DONE)
    shutil.copytree(src, dst, ignore=ignore)


def write_true_store(src: Path, dst: Path, world_seed: int, shift: AppearanceShift | None = None) -> dict:
    """Copy the pseudo-label store ``src`` to ``dst`` (a sibling of ``src``: the labels find their images
    by a relative path) with the true U maps of every pseudo-label; returns the copy's summary. A whole
    copy of the same store is kept as it is (resume)."""
    src, dst = Path(src), Path(dst)
    made_from = {"source": src.name, "source_meta_digest": file_digest(src / "meta.json"), "world_seed": world_seed,
                 "shift": asdict(shift) if shift is not None else None}
    done = dst / DONE
    try:
        old = json.loads(done.read_text())
    except (OSError, ValueError):  # no copy yet, or a damaged marker: the copy is made again
        old = None
    if isinstance(old, dict) and {k: old.get(k) for k in made_from} == made_from:
        return old
    _copy_labels(src, dst)
    store = open_store(dst)
    write_uncertainty_meta(dst, TRUTH, TRUTH)
    masks_done, u_sum = 0, 0.0
    for i, e in enumerate(store.images):
        u = torch.zeros((0, store.lowres_size, store.lowres_size))
        if e.num_masks:
            truth = true_masks(store, i, world_seed, shift)[0]
            u = true_uncertainty(store.masks(i), truth, store.frame, store.image_size)
        write_u_map(store, i, quantise(u), TRUTH)
        masks_done += e.num_masks
        u_sum += float(u.mean(dim=(1, 2)).sum())
    summary = {**made_from, "masks": masks_done, "mean_u": u_sum / max(1, masks_done)}
    write_json(done, summary, indent=1)
    return summary
