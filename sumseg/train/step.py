"""The interactive training step: model + batch → dict of named losses (no optimiser, AMP or DDP here).

Per step (DESIGN §1 "Interactive training"), with one encoder pass per image:

- round 1: a jittered box (probability ``p_box``) or one point drawn from the mask (probability
  ∝ confidence); three outputs (multimask) with the task prompt; the mask loss counts the output of
  lowest loss, the IoU head is trained on all three;
- ``corrections`` rounds: one point drawn from the error region of the previous prediction, all
  earlier points (and the box) kept, the previous low-res logits fed back as the mask prompt, one
  output, no task prompt;
- a final round with no new prompt (``final_round``).

The loss of each round is :func:`sumseg.losses.sum_loss` averaged over masks; rounds are summed.
Predictions that choose the next point are thresholded at 0 after SAM's own upsampling of the
low-res logits to the S×S input frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sumseg.losses import mask_iou, sum_loss
from sumseg.models.sum_sam import ImageFeatures, PromptBatch, SumSam
from sumseg.prompts.sampler import UncertaintySampler
from sumseg.train.batch import MaskBatch

LOSS_NAMES = ("focal", "dice", "iou")


def _upscale(low: Tensor, size: int) -> Tensor:
    """(N, 1, 4h, 4w) low-res logits → (N, S, S) logits in the input frame (SAM's first upsampling)."""
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


class InteractiveStep(nn.Module):
    """Wraps the trained :class:`SumSam` so that one ``forward`` is one whole step (what DDP wraps).

    Args:
        model: the model being trained.
        corrections: correction rounds after round 1 (5 as published).
        final_round: add a last round with no new prompt.
        theta: dice gate of the uncertainty-aware loss (pixels with c > theta).
        use_task: give the task prompt in round 1 (off for the ``sum_no_task`` ablation).
    """

    def __init__(self, model: SumSam, corrections: int = 5, final_round: bool = True,
                 theta: float = 0.6, use_task: bool = True) -> None:
        super().__init__()
        self.model = model
        self.corrections = corrections
        self.final_round = final_round
        self.theta = theta
        self.use_task = use_task

    def features(self, batch: MaskBatch) -> ImageFeatures:
        if batch.embeddings is not None:
            return ImageFeatures(batch.embeddings)
        assert batch.images is not None
        return self.model.encode(batch.images)

    def _round_loss(self, low: Tensor, iou: Tensor, batch: MaskBatch) -> tuple[dict[str, Tensor], Tensor]:
        """Losses of one round over (N, M, 4h, 4w) outputs; returns per-name means and the kept output index.

        With M > 1 each mask's loss counts its output of lowest focal + dice; the IoU loss covers all M.
        """
        n, m = iou.shape
        rep = lambda t: t.repeat_interleave(m, dim=0)  # noqa: E731 - (N, ...) → (N·M, ...)
        losses = sum_loss(low.flatten(0, 1), iou.flatten(), rep(batch.target), rep(batch.confidence), self.theta)
        mask_loss = (losses["focal"] + losses["dice"]).view(n, m)
        best = mask_loss.argmin(1)
        rows = torch.arange(n, device=low.device)
        out = {
            "focal": losses["focal"].view(n, m)[rows, best].mean(),
            "dice": losses["dice"].view(n, m)[rows, best].mean(),
            "iou": losses["iou"].mean(),
        }
        return out, best

    def forward(self, batch: MaskBatch, sampler: UncertaintySampler) -> dict[str, Tensor]:
        """Run every round on ``batch``; returns ``loss`` (the sum) and its parts summed over rounds,
        plus ``train_iou``: the mean IoU (input frame, ignore pixels left out) of the last round."""
        model = self.model
        size = model.image_size
        features = self.features(batch)
        conf_full = F.interpolate(batch.confidence[:, None], size=(size, size), mode="nearest")[:, 0]
        conf_full = conf_full.clamp(0, 1)
        first = sampler.first(batch.gt, conf_full, batch.ignore)
        prompts = PromptBatch(batch.image_index, first.points, first.labels, first.boxes, first.has_box)
        task = batch.tasks if self.use_task else None
        totals = {k: torch.zeros((), device=batch.gt.device) for k in LOSS_NAMES}
        n_rounds = 1 + self.corrections + int(self.final_round)
        prev: Tensor | None = None  # the previous round's kept logits: none in round 1
        for r in range(n_rounds):
            first_round = prev is None
            low, iou = model(features, prompts, prev, task if first_round else None, multimask=first_round)
            parts, best = self._round_loss(low, iou, batch)
            for k in LOSS_NAMES:
                totals[k] = totals[k] + parts[k]
            prev = low[torch.arange(len(best), device=low.device), best][:, None].detach()  # (N, 1, 4h, 4w)
            if r < self.corrections:  # a correction round follows
                extra = sampler.correction(_upscale(prev, size) > 0, batch.gt, conf_full, batch.ignore)
                assert prompts.points is not None and prompts.labels is not None
                prompts.points = torch.cat([prompts.points, extra.points], 1)
                prompts.labels = torch.cat([prompts.labels, extra.labels], 1)
        assert prev is not None
        with torch.no_grad():
            train_iou = mask_iou(_upscale(prev, size), batch.gt.float(), ~batch.ignore).mean()
        return {"loss": sum(totals.values()), **totals, "train_iou": train_iou}  # type: ignore[dict-item]
