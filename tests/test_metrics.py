"""Metrics: hand-computed values, the boundary-iou-api reference (benchmarks/), RITM's NoC, torch == numpy."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from benchmarks import reference_boundary_iou as reference
from sumseg.metrics.batched import (
    _boundary_by_shifts,
    _boundary_iou_by_ops,
    _iou_by_ops,
    boundary_iou_torch,
    iou_torch,
    mask_boundary_torch,
)
from sumseg.metrics.interactive import miou_at_k, noc, summarize
from sumseg.metrics.masks import boundary_iou, boundary_width, iou, mask_boundary


def square(h: int, w: int, y0: int, x0: int, sy: int, sx: int | None = None) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y0 + sy, x0:x0 + (sy if sx is None else sx)] = True
    return m


def test_iou_hand_computed():
    # Two 4x4 squares at (0, 0) and (2, 2): they share a 2x2 block. 4 / (16 + 16 - 4) = 1/7.
    gt, pred = square(8, 8, 0, 0, 4), square(8, 8, 2, 2, 4)
    assert iou(gt, pred) == 4 / 28
    # Ignoring rows 4..7 drops pred's 2x4 lower part (8 px): 4 / 20.
    ignore = np.zeros_like(gt)
    ignore[4:] = True
    assert iou(gt, pred, ignore) == 4 / 20
    assert iou(gt, gt) == 1.0


def test_iou_empty_conventions():
    empty = np.zeros((5, 5), dtype=bool)
    assert iou(empty, empty) == 1.0  # nothing to find, nothing predicted
    assert iou(empty, square(5, 5, 1, 1, 2)) == 0.0
    everything = np.ones((5, 5), dtype=bool)
    assert iou(square(5, 5, 1, 1, 2), empty, ignore=everything) == 1.0


def test_boundary_width_rounds_halves_to_even():
    assert boundary_width(6, 8, 0.25) == 2  # 0.25 * 10 = 2.5 -> 2
    assert boundary_width(6, 8, 0.75) == 8  # 7.5 -> 8
    assert boundary_width(3, 4, 0.1) == 1  # 0.5 -> 0 -> at least 1
    assert boundary_width(20, 20, 0.02) == 1  # 0.566 -> 1
    assert boundary_width(1024, 1024, 0.02) == 29  # 28.96 -> 29


def test_boundary_of_square_is_its_outer_ring():
    # 20x20 image -> d = 1. A 10x10 square loses its 8x8 interior: 100 - 64 = 36 ring pixels.
    m = square(20, 20, 5, 5, 10)
    b = mask_boundary(m)
    assert b.sum() == 36
    assert not b[6:14, 6:14].any() and b[5, 5:15].all() and b[5:15, 14].all()


def test_boundary_with_half_rounded_width_and_image_border():
    # Full 6x8 mask, ratio 0.25 -> d = 2 (2.5 rounds to even). The border counts as background, so
    # the boundary is every pixel within 2 of the border: 48 - (2 x 4 interior) = 40. With d = 3 the
    # interior would vanish (48).
    full = np.ones((6, 8), dtype=bool)
    b = mask_boundary(full, 0.25)
    assert b.sum() == 40 and not b[2:4, 2:6].any()


def test_boundary_iou_hand_computed():
    # 10x10 squares at cols 5..14 and 6..15 (rows 5..14) in 20x20, d = 1: two 36-px rings.
    # Shared: rows 5 and 14, cols 6..14 -> 18 px; their vertical sides never coincide.
    # 18 / (36 + 36 - 18) = 1/3.
    gt, pred = square(20, 20, 5, 5, 10), square(20, 20, 5, 6, 10)
    assert boundary_iou(gt, pred) == 18 / 54
    empty = np.zeros_like(gt)
    assert math.isnan(boundary_iou(empty, empty))
    assert boundary_iou(gt, empty) == 0.0


def _random_masks(rng: np.random.Generator, b: int, h: int, w: int) -> np.ndarray:
    masks = np.zeros((b, h, w), dtype=np.uint8)
    for m in masks:
        for _ in range(int(rng.integers(0, 4))):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(m, centre, int(rng.integers(1, max(2, max(h, w)))), 1, -1)
        m ^= (rng.random((h, w)) < 0.02).astype(np.uint8)
    return masks.astype(bool)


@pytest.mark.parametrize("ratio", [0.02, 0.1, 0.25])
def test_mask_boundary_matches_reference_and_torch(ratio):
    rng = np.random.default_rng(0)
    for _ in range(15):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        masks = _random_masks(rng, 4, h, w)
        ours = np.stack([mask_boundary(m, ratio) for m in masks])
        ref = np.stack([reference.mask_to_boundary(m.astype(np.uint8), ratio) for m in masks])
        assert np.array_equal(ours, ref.astype(bool))
        assert np.array_equal(mask_boundary_torch(torch.from_numpy(masks), ratio).numpy(), ours)
        # The shifted-AND erosion used off the CPU, run here on the CPU.
        d = boundary_width(h, w, ratio)
        assert np.array_equal(_boundary_by_shifts(torch.from_numpy(masks), d).numpy(), ours)


def test_torch_metrics_equal_numpy_exactly():
    rng = np.random.default_rng(1)
    for i in range(40):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        gt, pred = _random_masks(rng, 5, h, w), _random_masks(rng, 5, h, w)
        gt[0] = pred[0] = False  # both empty: IoU 1.0, boundary IoU NaN
        ignore = rng.random(gt.shape) < 0.1 if i % 2 else None
        ign_t = None if ignore is None else torch.from_numpy(ignore)
        per = [None] * 5 if ignore is None else list(ignore)
        ratio = (0.02, 0.2)[i % 2]
        expect_iou = np.array([iou(g, p, m) for g, p, m in zip(gt, pred, per, strict=True)])
        expect_biou = np.array([boundary_iou(g, p, ratio, m) for g, p, m in zip(gt, pred, per, strict=True)])
        gt_t, pred_t = torch.from_numpy(gt), torch.from_numpy(pred)
        got_iou = iou_torch(gt_t, pred_t, ign_t)
        got_biou = boundary_iou_torch(gt_t, pred_t, ratio, ign_t)
        assert got_iou.dtype == torch.float64 and np.array_equal(got_iou.numpy(), expect_iou)
        assert np.array_equal(got_biou.numpy(), expect_biou, equal_nan=True)
        assert math.isnan(got_biou[0]) and got_iou[0] == 1.0
        # The batched tensor ops used off the CPU, run here on the CPU.
        valid = None if ign_t is None else ~ign_t
        assert np.array_equal(_iou_by_ops(gt_t, pred_t, valid).numpy(), expect_iou)
        d = boundary_width(h, w, ratio)
        assert np.array_equal(_boundary_iou_by_ops(gt_t, pred_t, d, valid).numpy(), expect_biou, equal_nan=True)


def test_torch_hand_cases():
    gt = torch.from_numpy(np.stack([square(20, 20, 5, 5, 10), square(20, 20, 5, 5, 10)]))
    pred = torch.from_numpy(np.stack([square(20, 20, 5, 6, 10), np.zeros((20, 20), bool)]))
    assert iou_torch(gt, pred).tolist() == [90 / 110, 0.0]
    assert boundary_iou_torch(gt, pred).tolist() == [18 / 54, 0.0]


def test_noc_follows_ritm():
    assert noc([0.9, 0.95], 0.85) == 1  # reached at the first click
    assert noc([0.5, 0.7, 0.86, 0.2], 0.85) == 3  # first time reached, even if it drops later
    assert noc([0.5] * 20, 0.85) == 20  # never reached -> max_clicks
    assert noc([0.5] * 19 + [0.9], 0.85) == 20  # reached exactly at the last click
    assert noc([0.5] * 20 + [0.9], 0.85) == 20  # clicks after max_clicks do not count
    assert noc([0.85], 0.85) == 1  # >= threshold
    assert noc([], 0.85, max_clicks=5) == 5


def test_summarize_hand_computed():
    # Instance A: 0.5, 0.9 -> NoC@85 = 2, NoC@90 = 2. Instance B: 0.86, 0.88 -> NoC@85 = 1,
    # NoC@90 never -> max_clicks = 2 and one failure.
    curves = [[0.5, 0.9], [0.86, 0.88]]
    bious = [[math.nan, 0.4], [0.2, 0.6]]
    s = summarize(curves, bious, max_clicks=2)
    assert s.n == 2
    assert s.miou == [pytest.approx(0.68), pytest.approx(0.89)]
    assert s.noc == {0.85: 1.5, 0.90: 2.0}
    assert s.failures == {0.85: 0, 0.90: 1}
    assert s.biou == [0.2, 0.5] and s.biou_n == [1, 2] and s.biou_nan == [1, 0]
    assert miou_at_k(curves, 1) == pytest.approx(0.68)
    row = s.as_dict()
    assert row["NoC@85"] == 1.5 and row["fail@90"] == 1 and row["mIoU@2"] == pytest.approx(0.89)


def test_summarize_rejects_ragged_or_nan_curves():
    with pytest.raises(ValueError, match=r"equal lengths, got \[1, 2\]"):
        summarize([[0.5, 0.6], [0.7]])
    with pytest.raises(ValueError, match="NaN"):
        summarize([[math.nan]])
