"""Segmentation and interactive-segmentation metrics (numpy). Masks are ``(H, W)`` bool, indexed ``[y, x]``.

- :func:`iou`: ``|G ∩ P| / |G ∪ P|`` over the non-ignored pixels; ``1.0`` when both are empty there.
- :func:`boundary_iou`: IoU of the two masks' boundaries (Cheng et al. 2021, boundary-iou-api): the
  boundary of a mask is the mask minus its erosion by a 3×3 square applied ``d`` times after one
  pixel of zero padding (so the image border counts as background), with
  ``d = max(1, round(dilation_ratio · sqrt(H² + W²)))`` (Python ``round``: halves go to even).
  ``NaN`` when both boundaries are empty (both masks empty); aggregates leave NaN out and count it.
- :func:`noc`: number of clicks to reach an IoU threshold, ``max_clicks`` if never (RITM's
  ``compute_noc_metric``).
- :func:`summarize`: per-round mIoU / boundary IoU, NoC@85/90 and failures from per-instance curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np


def _check(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None) -> tuple[np.ndarray, ...]:
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must be the same (H, W) shape")
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    if valid.shape != gt.shape:
        raise ValueError(f"ignore {valid.shape} must have the shape of gt {gt.shape}")
    return gt, pred, valid


def iou(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of ``(H, W)`` bool masks; ``ignore`` pixels are left out of intersection and union.

    Returns ``1.0`` when the union is empty (both masks empty outside ``ignore``): the prediction
    is then perfect. (RITM's ``get_iou`` would return NaN.)
    """
    gt, pred, valid = _check(gt, pred, ignore)
    inter = int(np.count_nonzero(gt & pred & valid))
    union = int(np.count_nonzero((gt | pred) & valid))
    return 1.0 if union == 0 else inter / union


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Boundary width ``d = max(1, round(dilation_ratio · sqrt(height² + width²)))``, halves to even."""
    return max(1, int(round(dilation_ratio * math.sqrt(height * height + width * width))))


def mask_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary ``(H, W)`` bool of ``mask`` of width ``boundary_width(H, W, dilation_ratio)``.

    Same as boundary-iou-api's ``mask_to_boundary``: pad one zero pixel, erode ``d`` times with a
    3×3 square (outside the padded image does not erode), crop, subtract from the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    d = boundary_width(h, w, dilation_ratio)
    u8 = np.ascontiguousarray(mask).view(np.uint8)
    padded = cv2.copyMakeBorder(u8, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:h + 1, 1:w + 1]
    return mask & ~eroded.view(bool)


def boundary_iou(gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = 0.02,
                 ignore: np.ndarray | None = None) -> float:
    """Boundary IoU ``|Bg ∩ Bp| / |Bg ∪ Bp|`` of ``(H, W)`` bool masks; NaN if both boundaries are empty.

    ``ignore`` pixels (optional) are left out of intersection and union, after the boundaries are
    taken from the full masks.
    """
    gt, pred, valid = _check(gt, pred, ignore)
    bg, bp = mask_boundary(gt, dilation_ratio), mask_boundary(pred, dilation_ratio)
    inter = int(np.count_nonzero(bg & bp & valid))
    union = int(np.count_nonzero((bg | bp) & valid))
    return math.nan if union == 0 else inter / union


def noc(ious_per_click: Sequence[float] | np.ndarray, threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach IoU ≥ ``threshold``: ``k`` if first reached after click ``k``.

    ``ious_per_click[k - 1]`` is the IoU after ``k`` clicks. Only the first ``max_clicks`` entries
    count; ``max_clicks`` is returned when the threshold is never reached (RITM's ``_get_noc``, so
    reaching it exactly at click ``max_clicks`` also gives ``max_clicks``).
    """
    reached = np.asarray(ious_per_click, dtype=np.float64)[:max_clicks] >= threshold
    return int(np.argmax(reached)) + 1 if reached.any() else max_clicks


def _curves(curves: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    if len({len(c) for c in curves}) > 1:
        raise ValueError(f"per-instance curves must have equal lengths, got {sorted({len(c) for c in curves})}")
    arr = np.asarray(curves, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected per-instance curves of equal length (N, rounds), got shape {arr.shape}")
    return arr


def miou_at_k(iou_curves: Sequence[Sequence[float]] | np.ndarray, k: int) -> float:
    """Mean over instances of the IoU after ``k`` clicks (``curves[:, k - 1]``), NaN entries left out."""
    column = _curves(iou_curves)[:, k - 1]
    kept = column[~np.isnan(column)]
    return float(kept.mean()) if kept.size else math.nan


@dataclass
class InteractiveSummary:
    """Aggregated interactive results over ``n`` instances and ``R`` rounds.

    ``miou[r]`` / ``biou[r]``: mean IoU / boundary IoU after round ``r + 1`` (NaN boundary IoUs left
    out; ``biou_n[r]`` instances counted, ``biou_nan[r]`` left out). ``noc[t]``: mean NoC at IoU
    threshold ``t``; ``failures[t]``: instances that never reach ``t`` within ``max_clicks``.
    """

    n: int
    miou: list[float]
    noc: dict[float, float]
    failures: dict[float, int]
    biou: list[float] = field(default_factory=list)
    biou_n: list[int] = field(default_factory=list)
    biou_nan: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """Flat dict for tables/JSON: ``NoC@85``, ``fail@85``, ``mIoU@k``, ``bIoU@k`` ..."""
        out: dict[str, object] = {"n": self.n}
        for t in self.noc:
            out[f"NoC@{round(t * 100)}"] = self.noc[t]
            out[f"fail@{round(t * 100)}"] = self.failures[t]
        out.update({f"mIoU@{k + 1}": v for k, v in enumerate(self.miou)})
        out.update({f"bIoU@{k + 1}": v for k, v in enumerate(self.biou)})
        return out


def summarize(
    iou_curves: Sequence[Sequence[float]] | np.ndarray,
    biou_curves: Sequence[Sequence[float]] | np.ndarray | None = None,
    thresholds: Sequence[float] = (0.85, 0.90),
    max_clicks: int = 20,
) -> InteractiveSummary:
    """Aggregate ``(N, R)`` per-instance IoU curves (and optional boundary-IoU curves, NaN allowed).

    Round ``r`` of a curve is the value after ``r + 1`` clicks; a harness that stopped early (no
    error left) repeats the last value. NoC and failures use the first ``max_clicks`` rounds.
    """
    ious = _curves(iou_curves)
    n, rounds = ious.shape
    if np.isnan(ious).any():
        raise ValueError("IoU curves contain NaN; iou() never returns NaN")
    nocs = {t: [noc(c, t, max_clicks) for c in ious] for t in thresholds}
    summary = InteractiveSummary(
        n=n,
        miou=[float(v) for v in ious.mean(axis=0)] if n else [math.nan] * rounds,
        noc={t: float(np.mean(v)) if n else math.nan for t, v in nocs.items()},
        failures={t: int(sum(not (c[:max_clicks] >= t).any() for c in ious)) for t in thresholds},
    )
    if biou_curves is not None:
        bious = _curves(biou_curves)
        if bious.shape != ious.shape:
            raise ValueError(f"boundary-IoU curves {bious.shape} do not match IoU curves {ious.shape}")
        nan = np.isnan(bious)
        summary.biou_nan = [int(v) for v in nan.sum(axis=0)]
        summary.biou_n = [n - k for k in summary.biou_nan]
        summary.biou = [miou_at_k(bious, k + 1) for k in range(rounds)]
    return summary
