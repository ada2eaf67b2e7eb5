"""One refiner training step (DESIGN §1, docs/refiner.md): a point in each GT mask, the frozen
foundation's best-of-3 candidate, the IoU gate, the jittered box, the refiner's output and its loss
(the :class:`~sumseg.losses.RoundLoss` the step is handed, over the kept masks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sumseg.config.defaults import JITTER_RATIO, MAX_JITTER, REFINER_MIN_IOU
from sumseg.losses import LOSS_NAMES, RoundLoss, mask_iou, weighted_mean
from sumseg.models.backbones import Backbone
from sumseg.models.sum_sam import ImageFeatures
from sumseg.prompts.batch import PromptBatch
from sumseg.prompts.geometry import flat_to_xy, tight_boxes
from sumseg.prompts.sampler import draw_pixels, jitter_boxes
from sumseg.train.batch import MaskBatch


def draw_points(gt: Tensor, ignore: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One point per mask, uniform in ``gt & ~ignore`` ((N, S, S) bool): ((N, 1, 2) xy, (N,) valid)."""
    flat, valid = draw_pixels(gt & ~ignore, None, generator)
    return flat_to_xy(flat, gt.shape[2]), valid


@dataclass
class Gated:
    """The candidate of each mask and the gate's verdict (N masks).

    logits: (N, 1, L, L) low-res logits of the output of best IoU; boxes: (N, 4) float32 inclusive
    xyxy tight box of that output in the input frame (zeros when empty); iou: (N,) its IoU with the
    GT; kept: (N,) bool, iou ≥ min_iou and the output is not empty.
    """

    logits: Tensor
    boxes: Tensor
    iou: Tensor
    kept: Tensor


