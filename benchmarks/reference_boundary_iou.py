"""boundary-iou-api's boundary IoU, restated to time sumseg's against. Not used by sumseg itself.

Sources:
- ``mask_to_boundary`` in ``boundary_iou/utils/boundary_utils.py`` of bowenc0221/boundary-iou-api
  (MIT licence), read at commit 8006aa98e931ee410dbb1fede30271d5bc859769;
- the two-mask ``boundary_iou(gt, dt, dilation_ratio)`` that accompanies it in the Boundary IoU
  paper's reference code (copied around as "from boundary-iou-api"; the API itself scores boundary
  RLEs with pycocotools inside its COCO/LVIS evaluators).

A restatement of that computation, not a copy of its text: the same numpy/OpenCV calls with the same
arguments, in the same order, on uint8 masks, so it costs what the reference costs:

- ``d = int(round(dilation_ratio · sqrt(h² + w²)))``, at least 1;
- ``cv2.copyMakeBorder`` one pixel of zeros, ``cv2.erode`` with a 3×3 ``np.ones`` uint8 kernel and
  ``iterations=d``, crop, boundary = ``mask - eroded`` (uint8);
- intersection ``((gb * db) > 0).sum()``, union ``((gb + db) > 0).sum()``, IoU = their numpy
  quotient (NaN, with a numpy warning, when both boundaries are empty).
"""

from __future__ import annotations

import cv2
import numpy as np


def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary (uint8 0/1) of a uint8 0/1 ``(H, W)`` mask, as boundary-iou-api computes it."""
    h, w = mask.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=dilation)[1:h + 1, 1:w + 1]
    return mask - eroded


def boundary_iou(gt: np.ndarray, dt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two uint8 0/1 ``(H, W)`` masks (NaN when both boundaries are empty)."""
    gt_boundary = mask_to_boundary(gt, dilation_ratio)
    dt_boundary = mask_to_boundary(dt, dilation_ratio)
    intersection = ((gt_boundary * dt_boundary) > 0).sum()
    union = ((gt_boundary + dt_boundary) > 0).sum()
    return float(intersection / union)
