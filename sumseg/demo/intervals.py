"""Paired bootstrap confidence intervals for the demo's claims, over test instances and seeds.

Data: per model (``foundation`` or a method) and test set, the per-instance IoU curves of each of
its runs, ``(S, N, R)`` for S seeds (1 for the foundation), N instances (the same instances, in the
same order, for every model: the evaluation reads the same test set) and R rounds.

A *statistic* is a linear combination of per-model scores, e.g. ``SUM − vanilla`` or
``(SUM − foundation) − ½ (vanilla − foundation)``, where a model's score on a group of test sets
is the mean over those sets of its mIoU@k (each set counts once, as the paper averages over
datasets). One bootstrap replicate draws, for every test set, N instances with replacement — the
same draw for every model (paired) — and, for every model independently, S seeds with
replacement; the statistic is computed on that draw. The interval is the 2.5–97.5 % percentile
range of ``replicates`` draws (default 2,000) from a generator seeded by ``seed``.

A claim ``statistic > bound`` *holds* when the whole interval lies above the bound, *fails* when it
lies wholly below, and is *unresolved* otherwise (more instances or seeds needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Curves = Mapping[str, Mapping[str, np.ndarray]]
"""model → test set → (S, N, R) IoU curves."""


@dataclass(frozen=True)
class Interval:
    """Point estimate and 95 % percentile interval of a statistic (fractions, not %)."""

    estimate: float
    low: float
    high: float

    def verdict(self, bound: float = 0.0) -> str:
        """``holds`` (interval above ``bound``), ``fails`` (below) or ``unresolved`` (it straddles the bound)."""
        if self.low > bound:
            return "holds"
        if self.high < bound:
            return "fails"
        return "unresolved"

    def margin(self, bound: float = 0.0) -> float:
        """How far the interval clears ``bound`` (low − bound when it holds, bound − high when it fails), else 0."""
        return max(self.low - bound, bound - self.high, 0.0)


def score_draws(curves: Curves, model: str, sets: Sequence[str], k: int, draws: Mapping[str, np.ndarray],
                rng: np.random.Generator, replicates: int) -> np.ndarray:
    """(replicates,) bootstrap draws of ``model``'s mean over ``sets`` of mIoU@k (instances drawn by ``draws``)."""
    out = np.zeros(replicates)
    for name in sets:
        x = curves[model][name][:, :, k - 1]  # (S, N)
        per_seed = x[:, draws[name]].mean(axis=2)  # (S, B): each seed's mean over the drawn instances
        seeds = rng.integers(0, len(x), size=(replicates, len(x)))  # (B, S) seeds drawn with replacement
        out += per_seed[seeds, np.arange(replicates)[:, None]].mean(axis=1)
    return out / len(sets)


def point_score(curves: Curves, model: str, sets: Sequence[str], k: int) -> float:
    """``model``'s mean over ``sets`` of mIoU@k (mean over seeds and instances)."""
    return float(np.mean([curves[model][s][:, :, k - 1].mean() for s in sets]))


def bootstrap(curves: Curves, terms: Mapping[str, float], sets: Sequence[str], k: int,
              replicates: int = 2000, seed: int = 0) -> Interval:
    """Interval of ``Σ weight · score(model)`` over ``sets`` at ``k`` clicks; ``terms`` = model → weight."""
    rng = np.random.default_rng(seed)
    n = {s: next(iter(curves.values()))[s].shape[1] for s in sets}
    for model in terms:
        for s in sets:
            if curves[model][s].shape[1] != n[s]:
                raise ValueError(f"{model} was evaluated on {curves[model][s].shape[1]} instances of {s}, not {n[s]}")
    draws = {s: rng.integers(0, n[s], size=(replicates, n[s])) for s in sets}
    stat = sum(w * score_draws(curves, m, sets, k, draws, rng, replicates) for m, w in terms.items())
    est = sum(w * point_score(curves, m, sets, k) for m, w in terms.items())
    low, high = np.percentile(stat, [2.5, 97.5])
    return Interval(float(est), float(low), float(high))
