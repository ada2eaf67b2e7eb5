"""Training-time prompt sampler: uncertainty-weighted points, jittered boxes (torch, batched, any device).

Conventions (SAM's, in the pixel frame of the masks given; :mod:`sumseg.prompts.geometry` fixes them):

- masks (``gt``, ``pred``, ``ignore``) are ``(B, H, W)`` bool tensors indexed ``[b, y, x]``;
  ``confidence`` is ``(B, H, W)`` float in ``[0, 1]`` (``c = 1 - U``), or ``None`` for human labels;
- each round is a :class:`~sumseg.prompts.batch.PromptBatch` (the one prompt type) of the B masks:
  points ``(B, 1, 2)`` float32 ``(x, y)`` pixel indices (SAM's prompt encoder adds the 0.5 itself);
  labels ``(B, 1)`` int64: 1 positive, 0 negative, -1 no point (SAM's padding label, embedded as
  "not a point"); boxes ``(B, 4)`` float32 ``(x0, y0, x1, y1)``, inclusive pixel indices, used where
  ``has_box``; image_index ``(B,)`` as given (default: mask b on image b).

Distribution. A point drawn from a region takes pixel ``i`` with probability ``c_i / Σ_region c``
(uniform over the region without ``confidence``; uniform too when the region's total confidence is
0); ``c_i = 0`` pixels are never drawn otherwise. An empty region gives no point (label -1).

- Round 1 (:meth:`UncertaintySampler.first`): with probability ``p_box`` a box, else one positive
  point drawn from the GT mask (ignore pixels removed).
- Correction rounds (:meth:`UncertaintySampler.correction`): one point drawn from the error region
  ``FN ∪ FP`` of the previous prediction (ignore pixels removed), positive if it falls on a false
  negative (``gt & ~pred``) and negative on a false positive (``~gt & pred``). So FN vs FP is chosen
  with probability proportional to the confidence mass of each.
- Box jitter (SAM's training recipe): from the tight box, each coordinate moves by noise
  ``N(0, (jitter_ratio · side)²)`` clamped to ``±max_jitter`` px (side = ``x1 - x0`` for x, ``y1 - y0``
  for y), then is clamped to the image; swapped coordinates are re-ordered so ``x0 ≤ x1, y0 ≤ y1``.
  Every coordinate therefore stays within ``max_jitter`` of the tight box and inside the image.

All randomness comes from the ``torch.Generator`` given (on the masks' device), in a fixed order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sumseg.config.defaults import JITTER_RATIO, MAX_JITTER, P_BOX
from sumseg.prompts.batch import PromptBatch
from sumseg.prompts.geometry import error_regions, flat_to_xy, tight_boxes

__all__ = ["UncertaintySampler", "draw_pixels", "jitter_boxes", "tight_boxes"]


def _check_masks(ref: Tensor, *masks: Tensor | None) -> None:
    for m in (ref, *masks):
        if m is None:
            continue
        if m.dim() != 3 or m.dtype != torch.bool or m.shape != ref.shape:
            raise ValueError(f"masks must be (B, H, W) bool of one shape, got {tuple(m.shape)} {m.dtype}")


def _check_confidence(confidence: Tensor | None, shape: torch.Size) -> None:
    if confidence is None:
        return
    if confidence.shape != shape or not confidence.is_floating_point():
        raise ValueError(f"confidence must be float {tuple(shape)}, got {tuple(confidence.shape)} "
                         f"{confidence.dtype}")
    if not bool(((confidence >= 0) & (confidence <= 1)).all()):
        raise ValueError("confidence values must lie in [0, 1] (NaN is not allowed)")


def draw_pixels(
    region: Tensor, confidence: Tensor | None, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Draw one pixel per mask from ``region`` ``(B, H, W)`` bool, probability ∝ ``confidence``.

    Returns ``(flat, valid)``: ``flat`` ``(B,)`` int64 index ``y * W + x`` of the drawn pixel and
    ``valid`` ``(B,)`` bool, False where the region is empty (``flat`` is then 0). A region whose
    confidence sums to 0 is drawn uniformly. Draws with an inverse CDF in float64, so a pixel of
    weight 0 is never drawn (its CDF step is empty).
    """
    flat_region = region.flatten(1)
    uniform = flat_region.double()
    weights = uniform if confidence is None else confidence.flatten(1).double() * uniform
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, uniform)
    cdf = weights.cumsum(1)
    total = cdf[:, -1]
    u = torch.rand(total.shape, generator=generator, device=total.device, dtype=torch.float64) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total when total > 0
    flat = torch.searchsorted(cdf, u[:, None], right=True).squeeze(1)  # first pixel with cdf > u
    valid = total > 0
    return torch.where(valid, flat, torch.zeros_like(flat)), valid


