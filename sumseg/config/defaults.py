"""The method's default numbers, each written once (tier 0: every room may import them).

The config sections take their defaults from here, and so do the library functions that have a
default for the same number (the loss, the prompt sampler, the refiner step), so a default is
changed in one place.
"""

from __future__ import annotations

FOCAL_WEIGHT = 20.0
"""Weight of the focal term: L = 20 · mean(c · focal) + dice + IoU MSE (SAM's)."""

THETA = 0.6
"""Dice gate θ of the SUM loss: pixels with confidence c > θ count (the paper's; the official code 0.5)."""

P_BOX = 0.5
"""Round 1 of a training mask is a jittered box with this probability, else a point."""

JITTER_RATIO = 0.1
"""Box jitter: each coordinate moves by N(0, (ratio · side)²) ..."""

MAX_JITTER = 20.0
"""... clamped to ± this many pixels (input frame)."""

REFINER_MIN_IOU = 0.7
"""The refiner's gate: a mask is a training input when the frozen model's best-of-3 IoU reaches this."""
