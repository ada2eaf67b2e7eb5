"""Mask metrics (numpy). Masks are ``(H, W)`` bool, indexed ``[y, x]``; ``ignore`` pixels are left out.

- :func:`iou`: ``|G ∩ P| / |G ∪ P|`` over the non-ignored pixels; ``1.0`` when both are empty there.
- :func:`boundary_iou`: IoU of the two masks' boundaries (Cheng et al. 2021, boundary-iou-api): the
  boundary of a mask is the mask minus its erosion by a 3×3 square applied ``d`` times after one
  pixel of zero padding (so the image border counts as background), with
  ``d = max(1, round(dilation_ratio · sqrt(H² + W²)))`` (Python ``round``: halves go to even).
  ``NaN`` when both boundaries are empty (both masks empty); aggregates leave NaN out and count it.

:mod:`sumseg.metrics.batched` has the same metrics on ``(B, H, W)`` torch tensors. This package is
low-level (numpy, OpenCV, torch only): losses, training and evaluation all import from it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _check(gt: np.ndarray, pred: np.ndarray,
           ignore: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Both masks as bool ``(H, W)`` and the valid-pixel mask (``None`` when nothing is ignored)."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must be the same (H, W) shape")
    if ignore is None:
        return gt, pred, None
    ignore = np.asarray(ignore, dtype=bool)
    if ignore.shape != gt.shape:
        raise ValueError(f"ignore {ignore.shape} must have the shape of gt {gt.shape}")
    return gt, pred, ~ignore


def _ratio(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None, empty: float) -> float:
    """``|a ∩ b| / |a ∪ b|`` over the valid pixels (all when ``valid`` is None), ``empty`` if the union is."""
    if valid is not None:
        a, b = a & valid, b & valid
    inter = int(np.count_nonzero(a & b))
    union = int(np.count_nonzero(a)) + int(np.count_nonzero(b)) - inter
    return empty if union == 0 else inter / union


def iou(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of ``(H, W)`` bool masks; ``ignore`` pixels are left out of intersection and union.

    Returns ``1.0`` when the union is empty (both masks empty outside ``ignore``): the prediction
    is then perfect. (RITM's ``get_iou`` would return NaN.)
    """
    gt, pred, valid = _check(gt, pred, ignore)
    return _ratio(gt, pred, valid, 1.0)


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Boundary width ``d = max(1, round(dilation_ratio · sqrt(height² + width²)))``, halves to even."""
    return max(1, int(round(dilation_ratio * math.sqrt(height * height + width * width))))


def mask_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary ``(H, W)`` bool of ``mask`` of width ``d = boundary_width(H, W, dilation_ratio)``.

    Same as boundary-iou-api's ``mask_to_boundary`` (pad one zero pixel, erode ``d`` times with a 3×3
    square, outside the padded image not eroding, crop, subtract from the mask), in one OpenCV call:
    erosion by the ``(2d+1)²`` square with zeros outside the image. A pixel is eroded away in both
    exactly when its square reaches a zero pixel or the outside of the image. The erosion lies inside
    the mask, so the boundary is their exclusive or.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    h, w = mask.shape
    side = 2 * boundary_width(h, w, dilation_ratio) + 1
    eroded = cv2.erode(mask.view(np.uint8), np.ones((side, side), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask ^ eroded.view(bool)


def boundary_iou(gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = 0.02,
                 ignore: np.ndarray | None = None) -> float:
    """Boundary IoU ``|Bg ∩ Bp| / |Bg ∪ Bp|`` of ``(H, W)`` bool masks; NaN if both boundaries are empty.

    ``ignore`` pixels (optional) are left out of intersection and union, after the boundaries are
    taken from the full masks.
    """
    gt, pred, valid = _check(gt, pred, ignore)
    return _ratio(mask_boundary(gt, dilation_ratio), mask_boundary(pred, dilation_ratio), valid, math.nan)