def jitter_boxes(boxes: Tensor, height: int, width: int, generator: torch.Generator,
                 jitter_ratio: float = JITTER_RATIO, max_jitter: float = MAX_JITTER) -> Tensor:
    """Jitter ``(B, 4)`` ``(x0, y0, x1, y1)`` boxes as described in the module docstring."""
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).repeat(1, 2)
    noise = torch.randn(boxes.shape, generator=generator, device=boxes.device, dtype=boxes.dtype)
    moved = boxes + (noise * jitter_ratio * side).clamp(-max_jitter, max_jitter)
    xs = moved[:, 0::2].clamp(0, width - 1).sort(dim=1).values
    ys = moved[:, 1::2].clamp(0, height - 1).sort(dim=1).values
    return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)


def _point_prompts(xy: Tensor, labels: Tensor, image_index: Tensor | None) -> PromptBatch:
    if image_index is None:
        image_index = torch.arange(xy.shape[0], device=xy.device)
    return PromptBatch.points_only(image_index, xy, labels[:, None])


class UncertaintySampler:
    """Round-1 and correction prompts for training, weighted by a confidence map when given.

    Args:
        generator: the only source of randomness (on the device of the masks).
        p_box: probability that round 1 is a jittered box instead of a point.
        jitter_ratio, max_jitter: box jitter (std as a fraction of the side, clamp in pixels).
    """

    def __init__(self, generator: torch.Generator, p_box: float = P_BOX, jitter_ratio: float = JITTER_RATIO,
                 max_jitter: float = MAX_JITTER) -> None:
        if not 0.0 <= p_box <= 1.0:
            raise ValueError(f"p_box must be in [0, 1], got {p_box}")
        self.generator = generator
        self.p_box = p_box
        self.jitter_ratio = jitter_ratio
        self.max_jitter = max_jitter

    def first(self, gt: Tensor, confidence: Tensor | None = None, ignore: Tensor | None = None,
              image_index: Tensor | None = None) -> PromptBatch:
        """Round 1 for GT masks ``(B, H, W)`` bool: a jittered box (``has_box``) or a positive point.

        An empty GT mask gets neither (label -1, ``has_box`` False). ``image_index`` (B,): each mask's image.
        """
        _check_masks(gt, ignore)
        _check_confidence(confidence, gt.shape)
        b, h, w = gt.shape
        use_box = torch.rand(b, generator=self.generator, device=gt.device) < self.p_box
        region = gt if ignore is None else gt & ~ignore
        flat, valid = draw_pixels(region, confidence, self.generator)
        tight, non_empty = tight_boxes(gt)
        boxes = jitter_boxes(tight, h, w, self.generator, self.jitter_ratio, self.max_jitter)
        is_point = valid & ~use_box
        prompts = _point_prompts(flat_to_xy(flat, w) * is_point[:, None, None], torch.where(is_point, 1, -1),
                                image_index)
        prompts.has_box = use_box & non_empty
        prompts.boxes = boxes * prompts.has_box[:, None]
        return prompts

    def correction(self, pred: Tensor, gt: Tensor, confidence: Tensor | None = None,
                   ignore: Tensor | None = None, image_index: Tensor | None = None) -> PromptBatch:
        """One correction point per mask from the errors of ``pred`` against ``gt`` (``(B, H, W)`` bool).

        Label 1 on a false negative, 0 on a false positive, -1 (no point) when there is no error.
        """
        _check_masks(gt, pred, ignore)
        _check_confidence(confidence, gt.shape)
        fn, fp = error_regions(pred, gt, ignore)
        flat, valid = draw_pixels(fn | fp, confidence, self.generator)
        positive = fn.flatten(1).gather(1, flat[:, None]).squeeze(1)
        labels = torch.where(valid, positive.long(), -1)
        return _point_prompts(flat_to_xy(flat, gt.shape[2]) * valid[:, None, None], labels, image_index)
