"""Evaluation clicker: the next click of a simulated user, with the semantics of RITM's clicker.

All arrays here are numpy, indexed ``[y, x]``; a :class:`Click` is ``(y, x, is_positive)``
(:mod:`sumseg.prompts.geometry` fixes the conventions).

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

Speed: :func:`next_click` never transforms the whole image (:mod:`sumseg.prompts._exact_max` finds
the maximum inside each error region's bounding box, from cheap integer bounds refined to exact
values only where needed). :func:`next_click_plain` is the plain full-image computation it is
tested and benchmarked against (identical clicks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from sumseg.prompts._exact_max import Best, exact_sq_edt, region_max
from sumseg.prompts.geometry import Click, error_regions

__all__ = ["Click", "Clicker", "exact_sq_edt", "next_click", "next_click_plain"]

RegionMax = Callable[[np.ndarray, Sequence[tuple[int, int]]], Best]


def _checked_regions(
    pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """FN and FP ``(H, W)`` bool of ``pred`` against ``gt`` after checking shapes (ignore removed)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same (H, W) shape")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise ValueError(f"ignore {ignore.shape} must have the shape of gt {gt.shape}")
    return error_regions(pred, gt, ignore)


def _pick(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None, clicked: Iterable[tuple[int, int]],
          best_of: RegionMax) -> Click | None:
    fn, fp = _checked_regions(pred, gt, ignore)
    clicked = [(int(y), int(x)) for y, x in clicked]
    h, w = fn.shape
    for y, x in clicked:
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"clicked pixel (y={y}, x={x}) lies outside the {h}x{w} mask")
    best_fn, best_fp = best_of(fn, clicked), best_of(fp, clicked)
    if best_fn.d2 == 0 and best_fp.d2 == 0:
        return None
    is_positive = best_fn.d2 > best_fp.d2
    best = best_fn if is_positive else best_fp
    return Click(best.y, best.x, is_positive)


def _plain_best(region: np.ndarray, clicked: Sequence[tuple[int, int]]) -> Best:
    d2 = exact_sq_edt(np.pad(region, 1))[1:-1, 1:-1]
    for y, x in clicked:
        d2[y, x] = 0
    flat = int(np.argmax(d2))
    y, x = divmod(flat, d2.shape[1])
    return Best(int(d2[y, x]), y, x)


def next_click_plain(
    pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
    clicked: Iterable[tuple[int, int]] = (),
) -> Click | None:
    """The plain full-image version of :func:`next_click` (the reference it must agree with)."""
    return _pick(pred, gt, ignore, clicked, _plain_best)


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
    return _pick(pred, gt, ignore, clicked, region_max)


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
