"""Evaluation clicker: the next click of a simulated user, with the semantics of RITM's clicker.

All arrays here are numpy, indexed ``[y, x]``; a :class:`Click` is ``(y, x, is_positive)``.

Semantics (RITM ``isegm/inference/clicker.py``), for a boolean prediction ``pred``, ground truth
``gt`` and optional ``ignore`` mask, all ``(H, W)``:

1. ``FN = gt & ~pred & ~ignore`` and ``FP = ~gt & pred & ~ignore``.
2. Each is padded by one zero pixel on every side (the image border counts as background), its L2
   distance transform (distance of every pixel to the nearest zero pixel) taken, the padding cropped.
3. Already-clicked pixels are set to 0 *after* the transform (they do not act as background).
4. The click is positive iff the largest FN distance is strictly larger than the largest FP
   distance (a tie is negative); it goes to the first pixel in raster order (``np.argmax`` order
   on the ``(y, x)`` grid) holding the maximum of the chosen map.

Maxima and ties are decided on *exact* squared integer distances ``dy² + dx²``. RITM uses OpenCV's
float32 ``DIST_MASK_PRECISE`` transform, which can differ in the last bit between equal true
distances, so on exact ties it may pick a different pixel (or sign) than the definition says; we
follow the definition. When no error pixel is left (no FN and no FP, or all of them already
clicked), :func:`next_click` returns ``None``: the harness stops clicking and keeps the current
IoU for the remaining rounds (RITM would click the pixel (0, 0) as a negative click).

Speed: :func:`next_click` never transforms the whole image. It works in the window of each error
region's bounding box plus one pixel (outside the region distances are 0, and the nearest zero pixel
of a region pixel always lies in that window). There it bounds every squared distance from above by
OpenCV's exact city-block and chessboard transforms (``d ≤ d_L1`` and ``d ≤ √2·d_C``), takes the
exact distance of the best-looking pixel as a lower bound on the maximum, and computes exact
distances only for the pixels whose upper bound reaches it, by the cheapest exact way: against the
zero pixels on the region's edge (every nearest zero pixel is one), by scanning offsets in order of
length, or by the exact transform of the window. :func:`next_click_plain` is the plain full-image
computation it is tested and benchmarked against (identical clicks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import cv2
import numpy as np
from scipy import ndimage

# Above this many (candidate, pixel) pairs the exact transform of the whole window is cheaper.
_PAIR_BUDGET = 1 << 24
_PAIR_CHUNK = 1 << 21


class Click(NamedTuple):
    """One simulated click: pixel row ``y``, column ``x`` (in the mask's frame) and its sign."""

    y: int
    x: int
    is_positive: bool


class _Best(NamedTuple):
    """Largest exact squared distance of a region (0 when nothing is clickable) and its pixel."""

    d2: int
    y: int
    x: int


def error_regions(
    pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """False negatives and false positives ``(H, W)`` bool, ignore pixels removed from both."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same (H, W) shape")
    fn, fp = gt & ~pred, ~gt & pred
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise ValueError(f"ignore {ignore.shape} must have the shape of gt {gt.shape}")
        fn &= ~ignore
        fp &= ~ignore
    return fn, fp


def exact_sq_edt(mask: np.ndarray) -> np.ndarray:
    """Exact squared L2 distance ``(H, W)`` int64 of every pixel of ``mask`` to its nearest zero pixel.

    No padding here: ``mask`` must contain a zero pixel. scipy's feature transform is exact; the
    squared distance is computed from the nearest zero pixel's integer coordinates.
    """
    nearest = ndimage.distance_transform_edt(mask, return_distances=False, return_indices=True)
    grid = np.indices(mask.shape, dtype=np.int64)
    return ((nearest - grid) ** 2).sum(axis=0)


def _pick(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None, clicked: Iterable[tuple[int, int]],
          region_best: Callable[[np.ndarray, Sequence[tuple[int, int]]], _Best]) -> Click | None:
    fn, fp = error_regions(pred, gt, ignore)
    clicked = [(int(y), int(x)) for y, x in clicked]
    h, w = gt.shape
    for y, x in clicked:
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"clicked pixel (y={y}, x={x}) lies outside the {h}x{w} mask")
    best_fn, best_fp = region_best(fn, clicked), region_best(fp, clicked)
    if best_fn.d2 == 0 and best_fp.d2 == 0:
        return None
    is_positive = best_fn.d2 > best_fp.d2
    best = best_fn if is_positive else best_fp
    return Click(best.y, best.x, is_positive)


def _plain_best(region: np.ndarray, clicked: Sequence[tuple[int, int]]) -> _Best:
    d2 = exact_sq_edt(np.pad(region, 1))[1:-1, 1:-1]
    for y, x in clicked:
        d2[y, x] = 0
    flat = int(np.argmax(d2))
    y, x = divmod(flat, d2.shape[1])
    return _Best(int(d2[y, x]), y, x)


def next_click_plain(
    pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
    clicked: Iterable[tuple[int, int]] = (),
) -> Click | None:
    """The plain full-image version of :func:`next_click` (the reference it must agree with)."""
    return _pick(pred, gt, ignore, clicked, _plain_best)


def _edge_zeros(win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` of zero pixels 4-adjacent to a one pixel: every nearest zero pixel is one of them."""
    grown = cv2.dilate(win.view(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    ys, xs = np.nonzero(grown.view(bool) & ~win)
    return ys, xs


def _sq_dist_to(ys: np.ndarray, xs: np.ndarray, zy: np.ndarray, zx: np.ndarray) -> np.ndarray:
    """Exact squared distance from each pixel ``(ys, xs)`` to the nearest of the pixels ``(zy, zx)``."""
    out = np.empty(len(ys), dtype=np.int64)
    step = max(1, _PAIR_CHUNK // max(1, len(zy)))
    for i in range(0, len(ys), step):
        dy = ys[i:i + step, None] - zy[None, :]
        dx = xs[i:i + step, None] - zx[None, :]
        out[i:i + step] = (dy * dy + dx * dx).min(axis=1)
    return out


def _offsets(max_d2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All offsets ``(dy, dx)`` with ``dy² + dx² <= max_d2``, sorted by that squared length."""
    r = math.isqrt(max_d2)
    dy, dx = (a.ravel() for a in np.mgrid[-r:r + 1, -r:r + 1])
    d2 = dy * dy + dx * dx
    order = np.argsort(d2, kind="stable")
    order = order[d2[order] <= max_d2]
    return dy[order], dx[order], d2[order]


def _sq_dist_by_offsets(win: np.ndarray, ys: np.ndarray, xs: np.ndarray, max_d2: int) -> np.ndarray:
    """Exact squared distance of pixels ``(ys, xs)`` of ``win`` to its nearest zero pixel, looking at
    offsets in order of length; every pixel must have a zero within ``sqrt(max_d2)``. Outside the
    window counts as zero (true for a region's bounding-box window)."""
    dy, dx, d2 = _offsets(max_d2)
    r = math.isqrt(max_d2)
    padded = np.pad(win, r)
    out = np.empty(len(ys), dtype=np.int64)
    step = max(1, _PAIR_CHUNK // len(d2))
    for i in range(0, len(ys), step):
        hit = ~padded[ys[i:i + step, None] + r + dy, xs[i:i + step, None] + r + dx]
        out[i:i + step] = d2[np.argmax(hit, axis=1)]
    return out


def _exact_method(n_candidates: int, n_edges: int, max_upper: int) -> str:
    """Cheapest exact way to get the candidates' distances: "edges", "offsets" or "transform"."""
    by_edges = n_candidates * n_edges  # pairs (candidate, edge zero pixel)
    by_offsets = n_candidates * 4 * (max_upper + 1)  # pairs (candidate, offset within the bound)
    if min(by_edges, by_offsets) > _PAIR_BUDGET:
        return "transform"
    return "edges" if by_edges <= by_offsets else "offsets"


def _fast_best(region: np.ndarray, clicked: Sequence[tuple[int, int]]) -> _Best:
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return _Best(0, -1, -1)
    cols = np.flatnonzero(region.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    # Bounding box plus a ring of zeros; window pixel (i, j) is image pixel (top - 1 + i, left - 1 + j).
    win = np.pad(region[top:rows[-1] + 1, left:cols[-1] + 1], 1)
    inside = [(y - top + 1, x - left + 1) for y, x in clicked
              if 0 < y - top + 1 < win.shape[0] - 1 and 0 < x - left + 1 < win.shape[1] - 1]
    u8 = win.view(np.uint8)
    d_l1 = cv2.distanceTransform(u8, cv2.DIST_L1, 3).astype(np.float64)  # exact integers
    d_c = cv2.distanceTransform(u8, cv2.DIST_C, 3).astype(np.float64)  # exact integers
    upper = np.minimum(d_l1 * d_l1, 2.0 * d_c * d_c)  # >= exact squared L2 distance
    for i, j in inside:
        upper[i, j] = d_c[i, j] = 0.0
    if upper.max() == 0:
        return _Best(0, -1, -1)
    zy, zx = _edge_zeros(win)
    guesses = np.array([np.argmax(upper), np.argmax(d_c)])
    gy, gx = np.divmod(guesses, win.shape[1])
    lower = int(_sq_dist_to(gy, gx, zy, zx).max())  # exact distance of a clickable pixel
    cy, cx = np.nonzero(upper >= lower)  # every pixel that can reach the maximum, raster order
    max_upper = int(upper[cy, cx].max())
    method = _exact_method(cy.size, zy.size, max_upper)
    if method == "transform":
        d2 = exact_sq_edt(win)[cy, cx]
    elif method == "edges":
        d2 = _sq_dist_to(cy, cx, zy, zx)
    else:
        d2 = _sq_dist_by_offsets(win, cy, cx, max_upper)
    k = int(np.argmax(d2))
    return _Best(int(d2[k]), top - 1 + int(cy[k]), left - 1 + int(cx[k]))


def next_click(
    pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
    clicked: Iterable[tuple[int, int]] = (),
) -> Click | None:
    """Next click for prediction ``pred`` against ground truth ``gt`` (module docstring has the rules).

    Args:
        pred: ``(H, W)`` bool current prediction; all-False for the first click.
        gt: ``(H, W)`` bool ground-truth mask.
        ignore: optional ``(H, W)`` bool; its pixels are neither FN nor FP.
        clicked: earlier clicks as ``(y, x)``; they are never clicked again.

    Returns:
        ``Click(y, x, is_positive)``, or ``None`` when no clickable error pixel is left.
    """
    return _pick(pred, gt, ignore, clicked, _fast_best)


class Clicker:
    """Keeps the clicks on one instance (like RITM's ``Clicker``).

    ``clicker.next(pred)`` computes the next click against the stored ground truth, records it and
    returns it; it returns ``None`` (and records nothing) once no error is left.
    """

    def __init__(self, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        self.gt = np.asarray(gt, dtype=bool)
        self.ignore = None if ignore is None else np.asarray(ignore, dtype=bool)
        self.clicks: list[Click] = []

    def next(self, pred: np.ndarray | None = None) -> Click | None:
        """Next click for ``pred`` ``(H, W)`` bool; ``None`` (the default) means an empty prediction."""
        if pred is None:
            pred = np.zeros_like(self.gt)
        click = next_click(pred, self.gt, self.ignore, [(c.y, c.x) for c in self.clicks])
        if click is not None:
            self.clicks.append(click)
        return click
