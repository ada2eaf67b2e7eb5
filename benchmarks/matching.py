"""One-to-one matching of two mask sets (RLEs), shared by the pseudo-label benchmarks (CPU and GPU)."""

from __future__ import annotations

import numpy as np


def match_rate(ours: list[dict], ref: list[dict], iou: float = 0.99) -> tuple[int, int]:
    """(masks matched one to one at mask IoU ≥ ``iou``, max(len(ours), len(ref))), greedy by IoU."""
    from pycocotools import mask as mask_utils

    if not ours or not ref:
        return 0, max(len(ours), len(ref))
    m = mask_utils.iou(ours, ref, [0] * len(ref))
    pairs = sorted(((m[i, j], i, j) for i, j in zip(*np.nonzero(m >= iou), strict=True)), reverse=True)
    used_a, used_b = set(), set()
    for _, i, j in pairs:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return len(used_a), max(len(ours), len(ref))
