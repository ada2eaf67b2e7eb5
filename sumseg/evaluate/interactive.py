"""Interactive evaluation of one model on instances: the ``clicks`` and ``box`` protocols.

Per instance (one image, one ground-truth mask, an optional ignore map):

- ``clicks``: round 1 = the clicker's first click (the GT pixel farthest from the boundary);
  every next round adds the clicker's next click (RITM semantics, :mod:`sumseg.prompts.clicker`).
- ``box``: round 1 = the GT's tight box; every next round keeps the box and adds a click.

All clicks so far are given every round, with the previous round's low-res logits as the mask
prompt. Round 1 asks for three masks and keeps one by ``first_round`` ("oracle": the best IoU
with GT; "score": the best predicted IoU; "single": multimask off); later rounds ask for one.
The task prompt, when a task is given, goes with every round (``task_rounds="every"``: the
official code's behaviour, and what the stock model does after ``sumseg export``) or with round 1
only (``"first"``, an ablation). When the clicker finds no error
left, clicking stops and the last IoU counts for every remaining round.
Each image is encoded once (instances sharing an image share the embedding).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sumseg.metrics.masks import boundary_iou, iou
from sumseg.models.predictor import SumPredictor
from sumseg.models.task_prompts import TaskRounds
from sumseg.prompts.clicker import Clicker
from sumseg.prompts.geometry import Box, Click, click_points
from sumseg.prompts.geometry import mask_box as gt_box

Protocol = Literal["clicks", "box"]
FirstRound = Literal["oracle", "score", "single"]
PROTOCOLS: tuple[str, ...] = ("clicks", "box")


@dataclass
class Instance:
    """One object to segment. image (H, W, 3) uint8 RGB; gt, ignore (H, W) bool.

    ``image_key`` identifies the image's pixels (instances with equal keys share one encoder
    pass); ``task`` is the task prompt (None: no prompt); ``mask_task`` is the
    mask's own task label from its dataset, used to group results into per-task tables.
    """

    name: str
    image_key: str
    image: np.ndarray
    gt: np.ndarray
    ignore: np.ndarray | None = None
    task: int | None = None
    mask_task: int | None = None


@dataclass
class InstanceResult:
    """Per-round IoU and boundary IoU (NaN when both boundaries are empty), the clicks and the last mask."""

    name: str
    mask_task: int | None
    ious: list[float] = field(default_factory=list)
    bious: list[float] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    box: Box | None = None
    final_pred: np.ndarray | None = None


def _choose(masks: np.ndarray, scores: np.ndarray, inst: Instance, first_round: FirstRound) -> int:
    """Index of the kept output among (M, H, W) logits."""
    if first_round == "oracle":
        return int(np.argmax([iou(inst.gt, m > 0, inst.ignore) for m in masks]))
    return int(np.argmax(scores))


def run_instance(
    predictor: SumPredictor,
    inst: Instance,
    protocol: Protocol = "clicks",
    rounds: int = 20,
    first_round: FirstRound = "oracle",
    task_rounds: TaskRounds = "every",
) -> InstanceResult:
    """Run one instance for ``rounds`` rounds; ``predictor`` must hold ``inst.image`` already."""
    if not inst.gt.any():
        raise ValueError(f"{inst.name}: empty ground-truth mask, nothing to segment")
    clicker = Clicker(inst.gt, inst.ignore)
    res = InstanceResult(inst.name, inst.mask_task)
    res.box = gt_box(inst.gt) if protocol == "box" else None
    box = None if res.box is None else np.array(res.box)
    pred = np.zeros_like(inst.gt)
    low_res = None
    for r in range(rounds):
        click = clicker.next(pred) if (r > 0 or protocol == "clicks") else None
        if r > 0 and click is None:  # no error left: the last IoU stands for the remaining rounds
            res.ious += [res.ious[-1]] * (rounds - r)
            res.bious += [res.bious[-1]] * (rounds - r)
            break
        points, labels = click_points(clicker.clicks)
        multimask = r == 0 and first_round != "single"
        logits, scores, low = predictor.predict(
            point_coords=points, point_labels=labels, box=box, mask_input=low_res,
            multimask_output=multimask, return_logits=True,
            task=inst.task if r == 0 or task_rounds == "every" else None,
        )
        k = _choose(logits, scores, inst, first_round) if multimask else 0
        pred, low_res = logits[k] > predictor.model.mask_threshold, low[k : k + 1]
        res.ious.append(iou(inst.gt, pred, inst.ignore))
        res.bious.append(boundary_iou(inst.gt, pred, ignore=inst.ignore))
    res.clicks = list(clicker.clicks)
    res.final_pred = pred
    return res


def evaluate_instances(
    predictor: SumPredictor,
    instances: Iterable[Instance],
    protocols: Sequence[Protocol] = ("clicks",),
    rounds: int = 20,
    first_round: FirstRound = "oracle",
    task_rounds: TaskRounds = "every",
) -> Iterator[tuple[Instance, dict[Protocol, InstanceResult]]]:
    """Run every protocol on each instance, lazily, yielding the instance with its results.

    The image encoder runs once per image: consecutive instances with the same ``image_key``
    share the embedding, and so do all protocols and rounds.
    """
    current = None
    for inst in instances:
        if inst.image_key != current:
            predictor.set_image(inst.image)
            current = inst.image_key
        yield inst, {p: run_instance(predictor, inst, p, rounds, first_round, task_rounds) for p in protocols}
