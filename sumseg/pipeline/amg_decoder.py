"""The mask decoder on a point grid, scored before the mask logits are made so failing candidates cost less.

Each batch of grid points goes through the model's :meth:`~sumseg.models.interface.PromptableModel.grid_scores`:
three multimask outputs per point, their predicted IoUs first and the low-res logits only for the points
that keep at least one output (predicted IoU above the threshold: the stock generator's rule). SAM 1
(:mod:`sumseg.models.sam_grid`) splits its decoder at the IoU head, so the upscaling and the
hypernetworks run for those points only; the outputs equal ``SumSam.decode(..., multimask=True)``'s to
float rounding (tested: |Δ| ~ 1e-6).

SAM 2 (:meth:`SumSam2.grid_scores <sumseg.models.sum_sam2.SumSam2.grid_scores>`: ``SumSam2.predict`` on each
batch of grid points, three outputs each) also gives an object score: a grid point whose object-score logit
is ≤ 0 yields no candidate. That is
``SAM2Base``'s rule (its heads replace such a point's masks by ``NO_OBJ_SCORE`` = −1024, which the
generator's stability filter then drops as 0/0); Meta's image-mode ``SAM2AutomaticMaskGenerator`` (via
``SAM2ImagePredictor._predict``) and transformers' mask-generation pipeline do not consult the score. Its
IoUs are reported as −inf, so quantile calibration leaves them out (``amg.score_quantile``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sumseg.models.interface import PromptableModel
from sumseg.models.sum_sam import ImageFeatures


@dataclass
class Candidates:
    """Multimask outputs of a grid that passed the predicted-IoU threshold, in (point, output) order.

    prompt: (K,) long index of the grid point; iou: (K,) float32 predicted IoU;
    logits: (K, L, L) float32 low-res logits over the padded S×S input.
    """

    prompt: torch.Tensor
    iou: torch.Tensor
    logits: torch.Tensor


def _kept(iou: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """The stock generator's predicted-IoU rule: IoU > ``iou_thresh``, everything when it is ≤ 0."""
    return iou > iou_thresh if iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)


def _empty(all_iou: torch.Tensor, lowres: int) -> Candidates:
    return Candidates(torch.zeros(0, dtype=torch.long, device=all_iou.device), all_iou.new_zeros(0),
                      all_iou.new_zeros((0, lowres, lowres)))


@torch.inference_mode()
def decode_grid(
    model: PromptableModel, embeddings: torch.Tensor | ImageFeatures, coords: torch.Tensor,
    iou_thresh: float | None, batch: int = 64
) -> tuple[torch.Tensor, Candidates]:
    """Predicted IoUs of every grid candidate and the candidates that pass ``iou_thresh``.

    embeddings: (1, C, h, w) of one image, or its :class:`ImageFeatures` (SAM 2's, with the high-res
    levels); coords: (N, 2) xy points in the S×S input frame (float64, as ``SamAutomaticMaskGenerator``
    passes them). The rule is the stock generator's: keep IoU > ``iou_thresh``, no filter when it is
    ≤ 0; ``None`` computes the IoUs only. A point the model finds no object at (SAM 2's object score
    ≤ 0: :attr:`GridScores.present <sumseg.models.sum_sam.GridScores>`) keeps nothing.
    Returns ((N, 3) float32 IoUs, the kept :class:`Candidates`).
    """
    features = embeddings if isinstance(embeddings, ImageFeatures) else ImageFeatures(embeddings)
    ious, prompts, kept_iou, logits = [], [], [], []
    for start in range(0, coords.shape[0], batch):
        scores = model.grid_scores(features, coords[start : start + batch])
        ious.append(scores.iou)
        if iou_thresh is None:
            continue
        keep = _kept(scores.iou, iou_thresh)
        if scores.present is not None:
            keep = keep & scores.present
        rows = keep.any(1).nonzero().squeeze(1)
        if rows.numel():
            masks = scores.logits(rows)
            sel = keep[rows]
            prompts.append((rows + start)[:, None].expand_as(sel)[sel])
            kept_iou.append(scores.iou[rows][sel])
            logits.append(masks[sel])
    all_iou = torch.cat(ious)
    if not logits:
        return all_iou, _empty(all_iou, model.image_size // 4)
    return all_iou, Candidates(torch.cat(prompts), torch.cat(kept_iou), torch.cat(logits))
