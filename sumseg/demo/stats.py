"""Pseudo-labels and their uncertainty maps measured against the synthetic world's true masks.

The unlabelled split has no annotations on disk, but every scene can be drawn again
(:func:`sumseg.data.synthetic_world.world_scene`, with the world's appearance shift), so each
pseudo-label can be matched to the true mask it overlaps most (entities and parts of its image).
A pseudo-label is *wrong* when that best IoU is below 0.5; its wrong *pixels* are where it differs
from the matched true mask. U maps are brought to the image as SAM brings low-res logits (``lowres_to_image``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sumseg.data.synthetic import AppearanceShift
from sumseg.data.synthetic_world import world_scene
from sumseg.errors import DataError
from sumseg.models.sum_sam import lowres_to_image
from sumseg.pipeline.store import PseudoLabelStore, open_store

WRONG_IOU = 0.5


def true_masks(store: PseudoLabelStore, i: int, seed: int, shift: AppearanceShift | None = None
               ) -> tuple[np.ndarray, list[str]]:
    """(G, H, W) bool true masks of store image ``i`` and their kinds (salient / entity / part); the image
    must be the unlabelled split's of the world of ``seed`` drawn with ``shift``."""
    e = store.images[i]
    index = int(Path(e.file_name).stem)
    scene = world_scene(seed, "unlabeled", index, e.height, shift)
    if scene.image.shape[:2] != (e.height, e.width) or not np.array_equal(scene.image, store.record(i).load_image()):
        raise DataError(f"{store.image_path(i)}: not image {index} of the synthetic world with seed {seed}"
                        + (f" and {shift}" if shift is not None else " (no appearance shift)"))
    kinds = ["salient" if k == scene.salient else "entity" for k in range(len(scene.objects))]
    return np.stack(scene.objects + scene.parts), kinds + ["part"] * len(scene.parts)


