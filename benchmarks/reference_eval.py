"""The interactive-evaluation loop a user would otherwise write: the stock ``SamPredictor`` called once
per instance and round, RITM's literal clicker, boundary-iou-api's metric (benchmarks/reference_*.py).

The reference of ``bench_eval`` (CPU) and of ``gpu.py``'s ``interactive_eval`` stage.
"""

from __future__ import annotations

from typing import Any


def ritm_eval_loop(sam: Any, inst: Any, rounds: int, predictor: Any) -> list[float]:
    """The loop a user would otherwise write: stock SamPredictor, RITM's clicker, boundary-iou-api's metric."""
    import numpy as np

    from benchmarks.reference_boundary_iou import boundary_iou
    from benchmarks.reference_ritm import RitmClicker

    gt = inst.gt
    clicker = RitmClicker(gt)
    pred = np.zeros_like(gt)
    pts: list[list[int]] = []
    lbl: list[int] = []
    low = None
    ious: list[float] = []
    for r in range(rounds):
        if r and not (gt ^ pred).any():  # no error left: the last IoU stands (as sumseg's harness does)
            ious += [ious[-1]] * (rounds - r)
            break
        pos, y, x = clicker.next_click(pred)
        clicker.add_click(y, x)
        pts.append([x, y])
        lbl.append(int(pos))
        masks, scores, lows = predictor.predict(np.array(pts, np.float32), np.array(lbl), mask_input=low,
                                                multimask_output=r == 0, return_logits=True)
        k = 0
        if r == 0:
            k = int(np.argmax([np.count_nonzero(gt & (m > 0)) / max(1, np.count_nonzero(gt | (m > 0)))
                               for m in masks]))
        pred, low = masks[k] > sam.mask_threshold, lows[k : k + 1]
        ious.append(np.count_nonzero(gt & pred) / np.count_nonzero(gt | pred))
        with np.errstate(invalid="ignore", divide="ignore"):
            boundary_iou(gt.astype(np.uint8), pred.astype(np.uint8))
    return ious
