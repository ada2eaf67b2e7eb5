"""Batched torch versions of :mod:`sumseg.metrics.masks` for training-time use (any device).

Masks are ``(B, H, W)`` bool tensors. Results are ``(B,)`` float64 and equal, bit for bit, the numpy
functions applied mask by mask (same definitions, same empty-mask conventions: IoU of two empty
masks is 1.0, boundary IoU of two empty boundaries is NaN).

On the CPU every metric is the numpy function applied mask by mask (OpenCV's erosion and numpy's
counting are several times faster there than batched torch ops). Elsewhere the erosion by the
square of side ``2d + 1`` (= the 3×3 square applied ``d`` times) is split into a row and a column
pass; each pass is a sliding-window AND computed with ``log2(2d + 1)`` shifted ANDs (two
overlapping power-of-two windows cover the window exactly). Outside the padded image counts as
foreground, as in OpenCV's ``erode`` (and max-pooling, which pads with -inf).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from sumseg.metrics.masks import boundary_iou, boundary_width, iou, mask_boundary


def _check(gt: Tensor, pred: Tensor, ignore: Tensor | None) -> Tensor | None:
    """Validate shapes and dtypes; return the valid-pixel mask, or None when nothing is ignored."""
    if gt.shape != pred.shape or gt.dim() != 3:
        raise ValueError(f"gt {tuple(gt.shape)} and pred {tuple(pred.shape)} must share one (B, H, W) shape")
    if gt.dtype != torch.bool or pred.dtype != torch.bool:
        raise ValueError(f"masks must be bool tensors, got {gt.dtype} and {pred.dtype}")
    if ignore is None:
        return None
    if ignore.shape != gt.shape:
        raise ValueError(f"ignore {tuple(ignore.shape)} must have the shape of gt {tuple(gt.shape)}")
    return ~ignore.bool()


def _count(m: Tensor) -> Tensor:
    """``(B,)`` number of True pixels of ``(B, H, W)`` bool (exact below 2³¹ pixels per mask).

    Summing a uint8 view into int32 is faster than the int64 sum of a bool tensor.
    """
    return m.view(torch.uint8).flatten(1).sum(dim=1, dtype=torch.int32)


def _mask_by_mask(metric: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float], gt: Tensor,
                  pred: Tensor, ignore: Tensor | None) -> Tensor:
    """``(B,)`` float64 of a numpy metric applied mask by mask to CPU tensors (their memory is shared)."""
    ignores = [None] * len(gt) if ignore is None else list(ignore.bool().numpy())
    return torch.tensor([metric(g, p, i) for g, p, i in zip(gt.numpy(), pred.numpy(), ignores, strict=True)],
                        dtype=torch.float64)


def _ratio(a: Tensor, b: Tensor, valid: Tensor | None, empty: float) -> Tensor:
    """``|a ∩ b| / |a ∪ b|`` per mask over the valid pixels, ``empty`` where the union is empty."""
    inter, union = a & b, a | b
    if valid is not None:
        inter &= valid
        union &= valid
    inter, union = _count(inter), _count(union)
    out = inter.double() / union.clamp_min(1).double()
    return torch.where(union == 0, torch.full_like(out, empty), out)


def iou_torch(gt: Tensor, pred: Tensor, ignore: Tensor | None = None) -> Tensor:
    """IoU ``(B,)`` float64 of ``(B, H, W)`` bool masks, ignore pixels left out; 1.0 if the union is empty."""
    valid = _check(gt, pred, ignore)
    if gt.device.type == "cpu":
        return _mask_by_mask(iou, gt, pred, ignore)
    return _iou_by_ops(gt, pred, valid)


def _iou_by_ops(gt: Tensor, pred: Tensor, valid: Tensor | None) -> Tensor:
    """:func:`iou_torch` by batched tensor ops (any device; used off the CPU)."""
    return _ratio(gt, pred, valid, 1.0)


def _window_all(m: Tensor, radius: int, dim: int) -> Tensor:
    """``out[i] = all(m[i - radius : i + radius + 1])`` along ``dim``; outside ``m`` counts as True."""
    n, length = m.shape[dim], 2 * radius + 1
    pad_shape = list(m.shape)
    pad_shape[dim] = radius
    ones = torch.ones(pad_shape, dtype=torch.bool, device=m.device)
    acc = torch.cat([ones, m, ones], dim=dim)
    span = 1
    target = 1 << (length.bit_length() - 1)  # largest power of two <= length
    while span < target:  # acc[i] = all(padded[i : i + span])
        size = acc.shape[dim] - span
        acc = acc.narrow(dim, 0, size) & acc.narrow(dim, span, size)
        span *= 2
    return acc.narrow(dim, 0, n) & acc.narrow(dim, length - span, n)


def _boundary_by_shifts(masks: Tensor, d: int) -> Tensor:
    """Inner boundaries of width ``d`` by shifted ANDs (any device; used off the CPU)."""
    h, w = masks.shape[-2:]
    padded = torch.zeros((*masks.shape[:-2], h + 2, w + 2), dtype=torch.bool, device=masks.device)
    padded[..., 1:-1, 1:-1] = masks
    eroded = _window_all(_window_all(padded, d, -1), d, -2)[..., 1:-1, 1:-1]
    return masks & ~eroded


def mask_boundary_torch(masks: Tensor, dilation_ratio: float = 0.02) -> Tensor:
    """Inner boundaries ``(..., H, W)`` bool, same definition as :func:`masks.mask_boundary`.

    On the CPU each mask goes through OpenCV's erosion (several times faster there than shifted
    ANDs, and sharing the tensor's memory); on other devices the batch is eroded by shifted ANDs.
    """
    h, w = masks.shape[-2:]
    if masks.device.type != "cpu":
        return _boundary_by_shifts(masks, boundary_width(h, w, dilation_ratio))
    flat = masks.reshape(-1, h, w).numpy()
    out = np.empty_like(flat)
    for i, m in enumerate(flat):
        out[i] = mask_boundary(m, dilation_ratio)
    return torch.from_numpy(out).reshape(masks.shape)


def boundary_iou_torch(gt: Tensor, pred: Tensor, dilation_ratio: float = 0.02,
                       ignore: Tensor | None = None) -> Tensor:
    """Boundary IoU ``(B,)`` float64 of ``(B, H, W)`` bool masks; NaN where both boundaries are empty."""
    valid = _check(gt, pred, ignore)
    if gt.device.type == "cpu":
        return _mask_by_mask(lambda g, p, i: boundary_iou(g, p, dilation_ratio, i), gt, pred, ignore)
    h, w = gt.shape[-2:]
    return _boundary_iou_by_ops(gt, pred, boundary_width(h, w, dilation_ratio), valid)


def _boundary_iou_by_ops(gt: Tensor, pred: Tensor, d: int, valid: Tensor | None) -> Tensor:
    """:func:`boundary_iou_torch` with boundary width ``d`` by batched tensor ops (used off the CPU)."""
    return _ratio(_boundary_by_shifts(gt, d), _boundary_by_shifts(pred, d), valid, float("nan"))