def best_match(masks: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and IoU of the best true mask of each (K, H, W) pseudo-label."""
    m = masks.reshape(len(masks), -1).astype(np.float32)
    t = truth.reshape(len(truth), -1).astype(np.float32)
    inter = m @ t.T
    union = m.sum(1)[:, None] + t.sum(1)[None] - inter
    iou = inter / np.maximum(union, 1)
    return iou.argmax(1), iou.max(1)


BINS = 1024  # U histogram bins for the AUROC (U in [0, 1])


def auroc(wrong: np.ndarray, right: np.ndarray) -> float | None:
    """AUROC of U as a detector of wrong pixels from U histograms (``BINS`` bins each): the probability that a
    wrong pixel's U exceeds a right pixel's, ties (same bin) counting half. None without both kinds."""
    n_w, n_r = wrong.sum(), right.sum()
    if not n_w or not n_r:
        return None
    below = np.concatenate([[0], np.cumsum(right)[:-1]])  # right pixels in lower bins
    return float((wrong * (below + 0.5 * right)).sum() / (n_w * n_r))


class _Tally:
    """Pixel counts, U sums and U histograms of wrong and right pixels, and wrong pixels with c > θ."""

    def __init__(self) -> None:
        self.masks = 0
        self.hist = {True: np.zeros(BINS), False: np.zeros(BINS)}
        self.u_sum = {True: 0.0, False: 0.0}
        self.confident = 0

    def add(self, u: np.ndarray, wrong: np.ndarray, theta: float) -> None:
        self.masks += 1
        for flag in (True, False):
            sel = u[wrong if flag else ~wrong]
            self.u_sum[flag] += float(sel.sum())
            self.hist[flag] += np.bincount(np.minimum((sel * BINS).astype(np.int64), BINS - 1), minlength=BINS)
        self.confident += int(((1 - u) > theta)[wrong].sum())

    def summary(self) -> dict:
        """Per-pixel means; ``u_weight`` is the mean U over all pixels — the share of the pseudo-labels' focal
        weight (c = 1 − U) that U takes away — and ``u_weight_on_wrong`` the part of it taken from wrong
        pixels; a perfect U (1 on wrong pixels, 0 on right ones) takes ``wrong_share``, all from wrong pixels."""
        px = {f: int(self.hist[f].sum()) for f in (True, False)}
        total, u_total = px[True] + px[False], self.u_sum[True] + self.u_sum[False]
        return {"masks": self.masks, "wrong_pixels": px[True], "right_pixels": px[False],
                "wrong_share": px[True] / total if total else None,
                "u_weight": u_total / total if total else None,
                "u_weight_on_wrong": self.u_sum[True] / u_total if u_total else None,
                "mean_u_wrong": self.u_sum[True] / px[True] if px[True] else None,
                "mean_u_right": self.u_sum[False] / px[False] if px[False] else None,
                "wrong_pixels_passing_theta": self.confident / px[True] if px[True] else None,
                "auroc": auroc(self.hist[True], self.hist[False])}


def store_stats(root: Path, seed: int, theta: float, shift: AppearanceShift | None = None) -> dict:
    """Counts, kinds, wrong fraction, U on wrong / right pixels, U's AUROC against pixel error (overall and
    per kind of pseudo-label: its best-matching true mask's kind, or wrong) of a finished store with U maps.

    ``theta`` is the dice gate of the SUM loss: the share of wrong pixels with c = 1 − U > θ is
    the share the gate lets through. ``seed`` and ``shift`` name the world the store's images come from.
    """
    store = open_store(root)
    kinds = {"salient": 0, "entity": 0, "part": 0, "wrong": 0}
    tally = {"all": _Tally(), **{k: _Tally() for k in kinds}}
    per_image, ious, mask_u = [], [], []
    for i, e in enumerate(store.images):
        per_image.append(e.num_masks)
        if not e.num_masks:
            continue
        masks = store.masks(i)
        truth, names = true_masks(store, i, seed, shift)
        best, iou = best_match(masks, truth)
        u8 = store.uncertainty_u8(i)
        if u8 is None:
            raise DataError(f"{store.uncertainty_path(i)}: no U map; run the uncertainty stage first")
        u = lowres_to_image(u8.float() / 255, store.image_size, (e.height, e.width)).clamp(0, 1).numpy()
        for k in range(len(masks)):
            kind = "wrong" if iou[k] < WRONG_IOU else names[best[k]]
            kinds[kind] += 1
            wrong = masks[k] != truth[best[k]]
            tally["all"].add(u[k], wrong, theta)
            tally[kind].add(u[k], wrong, theta)
            ious.append(float(iou[k]))
            mask_u.append(float(u[k][masks[k]].mean()) if masks[k].any() else 0.0)
    n = len(ious)
    corr = float(np.corrcoef(mask_u, ious)[0, 1]) if n > 2 and np.std(mask_u) > 0 and np.std(ious) > 0 else None
    counts = np.array(per_image or [0])
    overall = tally["all"].summary()
    return {
        "images": len(store), "masks": n,
        "per_image": {"mean": float(counts.mean()), "min": int(counts.min()), "max": int(counts.max())},
        "kinds": kinds, "wrong_fraction": kinds["wrong"] / max(1, n),
        "mean_best_iou": float(np.mean(ious)) if n else None,
        "wrong_pixels": overall["wrong_pixels"], "right_pixels": overall["right_pixels"],
        "mean_u_wrong": overall["mean_u_wrong"] or 0.0, "mean_u_right": overall["mean_u_right"] or 0.0,
        "wrong_pixels_passing_theta": overall["wrong_pixels_passing_theta"] or 0.0, "theta": theta,
        "wrong_share": overall["wrong_share"], "u_weight": overall["u_weight"],
        "u_weight_on_wrong": overall["u_weight_on_wrong"],
        "auroc": overall["auroc"], "by_kind": {k: tally[k].summary() for k in kinds},
        "corr_mask_u_iou": corr, "thresholds": store.thresholds,
    }
