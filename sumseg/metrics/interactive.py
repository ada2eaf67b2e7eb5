"""Interactive-segmentation summaries: NoC and per-round aggregates of per-instance curves.

- :func:`noc`: number of clicks to reach an IoU threshold, ``max_clicks`` if never (RITM's
  ``compute_noc_metric``).
- :func:`summarize`: per-round mIoU / boundary IoU, NoC@85/90 and failures from per-instance curves.

The per-mask metrics themselves (IoU, boundary IoU) are in :mod:`sumseg.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


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
    failures: dict[float, int | None]  # None when the curves are shorter than max_clicks
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
    error left) repeats the last value. NoC and failures use the first ``max_clicks`` rounds; they
    are defined only for curves of at least ``max_clicks`` rounds (NaN for shorter runs, whose
    misses would otherwise count as ``max_clicks`` clicks never tried: report those as mIoU@k).
    """
    ious = _curves(iou_curves)
    n, rounds = ious.shape
    if np.isnan(ious).any():
        raise ValueError("IoU curves contain NaN; iou() never returns NaN")
    defined = n > 0 and rounds >= max_clicks
    nocs = {t: [noc(c, t, max_clicks) for c in ious] for t in thresholds}
    summary = InteractiveSummary(
        n=n,
        miou=[float(v) for v in ious.mean(axis=0)] if n else [math.nan] * rounds,
        noc={t: float(np.mean(v)) if defined else math.nan for t, v in nocs.items()},
        failures={t: int(sum(not (c[:max_clicks] >= t).any() for c in ious)) if defined else None
                  for t in thresholds},
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
