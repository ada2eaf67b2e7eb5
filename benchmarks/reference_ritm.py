"""RITM's evaluation clicker, restated to time sumseg's clicker against. Not used by sumseg itself.

Source: ``Clicker._get_next_click`` (``padding=True``) and ``Clicker.add_click`` in
``isegm/inference/clicker.py`` of SamsungLabs/ritm_interactive_segmentation (MIT licence), read at
commit b9b44603672e15aa0be878b54fd26e7e1c5d2311. This module is a line-by-line restatement of that
computation, not a copy of its text: the same numpy/OpenCV calls with the same arguments, in the same
order, on arrays of the same dtypes, so it costs what RITM's clicker costs:

- FN / FP masks by ``np.logical_and`` of gt, not-pred and the not-ignore mask (and the reverse);
- ``np.pad`` by one pixel of zeros, ``.astype(np.uint8)``, ``cv2.distanceTransform(·, cv2.DIST_L2, 0)``
  (maskSize 0 is ``DIST_MASK_PRECISE``: OpenCV's float32 exact transform), crop ``[1:-1, 1:-1]``;
- multiply each float32 map by the boolean ``not_clicked_map`` (False at every earlier click);
- ``is_positive = fn_max > fp_max``; the click is the first pixel of ``np.where(map == max)``.

RITM keeps ``not_clicked_map`` in the clicker object (``add_click`` sets the clicked pixel to False);
:class:`RitmClicker` does the same.
"""

from __future__ import annotations

import cv2
import numpy as np


def _padded_dt(region: np.ndarray) -> np.ndarray:
    """RITM's per-region transform: pad 1, uint8, OpenCV precise L2 (float32), crop the padding."""
    padded = np.pad(region, ((1, 1), (1, 1)), "constant")
    return cv2.distanceTransform(padded.astype(np.uint8), cv2.DIST_L2, 0)[1:-1, 1:-1]


class RitmClicker:
    """RITM's clicker state for one instance: ground truth, not-ignore mask, not-clicked map.

    ``gt`` and ``ignore`` are ``(H, W)`` bool (RITM derives both from one label map with -1 = ignore).
    """

    def __init__(self, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        self.gt_mask = gt
        self.not_ignore_mask = np.ones_like(gt) if ignore is None else np.logical_not(ignore)
        self.not_clicked_map = np.ones_like(gt, dtype=bool)

    def next_click(self, pred_mask: np.ndarray) -> tuple[bool, int, int]:
        """``(is_positive, y, x)`` of RITM's next click for ``pred_mask`` ``(H, W)`` bool."""
        fn = np.logical_and(np.logical_and(self.gt_mask, np.logical_not(pred_mask)), self.not_ignore_mask)
        fp = np.logical_and(np.logical_and(np.logical_not(self.gt_mask), pred_mask), self.not_ignore_mask)
        fn_dt = _padded_dt(fn) * self.not_clicked_map
        fp_dt = _padded_dt(fp) * self.not_clicked_map
        fn_max, fp_max = np.max(fn_dt), np.max(fp_dt)
        is_positive = fn_max > fp_max
        ys, xs = np.where(fn_dt == fn_max) if is_positive else np.where(fp_dt == fp_max)
        return bool(is_positive), int(ys[0]), int(xs[0])

    def add_click(self, y: int, x: int) -> None:
        """Record a click: RITM's ``add_click`` marks its pixel in ``not_clicked_map``."""
        self.not_clicked_map[y, x] = False
