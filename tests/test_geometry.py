"""Prompt geometry: one box definition (numpy == torch), (x, y) points from clicks, FN/FP regions."""

from __future__ import annotations

import numpy as np
import torch

from sumseg.prompts.geometry import Click, click_points, error_regions, flat_to_xy, mask_box, tight_boxes


def test_mask_box_is_inclusive_xyxy():
    m = np.zeros((10, 12), dtype=bool)
    m[2:5, 7] = True  # rows 2..4, column 7
    m[3, 9] = True
    assert mask_box(m) == (7, 2, 9, 4)
    assert mask_box(np.zeros((3, 3), dtype=bool)) is None


def test_numpy_and_torch_boxes_agree():
    rng = np.random.default_rng(0)
    masks = rng.random((50, 9, 13)) < 0.03
    masks[0] = False
    boxes, valid = tight_boxes(torch.from_numpy(masks))
    for m, b, ok in zip(masks, boxes.tolist(), valid.tolist(), strict=True):
        expect = mask_box(m)
        assert ok == (expect is not None)
        assert b == (list(expect) if expect is not None else [0.0] * 4)


def test_click_points_are_xy_with_labels():
    points, labels = click_points([Click(y=5, x=2, is_positive=True), Click(y=1, x=7, is_positive=False)])
    assert points is not None and labels is not None
    assert points.tolist() == [[2.0, 5.0], [7.0, 1.0]] and points.dtype == np.float32
    assert labels.tolist() == [1, 0]
    assert click_points([]) == (None, None)


def test_flat_indices_become_xy_points():
    # width 5: flat 7 is (y=1, x=2), flat 14 is (y=2, x=4)
    assert flat_to_xy(torch.tensor([7, 14]), 5).tolist() == [[[2.0, 1.0]], [[4.0, 2.0]]]


def test_error_regions_numpy_and_torch_agree():
    rng = np.random.default_rng(1)
    gt, pred, ignore = (rng.random((3, 6, 7)) < 0.5 for _ in range(3))
    fn, fp = error_regions(pred, gt, ignore)
    assert np.array_equal(fn, gt & ~pred & ~ignore) and np.array_equal(fp, ~gt & pred & ~ignore)
    fn_t, fp_t = error_regions(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(ignore))
    assert np.array_equal(fn_t.numpy(), fn) and np.array_equal(fp_t.numpy(), fp)
    fn, fp = error_regions(pred, gt)
    assert np.array_equal(fn | fp, gt ^ pred) and not (fn & fp).any()
