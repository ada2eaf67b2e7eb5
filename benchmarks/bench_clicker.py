"""Evaluation clicker on 1024² masks: windowed exact search vs the plain full-image transform.

Both give the RITM click on exact distances; ``identical`` requires every click to be equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np

from benchmarks.run import BenchRow
from sumseg.prompts.clicker import Click, next_click, next_click_plain

SIZE = 1024
Case = tuple[np.ndarray, np.ndarray]  # (pred, gt)
ClickFn = Callable[..., Click | None]


def _ellipse(rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    centre = (int(rng.integers(300, 724)), int(rng.integers(300, 724)))
    axes = (int(rng.integers(80, 300)), int(rng.integers(80, 300)))
    cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def _cases(rng: np.random.Generator, kind: str, n: int) -> list[Case]:
    cases = []
    for _ in range(n):
        gt = _ellipse(rng)
        if kind == "first":
            pred = np.zeros_like(gt)
        elif kind == "shifted":
            pred = np.roll(gt, tuple(int(v) for v in rng.integers(-40, 40, 2)), axis=(0, 1))
        else:  # scattered pixel errors on top of a slightly eroded prediction
            pred = cv2.erode(gt.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
            pred = pred ^ (rng.random(gt.shape) < 0.01)
        cases.append((pred, gt))
    return cases


def _clicks(fn: ClickFn, cases: list[Case], clicks: int) -> list[Click | None]:
    """``clicks`` rounds per case (the prediction stays fixed, earlier clicks are excluded)."""
    out: list[Click | None] = []
    for pred, gt in cases:
        clicked: list[tuple[int, int]] = []
        for _ in range(clicks):
            c = fn(pred, gt, None, clicked)
            out.append(c)
            if c is None:
                break
            clicked.append((c.y, c.x))
    return out


def _run(fn: ClickFn, cases: list[Case], clicks: int, repeats: int = 2) -> tuple[float, list[Click | None]]:
    """Best-of-``repeats`` seconds per click over all cases, and the clicks."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = _clicks(fn, cases, clicks)
        best = min(best, (time.perf_counter() - start) / len(out))
    return best, out


def bench() -> list[BenchRow]:
    rng = np.random.default_rng(0)
    rows = []
    for kind, n, clicks in (("first", 6, 1), ("shifted", 4, 5), ("scattered", 3, 3)):
        cases = _cases(rng, kind, n)
        ours_s, ours = _run(next_click, cases, clicks)
        ref_s, ref = _run(next_click_plain, cases, clicks)
        rows.append(BenchRow(
            f"clicker 1024² {kind} ({len(ours)} clicks)", ours_s, ref_s, ours == ref,
            "per click; reference = exact EDT of the full padded image",
        ))
    return rows
