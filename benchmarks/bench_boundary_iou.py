"""Boundary IoU vs boundary-iou-api's (its code restated, :mod:`benchmarks.reference_boundary_iou`),
mask pair by mask pair on uint8 masks, the way a user of that API computes it.

Ours: ``sumseg.metrics.boundary_iou`` (numpy/OpenCV, one pair at a time, bool masks) and
``sumseg.metrics.boundary_iou_torch`` (one call for the whole batch). ``identical`` requires
bit-equal float64 results (NaN == NaN; each batch holds a pair of empty masks).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import cv2
import numpy as np
import torch

from benchmarks import reference_boundary_iou as reference
from benchmarks.run import BenchRow
from sumseg.metrics import boundary_iou, boundary_iou_torch


def _masks(rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    masks = np.zeros((b, size, size), dtype=np.uint8)
    for m in masks[1:]:  # masks[0] stays empty
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
            axes = (int(rng.integers(size // 16, size // 3)), int(rng.integers(size // 16, size // 3)))
            cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return masks


def _reference(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # 0 / 0 on the empty pair: NaN, as the reference gives
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array([reference.boundary_iou(g, p) for g, p in zip(gt, pred, strict=True)])


def _ours_numpy(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.array([boundary_iou(g, p) for g, p in zip(gt, pred, strict=True)])


def _best_time(fn: Callable[[], np.ndarray], repeats: int = 5) -> tuple[float, np.ndarray]:
    best, out = float("inf"), np.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench() -> list[BenchRow]:
    rng = np.random.default_rng(0)
    rows = []
    for b, size in ((64, 256), (4, 1024)):
        gt8, pred8 = _masks(rng, b, size), _masks(rng, b, size)  # the reference's uint8 0/1 masks
        gt, pred = gt8.view(bool), pred8.view(bool)
        gt_t, pred_t = torch.from_numpy(gt), torch.from_numpy(pred)
        ref_s, ref = _best_time(lambda g=gt8, p=pred8: _reference(g, p))
        np_s, ours_np = _best_time(lambda g=gt, p=pred: _ours_numpy(g, p))
        torch_s, ours_t = _best_time(lambda g=gt_t, p=pred_t: boundary_iou_torch(g, p).numpy())
        rows += [
            BenchRow(f"boundary IoU, {b} pairs of {size}² (numpy, pair by pair)", np_s, ref_s,
                     bool(np.array_equal(ours_np, ref, equal_nan=True)),
                     "per batch; reference = boundary-iou-api's code, pair by pair"),
            BenchRow(f"boundary IoU, {b} pairs of {size}² (torch batched, CPU)", torch_s, ref_s,
                     bool(np.array_equal(ours_t, ref, equal_nan=True)), "per batch; same reference"),
        ]
    return rows
