"""Prompt geometry shared by the training sampler, the evaluation clicker and the evaluation harness.

The one place that fixes coordinate order:

- masks are indexed ``[y, x]``: numpy ``(H, W)`` or torch ``(B, H, W)`` bool;
- a prompt leaving this module is in SAM's order: points ``(x, y)``, boxes ``(x0, y0, x1, y1)``,
  inclusive pixel indices in the masks' frame (SAM's prompt encoder adds the 0.5 itself);
- a :class:`Click` names its fields (``click.x``, ``click.y``); :func:`click_points` is the only
  conversion of clicks into SAM's point arrays;
- labels: 1 positive, 0 negative, -1 no point (SAM's padding label).

Error regions of a prediction against a ground truth: false negatives ``gt & ~pred`` and false
positives ``~gt & pred``, ignore pixels removed from both (:func:`error_regions`, numpy or torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), inclusive pixel indices
MaskT = TypeVar("MaskT", np.ndarray, Tensor)


class Click(NamedTuple):
    """One simulated click: pixel row ``y``, column ``x`` (in the mask's frame) and its sign.

    Fields are in index order ``(y, x)``, like ``mask[y, x]``; SAM gets ``(x, y)`` through
    :func:`click_points`.
    """

    y: int
    x: int
    is_positive: bool


def click_points(clicks: Sequence[Click]) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """SAM's point prompt for ``clicks``: ``(N, 2)`` float32 ``(x, y)`` and ``(N,)`` int64 labels (1 / 0).

    ``(None, None)`` for no clicks (SAM's "no points").
    """
    if not clicks:
        return None, None
    points = np.array([[c.x, c.y] for c in clicks], dtype=np.float32)
    labels = np.array([int(c.is_positive) for c in clicks], dtype=np.int64)
    return points, labels


def flat_to_xy(flat: Tensor, width: int) -> Tensor:
    """``(B,)`` int64 flat indices ``y * width + x`` → ``(B, 1, 2)`` float32 ``(x, y)`` points."""
    return torch.stack([flat % width, flat // width], dim=-1).float()[:, None, :]


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight box ``(x0, y0, x1, y1)`` (inclusive) of an ``(H, W)`` bool mask; ``None`` when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def tight_boxes(masks: Tensor) -> tuple[Tensor, Tensor]:
    """Tight boxes ``(B, 4)`` float32 ``(x0, y0, x1, y1)`` (inclusive) of ``(B, H, W)`` bool masks, and
    ``(B,)`` bool non-empty flags (the box of an empty mask is all zeros). Same boxes as :func:`mask_box`."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (B, H), (B, W)
    h, w = rows.shape[1], cols.shape[1]
    y0 = rows.int().argmax(1)
    y1 = h - 1 - rows.flip(1).int().argmax(1)
    x0 = cols.int().argmax(1)
    x1 = w - 1 - cols.flip(1).int().argmax(1)
    valid = rows.any(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(valid[:, None], boxes, torch.zeros_like(boxes)), valid


def error_regions(pred: MaskT, gt: MaskT, ignore: MaskT | None = None) -> tuple[MaskT, MaskT]:
    """False negatives ``gt & ~pred`` and false positives ``~gt & pred``, ``ignore`` pixels removed.

    Bool masks of one shape, numpy ``(H, W)`` or torch ``(B, H, W)`` (shapes are the caller's to check).
    """
    fn, fp = gt & ~pred, ~gt & pred
    if ignore is not None:
        fn, fp = fn & ~ignore, fp & ~ignore
    return fn, fp
