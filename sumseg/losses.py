"""SAM's training loss and SUM's uncertainty-aware form: pure tensor functions.

Shapes: ``logits`` and ``target`` are ``(N, H, W)`` (mask logits and a {0, 1} float target, any
resolution as long as they match); ``confidence`` is ``(N, H, W)`` in ``[0, 1]`` (``c = 1 - U``;
0 on ignored pixels; all ones for human labels); ``iou_pred`` is ``(N,)``. Every term function
returns a per-mask ``(N,)`` loss; :class:`RoundLoss` is the one aggregator every training step is
handed: it names the terms (:data:`LOSS_NAMES`), weights them, gates the dice term at θ, picks the
best of M outputs, reduces over the masks (mean, or a per-mask weighted mean) and adds them up.

Uncertainty-aware loss (DESIGN §1), per mask::

    L = 20 · mean_over_all_pixels(c · focal(logits, y; α=0.25, γ=2))
        + dice(logits, y) over the pixels with c > θ
        + (iou_pred − IoU(logits > 0, y))²

With ``c ≡ 1`` this is exactly SAM's loss (20 · focal + dice + IoU MSE). The IoU target is
measured over the pixels with ``c > 0`` (ignored pixels left out) and is not differentiated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sumseg.config.defaults import FOCAL_WEIGHT, THETA
from sumseg.metrics.batched import iou_torch


def focal_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None,
               alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al.), ``(N,)``: mean over *all* pixels of ``weight · focal``.

    ``focal = α_t · (1 − p_t)^γ · BCE`` with ``p_t = p`` on foreground and ``1 − p`` on background,
    ``α_t = α`` on foreground and ``1 − α`` on background. ``weight`` (the confidence) scales each
    pixel; the mean divides by the pixel count, not by the weight sum (the paper's form).
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    loss = alpha_t * (1 - p_t) ** gamma * ce
    if weight is not None:
        loss = loss * weight
    return loss.flatten(1).mean(1)


def dice_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None, smooth: float = 1.0) -> Tensor:
    """Soft dice loss ``1 − (2 Σ p·y + s) / (Σ p + Σ y + s)`` per mask ``(N,)`` over ``valid`` pixels."""
    prob = logits.sigmoid()
    if valid is not None:
        prob = prob * valid
        target = target * valid
    inter = (prob * target).flatten(1).sum(1)
    total = prob.flatten(1).sum(1) + target.flatten(1).sum(1)
    return 1 - (2 * inter + smooth) / (total + smooth)


def mask_iou(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """IoU ``(N,)`` of ``logits > 0`` with ``target > 0.5`` over ``valid`` pixels (1.0 if both empty)."""
    ignore = None if valid is None else ~valid
    return iou_torch(target > 0.5, logits > 0, ignore).to(logits.dtype)


def iou_loss(iou_pred: Tensor, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """MSE ``(N,)`` between the IoU head's prediction and the true IoU of the mask it scored."""
    return (iou_pred - mask_iou(logits.detach(), target, valid)) ** 2


LOSS_NAMES = ("focal", "dice", "iou")
"""The terms of the loss, in the order they are logged and added up."""


def total(terms: Mapping[str, Tensor]) -> Tensor:
    """The loss: the terms :data:`LOSS_NAMES` of ``terms`` (scalars or same-shape tensors) added in order."""
    out = terms[LOSS_NAMES[0]]
    for name in LOSS_NAMES[1:]:
        out = out + terms[name]
    return out


def weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """``Σ w·v / max(Σ w, 1)`` of ``values`` and ``weight`` ((K,) each): the mean over the masks of weight 1
    when the weights are 0 or 1 (0 when none is)."""
    return (values * weight).sum() / weight.sum().clamp(min=1)


@dataclass(frozen=True)
class RoundLoss:
    """The loss of one interactive round over M outputs per mask: the one aggregator of every training step
    (the SUM step, pretraining and the refiner).

    focal_weight: the focal term's weight (20, SAM's); theta: the dice gate θ (pixels with c > θ); iou_on_pseudo:
    train the IoU head on pseudo-labels too (SAM trains it on every mask; the official SUM variant on human
    labels only).
    """

    focal_weight: float = FOCAL_WEIGHT
    theta: float = THETA
    iou_on_pseudo: bool = True

    def per_mask(self, logits: Tensor, iou_pred: Tensor, target: Tensor,
                 confidence: Tensor | None = None) -> dict[str, Tensor]:
        """The uncertainty-aware loss of one output per mask: ``{"focal", "dice", "iou"}`` each ``(N,)``.

        logits, target: (N, H, W); iou_pred: (N,); confidence: (N, H, W), None meaning ``c ≡ 1`` (human
        labels). ``focal`` already carries its weight.
        """
        if confidence is None:
            return {
                "focal": self.focal_weight * focal_loss(logits, target),
                "dice": dice_loss(logits, target),
                "iou": iou_loss(iou_pred, logits, target),
            }
        confident = (confidence > self.theta).to(logits.dtype)
        return {
            "focal": self.focal_weight * focal_loss(logits, target, confidence),
            "dice": dice_loss(logits, target, confident),
            "iou": iou_loss(iou_pred, logits, target, confidence > 0),
        }

    def __call__(self, logits: Tensor, iou_pred: Tensor, target: Tensor, confidence: Tensor,
                 pseudo: Tensor | None = None, weight: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """The round's losses ``{"focal", "dice", "iou", "loss"}`` (scalars; ``loss`` = their :func:`total`)
        and the kept output ``best`` (N,) long.

        logits: (N, M, H, W); iou_pred: (N, M); target, confidence: (N, H, W) in the frame of ``logits``;
        pseudo: (N,) bool, the masks that are pseudo-labels (None: none are); weight: (N,) float per-mask
        weights (None: every mask 1), each term then the :func:`weighted_mean` over the masks.
        With M > 1 each mask's focal and dice count its output of lowest focal + dice (best of M);
        the IoU loss covers all M outputs of the masks it trains on (mean over them; 0 if none).
        """
        n, m = iou_pred.shape
        rep = lambda t: t.repeat_interleave(m, dim=0)  # noqa: E731 - (N, ...) → (N·M, ...)
        losses = self.per_mask(logits.flatten(0, 1), iou_pred.flatten(), rep(target), rep(confidence))
        best = (losses["focal"] + losses["dice"]).view(n, m).argmin(1)
        rows = torch.arange(n, device=logits.device)
        reduce = lambda v, w: v.mean() if w is None else weighted_mean(v, w)  # noqa: E731
        out = {k: reduce(losses[k].view(n, m)[rows, best], weight) for k in ("focal", "dice")}
        iou_weight = None if weight is None else rep(weight)
        if pseudo is not None and not self.iou_on_pseudo and bool(pseudo.any()):
            trained = rep(~pseudo).to(losses["iou"].dtype)
            iou_weight = trained if iou_weight is None else iou_weight * trained
        out["iou"] = reduce(losses["iou"], iou_weight)
        out["loss"] = total(out)
        return out, best
