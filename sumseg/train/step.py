"""The interactive training step: model + batch → dict of named losses (no optimiser, AMP or DDP here).

Per step (DESIGN §1 "Interactive training"), with one encoder pass per image:

- round 1: a jittered box (probability ``p_box``) or one point drawn from the mask (probability
  ∝ confidence); three outputs (multimask); the mask loss counts the output of lowest loss, the
  IoU head is trained on all three;
- ``corrections`` rounds: one point drawn from the error region of the previous prediction, all
  earlier points (and the box) kept, the previous low-res logits fed back as the mask prompt, one
  output;
- a final round with no new prompt (``final_round``).

The task prompt goes with every round (``task_rounds="every"``, as the official code adds it on
every prompt-encoder call) or with round 1 only (``"first"``, an ablation). The loss of each round
is the :class:`sumseg.losses.RoundLoss` the step is handed; each term is summed over the rounds,
then the terms are added (:func:`sumseg.losses.total`). It is taken in the S×S input frame
(``resolution="input"``: low-res logits and the confidence map upsampled bilinearly, the target the
input-frame mask, as the official code and SAM 2's trainer do) or in the decoder's low-res frame
(``"lowres"``: area-fraction targets, faster; the form the shipped tiny foundation was trained with).
Predictions that choose the next point are thresholded at 0 after SAM's own upsampling of the
low-res logits to the S×S input frame.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sumseg.losses import LOSS_NAMES, RoundLoss, mask_iou, total
from sumseg.models.backbones import Backbone
from sumseg.models.sum_sam import ImageFeatures
from sumseg.models.task_prompts import TaskRounds
from sumseg.prompts.sampler import UncertaintySampler
from sumseg.train.batch import MaskBatch

LossResolution = Literal["input", "lowres"]


def input_frame_logits(low: Tensor, size: int) -> Tensor:
    """(N, M, 4h, 4w) low-res logits → (N, M, S, S) logits in the input frame (SAM's first upsampling)."""
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


class InteractiveStep(nn.Module):
    """Wraps the trained :class:`SumSam` so that one ``forward`` is one whole step (what DDP wraps).

    Args:
        model: the model being trained.
        corrections: correction rounds after round 1 (5 as published).
        final_round: add a last round with no new prompt.
        loss: the loss of one round (focal weight, dice gate θ, IoU head on pseudo-labels or not).
        use_task: give the task prompt (off for the ``sum_no_task`` ablation and pretraining).
        task_rounds: "every" round (published) or the "first" only.
        resolution: where the loss is taken, "input" (S×S) or "lowres" (S/4 × S/4).
    """

    def __init__(self, model: Backbone, corrections: int = 5, final_round: bool = True,
                 loss: RoundLoss | None = None, use_task: bool = True, task_rounds: TaskRounds = "every",
                 resolution: LossResolution = "input") -> None:
        super().__init__()
        self.model = model
        self.corrections = corrections
        self.final_round = final_round
        self.loss = loss or RoundLoss()
        self.use_task = use_task
        self.task_rounds = task_rounds
        self.resolution = resolution

    def features(self, batch: MaskBatch) -> ImageFeatures:
        if batch.embeddings is not None:
            return self.model.cached_features(batch.embeddings)
        assert batch.images is not None
        return self.model.encode(batch.images)

    def _frame(self, batch: MaskBatch) -> tuple[Tensor, Tensor, Tensor]:
        """(target, confidence of the loss, confidence of the sampler) in the loss's frame / the input frame."""
        size = self.model.image_size
        if self.resolution == "input":
            conf = batch.confidence_input()
            return batch.gt.float(), conf, conf
        conf = batch.confidence_lowres()
        sampling = F.interpolate(conf[:, None], size=(size, size), mode="nearest")[:, 0].clamp(0, 1)
        return batch.target, conf, sampling

    def forward(self, batch: MaskBatch, sampler: UncertaintySampler) -> dict[str, Tensor]:
        """Run every round on ``batch``; returns ``loss`` (the sum) and its parts summed over rounds,
        plus ``train_iou``: the mean IoU (input frame, ignore pixels left out) of the last round."""
        model = self.model
        size = model.image_size
        features = self.features(batch)
        target, conf, conf_sampling = self._frame(batch)
        prompts = sampler.first(batch.gt, conf_sampling, batch.ignore, batch.image_index)
        task = batch.tasks if self.use_task else None
        totals = {k: torch.zeros((), device=batch.gt.device) for k in LOSS_NAMES}
        n_rounds = 1 + self.corrections + int(self.final_round)
        prev: Tensor | None = None  # the previous round's kept logits: none in round 1
        for r in range(n_rounds):
            first_round = prev is None
            round_task = task if first_round or self.task_rounds == "every" else None
            low, iou = model(features, prompts, prev, round_task, multimask=first_round)
            logits = input_frame_logits(low, size) if self.resolution == "input" else low
            parts, best = self.loss(logits, iou, target, conf, batch.pseudo)
            for k in LOSS_NAMES:
                totals[k] = totals[k] + parts[k]
            prev = low[torch.arange(len(best), device=low.device), best][:, None].detach()  # (N, 1, 4h, 4w)
            if r < self.corrections:  # a correction round follows
                extra = sampler.correction(input_frame_logits(prev, size)[:, 0] > 0, batch.gt, conf_sampling,
                                           batch.ignore, batch.image_index)
                prompts = prompts.with_points(extra)
        assert prev is not None
        with torch.no_grad():
            train_iou = mask_iou(input_frame_logits(prev, size)[:, 0], batch.gt.float(), ~batch.ignore).mean()
        return {"loss": total(totals), **totals, "train_iou": train_iou}
