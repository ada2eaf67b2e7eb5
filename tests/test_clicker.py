"""Evaluation clicker: hand-worked cases, agreement with the plain computation and with RITM."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.reference_ritm import RitmClicker
from sumseg.prompts import _exact_max as exact_max
from sumseg.prompts.clicker import Click, Clicker, exact_sq_edt, next_click, next_click_plain


def square(h: int, w: int, y0: int, x0: int, size: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def empty_like(m: np.ndarray) -> np.ndarray:
    return np.zeros_like(m)


def test_square_first_click_is_its_centre():
    # 5x5 square at rows/cols 1..5 of a 7x7 image: centre (3, 3) is 3 px from the zero ring.
    gt = square(7, 7, 1, 1, 5)
    assert next_click(empty_like(gt), gt) == Click(3, 3, True)


def test_raster_order_breaks_ties():
    # 4x4 square at rows/cols 2..5: (3,3), (3,4), (4,3), (4,4) all have distance 2; (3, 3) comes first.
    gt = square(8, 8, 2, 2, 4)
    assert next_click(empty_like(gt), gt) == Click(3, 3, True)
    # Two equal 3x3 squares: the upper-left one's centre comes first in raster order.
    gt = square(9, 9, 5, 1, 3) | square(9, 9, 1, 5, 3)
    assert next_click(empty_like(gt), gt) == Click(2, 6, True)


def test_image_border_counts_as_background():
    # 3x3 square in the top-left corner of a 6x6 image. With the border as background the centre
    # (1, 1) is 2 px from zeros on every side; without padding (0, 0) would be 3 px from a zero.
    gt = square(6, 6, 0, 0, 3)
    assert next_click(empty_like(gt), gt) == Click(1, 1, True)
    # Whole image foreground: the padding ring is the only background.
    gt = np.ones((5, 5), dtype=bool)
    assert next_click(empty_like(gt), gt) == Click(2, 2, True)


def test_larger_false_positive_gives_negative_click():
    # FN: one pixel (distance 1). FP: 5x5 square at rows/cols 4..8, centre (6, 6) at distance 3.
    gt = np.zeros((10, 10), dtype=bool)
    gt[1, 1] = True
    pred = square(10, 10, 4, 4, 5)
    assert next_click(pred, gt) == Click(6, 6, False)


def test_tie_between_fn_and_fp_is_negative():
    # FN = 3x3 square centred (2, 2), FP = 3x3 square centred (2, 7): both maxima are distance 2.
    gt = square(5, 10, 1, 1, 3)
    pred = square(5, 10, 1, 6, 3)
    assert next_click(pred, gt) == Click(2, 7, False)


def test_clicked_pixels_are_excluded_but_not_background():
    # FN: 5x5 square at rows/cols 1..5 (centre (3, 3) at distance 3). FP: a plus centred at (3, 9),
    # whose centre is sqrt(2) from the zero diagonal neighbours.
    gt = square(7, 12, 1, 1, 5)
    pred = np.zeros_like(gt)
    pred[3, 8:11] = pred[2:5, 9] = True
    first = next_click(pred, gt)
    assert first == Click(3, 3, True)
    # (3, 3) is set to 0 *after* the transform, so (2, 2) keeps distance 2 (from the zero ring) and
    # beats the plus (sqrt 2): positive click at (2, 2). Had (3, 3) become background, (2, 2) would
    # be at sqrt(2) too, and the tie would have given a negative click at (3, 9).
    second = next_click(pred, gt, clicked=[(3, 3)])
    assert second == Click(2, 2, True)
    assert second != first


def test_ignore_pixels_are_neither_fn_nor_fp():
    # Ignore band across the middle row of the 5x5 square: what is left are two 2x5 bands whose
    # pixels are all 1 px from background (the ignored row counts as background), so (1, 1) wins.
    gt = square(7, 7, 1, 1, 5)
    ignore = np.zeros_like(gt)
    ignore[3] = True
    assert next_click(empty_like(gt), gt, ignore) == Click(1, 1, True)
    # A false positive entirely inside the ignore region is not clicked.
    pred = gt | ignore
    assert next_click(pred, gt, ignore) is None


def test_no_error_left_returns_none():
    gt = square(6, 6, 1, 1, 3)
    assert next_click(gt.copy(), gt) is None
    one = np.zeros((4, 4), dtype=bool)
    one[2, 2] = True
    assert next_click(empty_like(one), one, clicked=[(2, 2)]) is None
    assert next_click(empty_like(one), empty_like(one)) is None


def test_click_outside_the_mask_is_an_error():
    gt = square(4, 4, 1, 1, 2)
    with pytest.raises(ValueError, match="outside"):
        next_click(empty_like(gt), gt, clicked=[(4, 0)])


def test_clicker_records_clicks_until_done():
    gt = np.zeros((4, 4), dtype=bool)
    gt[1, 1] = gt[2, 2] = True
    c = Clicker(gt)
    assert c.next() == Click(1, 1, True)
    assert c.next() == Click(2, 2, True)
    assert c.next() is None
    assert c.clicks == [Click(1, 1, True), Click(2, 2, True)]


def test_exact_sq_edt_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = np.pad(rng.random((9, 11)) < 0.7, 1)
        zy, zx = np.nonzero(~m)
        yy, xx = np.indices(m.shape)
        brute = ((yy[..., None] - zy) ** 2 + (xx[..., None] - zx) ** 2).min(axis=-1)
        assert np.array_equal(exact_sq_edt(m), brute)


def _blobs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(m, centre, int(rng.integers(1, max(2, min(h, w) // 2))), 1, -1)
    return m.astype(bool)


def _random_case(rng: np.random.Generator, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h, w = (int(v) for v in rng.integers(1, 48, 2))
    if i % 3 == 0:
        gt, pred = rng.random((h, w)) < rng.random(), rng.random((h, w)) < rng.random()
    elif i % 3 == 1:
        gt, pred = _blobs(rng, h, w), _blobs(rng, h, w)
    else:
        gt = _blobs(rng, h, w)
        pred = gt ^ (rng.random((h, w)) < 0.05)
    ignore = rng.random((h, w)) < 0.1 if i % 4 == 0 else None
    return gt, pred, ignore


@pytest.mark.parametrize("method", [None, "offsets", "columns", "pairs", "tree", "transform"])
def test_identical_to_plain_on_random_masks(monkeypatch, method):
    # None: the automatic choice; otherwise every candidate distance is computed one way.
    if method is not None:
        monkeypatch.setattr(exact_max, "_plan", lambda *_: method)
    rng = np.random.default_rng(0)
    cases = 600 if method is None else 300
    clicks = 0
    for i in range(cases):
        gt, pred, ignore = _random_case(rng, i)
        clicked: list[tuple[int, int]] = []
        for _ in range(4):
            ours = next_click(pred, gt, ignore, clicked)
            assert ours == next_click_plain(pred, gt, ignore, clicked), (i, clicked)
            if ours is None:
                break
            clicked.append((ours.y, ours.x))
            clicks += 1
    assert clicks > 1.6 * cases


def test_agrees_with_ritm_up_to_exact_ties():
    # RITM's float32 transform may break exact ties differently, so compare the exact distance of
    # the clicked pixel: it is the same maximum.
    rng = np.random.default_rng(2)
    for _ in range(200):
        gt, pred = _blobs(rng, 40, 56), _blobs(rng, 40, 56)
        ours = next_click(pred, gt)
        if ours is None:
            continue
        pos, y, x = RitmClicker(gt).next_click(pred)
        fn_d2 = exact_sq_edt(np.pad(gt & ~pred, 1))[1:-1, 1:-1]
        fp_d2 = exact_sq_edt(np.pad(~gt & pred, 1))[1:-1, 1:-1]
        ours_d2 = (fn_d2 if ours.is_positive else fp_d2)[ours.y, ours.x]
        assert ours_d2 == max(fn_d2.max(), fp_d2.max())
        assert (fn_d2 if pos else fp_d2)[y, x] == ours_d2


def test_identical_to_plain_on_structured_masks():
    # Larger shapes than the random cases, so the cost model picks each way on its own: a disc, a
    # wide diagonal band, concentric rings, dense noise, a full image; three clicks each.
    h, w = 200, 240
    shapes = [np.zeros((h, w), np.uint8) for _ in range(3)]
    cv2.circle(shapes[0], (120, 100), 95, 1, -1)
    cv2.line(shapes[1], (0, 0), (w - 1, h - 1), 1, 60)
    for r in range(10, 100, 14):
        cv2.circle(shapes[2], (120, 100), r, 1, 5)
    masks = [s.astype(bool) for s in shapes]
    masks += [np.random.default_rng(3).random((h, w)) < 0.6, np.ones((h, w), bool)]
    for gt in masks:
        pred = np.zeros_like(gt)
        clicked: list[tuple[int, int]] = []
        for _ in range(3):
            ours = next_click(pred, gt, None, clicked)
            assert ours is not None and ours == next_click_plain(pred, gt, None, clicked)
            clicked.append((ours.y, ours.x))
