"""Boundary IoU: batched torch (shifted-AND erosion) vs the per-mask OpenCV loop of boundary-iou-api.

``identical`` requires bit-equal float64 results (NaN == NaN; each batch holds a pair of empty masks).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from benchmarks.run import BenchRow
from sumseg.evaluate.metrics import boundary_iou
from sumseg.evaluate.metrics_torch import boundary_iou_torch


def _masks(rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    masks = np.zeros((b, size, size), dtype=np.uint8)
    for m in masks[1:]:  # masks[0] stays empty
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            axes = (int(rng.integers(size // 16, size // 3)), int(rng.integers(size // 16, size // 3)))
            cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return masks.astype(bool)


def _per_mask(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.array([boundary_iou(g, p) for g, p in zip(gt, pred, strict=True)])


def _best_time(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench() -> list[BenchRow]:
    rng = np.random.default_rng(0)
    rows = []
    for b, size in ((64, 256), (4, 1024)):
        gt, pred = _masks(rng, b, size), _masks(rng, b, size)
        gt_t, pred_t = torch.from_numpy(gt), torch.from_numpy(pred)
        ours_s, ours = _best_time(lambda g=gt_t, p=pred_t: boundary_iou_torch(g, p).numpy())
        ref_s, ref = _best_time(lambda g=gt, p=pred: _per_mask(g, p))
        rows.append(BenchRow(
            f"boundary IoU {b}×{size}² (CPU)", ours_s, ref_s, bool(np.array_equal(ours, ref, equal_nan=True)),
            "per batch; reference = OpenCV erode loop, mask by mask",
        ))
    return rows
