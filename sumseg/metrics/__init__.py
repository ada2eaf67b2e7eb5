"""Mask metrics, numpy (:mod:`.masks`) and batched torch (:mod:`.batched`); imports nothing from sumseg."""

from sumseg.metrics.batched import boundary_iou_torch, iou_torch, mask_boundary_torch
from sumseg.metrics.masks import boundary_iou, boundary_width, iou, mask_boundary

__all__ = ["boundary_iou", "boundary_iou_torch", "boundary_width", "iou", "iou_torch", "mask_boundary",
           "mask_boundary_torch"]
