"""Evaluation clicker on 1024² masks: sumseg's ``next_click`` vs RITM's clicker (its own code restated,
:mod:`benchmarks.reference_ritm`), on several error shapes.

Both are timed click by click, interleaved on the same inputs (so machine load hits both alike); the
prediction stays fixed and each round excludes the clicks made so far (RITM's ``not_clicked_map``).
``identical``: every click equals RITM's, or RITM's pixel has exactly the same squared distance as
ours (a float32 tie of its OpenCV transform; ``docs/clicks-and-metrics.md``).
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from benchmarks.reference_ritm import RitmClicker
from benchmarks.run import BenchRow
from sumseg.prompts.clicker import Click, exact_sq_edt, next_click
from sumseg.prompts.geometry import error_regions

SIZE = 1024
Case = tuple[np.ndarray, np.ndarray]  # (pred, gt)


def _ellipse(rng: np.random.Generator, lo: int = 80, hi: int = 300) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    centre = (int(rng.integers(300, 724)), int(rng.integers(300, 724)))
    axes = (int(rng.integers(lo, hi)), int(rng.integers(lo, hi)))
    cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def _wires(rng: np.random.Generator) -> np.ndarray:
    """Thin structures: a few random polylines 1-3 px thick across the image."""
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for _ in range(4):
        pts = rng.integers(0, SIZE, (6, 2)).astype(np.int32)
        cv2.polylines(m, [pts], False, 1, int(rng.integers(1, 4)))
    return m.astype(bool)


def _case(rng: np.random.Generator, kind: str) -> Case:
    if kind == "thin structures":  # halo of 1 px on the left half, right half missed
        gt = _wires(rng)
        pred = cv2.dilate(gt.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool).copy()
        pred[:, SIZE // 2:] = False
        return pred, gt
    gt = _ellipse(rng, 350, 480) if kind == "boundary band" else _ellipse(rng)
    if kind == "first click":
        pred = np.zeros_like(gt)
    elif kind == "shifted prediction":
        pred = np.roll(gt, tuple(int(v) for v in rng.integers(-40, 40, 2)), axis=(0, 1))
    elif kind == "boundary band":  # a large object, its prediction 4 px too small all round
        pred = cv2.erode(gt.view(np.uint8), np.ones((9, 9), np.uint8)).view(bool)
    else:  # scattered pixel errors on top of a slightly eroded prediction
        pred = cv2.erode(gt.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
        pred = pred ^ (rng.random(gt.shape) < 0.01)
    return pred, gt


def _same_or_tie(ours: Click, ritm: tuple[bool, int, int], pred: np.ndarray, gt: np.ndarray,
                 clicked: list[tuple[int, int]]) -> str:
    """"equal", "tie" (RITM's pixel has our exact squared distance) or "differ"."""
    if (ours.is_positive, ours.y, ours.x) == ritm:
        return "equal"
    maps = [exact_sq_edt(np.pad(r, 1))[1:-1, 1:-1] for r in error_regions(pred, gt)]  # FN, FP
    for m in maps:
        for y, x in clicked:
            m[y, x] = 0
    is_pos, y, x = ritm
    same = maps[0 if ours.is_positive else 1][ours.y, ours.x] == maps[0 if is_pos else 1][y, x]
    return "tie" if same else "differ"


def _run(cases: list[Case], clicks: int, check: bool) -> tuple[float, float, list[str]]:
    """Total seconds of ours and of RITM over every click, and (if ``check``) each click's verdict."""
    ours_s = ritm_s = 0.0
    verdicts: list[str] = []
    for pred, gt in cases:
        ritm = RitmClicker(gt)
        clicked: list[tuple[int, int]] = []
        for _ in range(clicks):
            t0 = time.perf_counter()
            ours = next_click(pred, gt, None, clicked)
            t1 = time.perf_counter()
            theirs = ritm.next_click(pred)
            ours_s, ritm_s = ours_s + t1 - t0, ritm_s + time.perf_counter() - t1
            assert ours is not None, "benchmark cases always have an error left"
            if check:
                verdicts.append(_same_or_tie(ours, theirs, pred, gt, clicked))
            clicked.append((ours.y, ours.x))
            ritm.add_click(ours.y, ours.x)
    return ours_s, ritm_s, verdicts


SHAPES = (("first click", 6, 1), ("shifted prediction", 4, 5), ("scattered pixel errors", 3, 3),
          ("thin structures", 4, 5), ("boundary band", 3, 5))


def bench() -> list[BenchRow]:
    rng = np.random.default_rng(0)
    rows = []
    for kind, n, clicks in SHAPES:
        cases = [_case(rng, kind) for _ in range(n)]
        ours_s, ritm_s, verdicts = _run(cases, clicks, check=True)
        again = _run(cases, clicks, check=False)  # best of two passes for each
        ours_s, ritm_s = min(ours_s, again[0]), min(ritm_s, again[1])
        k = len(verdicts)
        ties = verdicts.count("tie")
        rows.append(BenchRow(
            f"clicker 1024², {kind} ({k} clicks)", ours_s / k, ritm_s / k, "differ" not in verdicts,
            f"per click; reference = RITM's clicker; {k - ties} equal clicks, {ties} float32 ties",
        ))
    return rows