def gate(low: Tensor, gt: Tensor, ignore: Tensor, min_iou: float) -> Gated:
    """Best-of-M selection and the IoU gate for (N, M, L, L) low-res logits and (N, S, S) GT masks."""
    n, m = low.shape[:2]
    size = gt.shape[-1]
    best_iou = torch.full((n,), -1.0, device=low.device)
    best = torch.zeros(n, dtype=torch.long, device=low.device)
    for k in range(m):  # one output at a time: (N, S, S) at full input size is the big tensor
        up = F.interpolate(low[:, k : k + 1], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        iou = mask_iou(up, gt.float(), ~ignore)
        better = iou > best_iou
        best_iou, best = torch.where(better, iou, best_iou), torch.where(better, k, best)
    logits = low[torch.arange(n, device=low.device), best][:, None]
    up = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    boxes, non_empty = tight_boxes(up > 0)
    return Gated(logits, boxes, best_iou, (best_iou >= min_iou) & non_empty)


@dataclass
class RefinerInputs:
    """The refiner's training inputs for N masks (all of them; train on ``kept``): its prompt and what
    the gate found, which only training needs.

    prompts: the refiner's prompt (:meth:`PromptBatch.point_and_box`: the drawn point, the jittered
    box of the frozen candidate, input frame); mask_input: (N, 1, L, L) frozen logits (the mask
    prompt); input_iou: (N,) IoU of the frozen candidate with the GT; kept: (N,) bool.
    """

    prompts: PromptBatch
    mask_input: Tensor
    input_iou: Tensor
    kept: Tensor

    def take(self, index: Tensor) -> RefinerInputs:
        """The inputs of the masks ``index`` ((K,) long)."""
        return RefinerInputs(self.prompts.take(index), self.mask_input[index], self.input_iou[index],
                             self.kept[index])


@torch.no_grad()
def refiner_inputs(frozen: Backbone, features: ImageFeatures, batch: MaskBatch, generator: torch.Generator,
                   min_iou: float = REFINER_MIN_IOU, jitter_ratio: float = JITTER_RATIO,
                   max_jitter: float = MAX_JITTER) -> RefinerInputs:
    """Points, frozen best-of-3 candidates, the gate and jittered boxes for ``batch`` (module docstring).

    Randomness, in this order, from ``generator`` only: the points, then the box jitter.
    """
    size = frozen.image_size
    points, valid = draw_points(batch.gt, batch.ignore, generator)
    labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
    low, _ = frozen(features, PromptBatch.points_only(batch.image_index, points, labels), None, None, multimask=True)
    cand = gate(low, batch.gt, batch.ignore, min_iou)
    boxes = jitter_boxes(cand.boxes, size, size, generator, jitter_ratio, max_jitter)
    prompts = PromptBatch.point_and_box(batch.image_index, points, boxes)
    return RefinerInputs(prompts, cand.logits, cand.iou, cand.kept & valid)


class RefinerStep(nn.Module):
    """One refiner training step: batch → ``{"loss", "focal", "dice", "iou", "train_iou", "input_iou",
    "kept"}`` (what the loop minimises and logs; what DDP wraps).

    The refiner runs on the kept masks only; a step in which nothing passes the gate runs it on one
    mask with weight 0, so its loss is 0 (zero gradient, the same graph on every rank), not a NaN.
    ``train_iou`` / ``input_iou``: mean IoU of the refined / frozen mask over the kept masks;
    ``kept``: the fraction of masks that passed the gate. ``loss``: the loss of the refiner's one output
    against the GT with the human-label confidence (1 on the image, 0 on padding and ignore pixels), each
    term averaged over the kept masks (``sumseg.train.refiner_run.REFINER_LOSS`` in ``sumseg refiner train``).
    """

    def __init__(self, refiner: Backbone, frozen: Backbone, loss: RoundLoss,
                 min_iou: float = REFINER_MIN_IOU, jitter_ratio: float = JITTER_RATIO,
                 max_jitter: float = MAX_JITTER) -> None:
        super().__init__()
        self.refiner = refiner
        self.frozen = frozen
        self.loss = loss
        self.min_iou = min_iou
        self.jitter_ratio = jitter_ratio
        self.max_jitter = max_jitter

    def features(self, batch: MaskBatch) -> ImageFeatures:
        """Cached features when the batch has them (``cached_features``: SAM 2's rows hold the high-res levels
        too), else one no-grad pass of the frozen encoder."""
        if batch.embeddings is not None:
            return self.refiner.cached_features(batch.embeddings)
        assert batch.images is not None
        with torch.no_grad():
            return self.refiner.encode(batch.images)

    def forward(self, batch: MaskBatch, generator: torch.Generator) -> dict[str, Tensor]:
        """The step on ``batch`` (N masks); ``generator`` draws the points, then the box jitter."""
        features = self.features(batch)
        inp = refiner_inputs(self.frozen, features, batch, generator, self.min_iou, self.jitter_ratio,
                             self.max_jitter)
        sel = inp.kept.nonzero().squeeze(1)
        if sel.numel() == 0:  # one masked-out mask keeps the graph (and DDP's reduction) whole
            sel = torch.zeros(1, dtype=torch.long, device=inp.kept.device)
        used = inp.take(sel)
        weight = used.kept.float()
        low, iou = self.refine(features, used)
        out, _ = self.loss(low, iou, batch.target[sel], batch.confidence_lowres()[sel], weight=weight)
        with torch.no_grad():
            size = self.refiner.image_size
            up = F.interpolate(low.detach(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
            train_iou = weighted_mean(mask_iou(up, batch.gt[sel].float(), ~batch.ignore[sel]), weight)
        return {"loss": out["loss"], **{k: out[k] for k in LOSS_NAMES}, "train_iou": train_iou,
                "input_iou": weighted_mean(used.input_iou, weight), "kept": inp.kept.float().mean()}

    def refine(self, features: ImageFeatures, inp: RefinerInputs) -> tuple[Tensor, Tensor]:
        """The refiner's (K, 1, L, L) logits and (K, 1) IoUs for K masks: ``inp``'s prompt (positive point
        and box) and mask prompt, one output, no task prompt — the call ``sumseg uncertainty`` makes."""
        return self.refiner(features, inp.prompts, inp.mask_input, None, multimask=False)
