"""Pseudo-labelling vs the stock ``SamAutomaticMaskGenerator``; refiner inference vs a per-mask ``SamPredictor`` loop.

Same tiny model, same images (synthetic world, 256²), same thresholds, 32×32 grid, 64 points per
batch, ``crop_n_layers=0``; our area filters are off (the stock generator has none). The tiny
model has random weights: as built, its logits are so small that no mask is stable, so the
hypernetwork outputs are scaled ×50 (``sharpened_tiny``) and, besides SAM's 0.88 / 0.95 (which it
still almost never passes), thresholds are quantiles of its own scores (q0.7 IoU, q0.5
stability, resolved on the same images and given to both). ``SUMSEG_BENCH_CHECKPOINT=<path>``
runs the pseudo-label rows on that model instead (e.g. the pretrained tiny foundation).
``identical`` = every mask matched one to one at mask IoU ≥ 0.99; the note gives the match rate.
Times: wall seconds per image, ours then stock on each image in turn, one torch thread (CPU
seconds in the note: the machine may be shared).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from benchmarks.fixtures import sharpened_tiny, write_images
from benchmarks.matching import match_rate
from benchmarks.run import BenchRow
from sumseg import build_model
from sumseg.config import PseudoLabelSettings
from sumseg.data import encode_image, read_images
from sumseg.pipeline.amg import calibrate, label_image
from sumseg.pipeline.store import ImageLabels
from sumseg.pipeline.uncertainty import refine

IMAGES = 2
GRID = 32


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _compare(model, rgbs: list[np.ndarray], thresholds: dict[str, float]) -> BenchRow:  # noqa: ANN001
    settings = PseudoLabelSettings(points_per_side=GRID, max_area_ratio=2.0, min_area_ratio=0.0)
    stock = SamAutomaticMaskGenerator(model.sam, points_per_side=GRID, pred_iou_thresh=thresholds["pred_iou_thresh"],
                                      stability_score_thresh=thresholds["stability_score_thresh"],
                                      output_mode="coco_rle")
    times = np.zeros(4)
    matched = total = 0
    for rgb in rgbs:
        (labels, _), w1, c1 = _timed(lambda rgb=rgb: label_image(model, encode_image(model.sam, rgb)[None],
                                                                  rgb.shape[:2], settings, thresholds))
        ref, w2, c2 = _timed(lambda rgb=rgb: stock.generate(rgb))
        times += [w1, w2, c1, c2]
        a, n = match_rate(labels.rles, [r["segmentation"] for r in ref])
        matched, total = matched + a, total + n
    n = len(rgbs)
    which = "tiny" if os.environ.get("SUMSEG_BENCH_CHECKPOINT") else "tiny (random ×50)"
    name = (f"pseudo-labels, {which}, {GRID}² grid, IoU > {thresholds['pred_iou_thresh']:.3g}, "
            f"stability ≥ {thresholds['stability_score_thresh']:.3g} ({matched} masks)")
    note = (f"per image; {matched}/{total} masks matched at IoU ≥ 0.99; CPU s ours {times[2] / n:.2f}, "
            f"stock {times[3] / n:.2f} ({times[3] / times[2]:.1f}×)")
    return BenchRow(name, times[0] / n, times[1] / n, matched == total, note)


def _uncertainty_row(model, refiner, rgbs: list[np.ndarray], thresholds: dict[str, float]) -> BenchRow:  # noqa: ANN001
    """Refiner inference on up to 48 pseudo-labels per image (NMS off, so there are that many)."""
    settings = PseudoLabelSettings(points_per_side=GRID, box_nms_thresh=1.0, max_per_image=48)
    ours_s = ref_s = 0.0
    worst, masks = 0.0, 0
    for rgb in rgbs:
        labels, _ = label_image(model, encode_image(model.sam, rgb)[None], rgb.shape[:2], settings, thresholds)
        hw = rgb.shape[:2]
        r, w, _ = _timed(lambda rgb=rgb, labels=labels, hw=hw: refine(
            refiner, encode_image(refiner.sam, rgb)[None], labels, hw))

        def loop(rgb: np.ndarray = rgb, labels: ImageLabels = labels) -> list[np.ndarray]:
            predictor = SamPredictor(refiner.sam)
            predictor.set_image(rgb)
            return [predictor.predict(labels.points[k : k + 1].numpy(), np.array([1]), labels.boxes[k].numpy(),
                                      labels.logits[k : k + 1].numpy(), multimask_output=False,
                                      return_logits=True)[2][0] for k in range(len(labels))]

        ref, w_ref, _ = _timed(loop)
        ours_s, ref_s, masks = ours_s + w, ref_s + w_ref, masks + len(labels)
        if len(labels):
            worst = max(worst, float(np.abs(r.numpy() - np.stack(ref)).max()))
    return BenchRow(f"uncertainty (refiner inference), {masks} pseudo-labels", ours_s / max(1, masks),
                    ref_s / max(1, masks), worst <= 1e-4,
                    f"per mask, encoder pass included; max |logit diff| {worst:.1e}")


def bench() -> list[BenchRow]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread each: on a shared machine, idle OpenMP threads spin and skew both
    try:
        return _rows()
    finally:
        torch.set_num_threads(threads)


def _rows() -> list[BenchRow]:
    checkpoint = os.environ.get("SUMSEG_BENCH_CHECKPOINT")  # e.g. a pretrained tiny foundation
    model = build_model(None, checkpoint) if checkpoint else sharpened_tiny()
    refiner = sharpened_tiny(30.0)
    with tempfile.TemporaryDirectory() as tmp:
        recs = read_images(write_images(Path(tmp) / "images", IMAGES)).records
        rgbs = [r.load_image() for r in recs]
    feats = {p: (encode_image(model.sam, rgb)[None], rgb.shape[:2]) for p, rgb in enumerate(rgbs)}
    quantile = PseudoLabelSettings(points_per_side=GRID, pred_iou_thresh="q0.7", stability_score_thresh="q0.5")
    q_thresholds, _ = calibrate(model, lambda p: feats[p], list(feats), quantile)
    sam_row = _compare(model, rgbs, {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95})
    q_row = _compare(model, rgbs, q_thresholds)
    return [sam_row, q_row, _uncertainty_row(model, refiner, rgbs, q_thresholds)]
