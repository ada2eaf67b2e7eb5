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
Each image is encoded once, and its instances are decoded together: one decoder call per round
(and task prompt) for all of them (:func:`run_image`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from sumseg.metrics.masks import boundary_iou, iou
from sumseg.models.predictor import SumPredictor
from sumseg.models.task_prompts import TaskRounds
from sumseg.prompts.batch import click_prompts
from sumseg.prompts.clicker import Clicker
from sumseg.prompts.geometry import Box, Click
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


@dataclass
class _Session:
    """One instance's state between rounds: its clicker, result, last mask and low-res logits (1, L, L)."""

    inst: Instance
    clicker: Clicker
    res: InstanceResult
    pred: np.ndarray
    low_res: np.ndarray | None = None
    done: bool = False


def _start(inst: Instance, protocol: Protocol) -> _Session:
    if not inst.gt.any():
        raise ValueError(f"{inst.name}: empty ground-truth mask, nothing to segment")
    res = InstanceResult(inst.name, inst.mask_task)
    res.box = gt_box(inst.gt) if protocol == "box" else None
    return _Session(inst, Clicker(inst.gt, inst.ignore), res, np.zeros_like(inst.gt))


def _decode(predictor: SumPredictor, group: list[_Session], multimask: bool, task: int | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One decoder call for the sessions of ``group`` (same image, same number of clicks, same task):
    every click so far, the GT box (box protocol), the previous low-res logits. Returns logits at the
    image's size (N, M, H, W), predicted IoUs (N, M) and low-res logits (N, M, L, L), as numpy."""
    device, masks = predictor.device, None
    boxes = [s.res.box for s in group if s.res.box is not None] if group[0].res.box is not None else None
    prompts = click_prompts([s.clicker.clicks for s in group], boxes, predictor.original_size,
                            predictor.sum_model.frame, device)
    if group[0].low_res is not None:
        masks = torch.as_tensor(np.stack([s.low_res for s in group if s.low_res is not None]), dtype=torch.float,
                                device=device)
    logits, scores, low = predictor.predict_prompts(prompts, masks, multimask, task)
    return logits.cpu().numpy(), scores.cpu().numpy(), low.cpu().numpy()


def _round(predictor: SumPredictor, sessions: list[_Session], r: int, rounds: int, first_round: FirstRound,
           task_rounds: TaskRounds) -> None:
    """Round ``r`` of every session still clicking: the clicker's next click, one decoder call per task."""
    active = []
    for s in sessions:
        click = s.clicker.next(s.pred) if (r > 0 or s.res.box is None) else None
        if r > 0 and click is None:  # no error left: the last IoU stands for the remaining rounds
            s.res.ious += [s.res.ious[-1]] * (rounds - r)
            s.res.bious += [s.res.bious[-1]] * (rounds - r)
            s.done = True
        else:
            active.append(s)
    multimask = r == 0 and first_round != "single"
    tasks = [s.inst.task if r == 0 or task_rounds == "every" else None for s in active]
    for task in dict.fromkeys(tasks):
        group = [s for s, t in zip(active, tasks, strict=True) if t == task]
        logits, scores, low = _decode(predictor, group, multimask, task)
        for s, lg, sc, lo in zip(group, logits, scores, low, strict=True):
            k = _choose(lg, sc, s.inst, first_round) if multimask else 0
            s.pred, s.low_res = lg[k] > predictor.sum_model.mask_threshold, lo[k : k + 1]
            s.res.ious.append(iou(s.inst.gt, s.pred, s.inst.ignore))
            s.res.bious.append(boundary_iou(s.inst.gt, s.pred, ignore=s.inst.ignore))


def run_image(
    predictor: SumPredictor,
    instances: Sequence[Instance],
    protocol: Protocol = "clicks",
    rounds: int = 20,
    first_round: FirstRound = "oracle",
    task_rounds: TaskRounds = "every",
) -> list[InstanceResult]:
    """Run the instances of ONE image for ``rounds`` rounds in lockstep; ``predictor`` must hold their
    image already. Each round decodes every instance still clicking in one call per task prompt (the
    instances are independent: a batch of prompts, as SAM's decoder takes them)."""
    sessions = [_start(inst, protocol) for inst in instances]
    for r in range(rounds):
        sessions_left = [s for s in sessions if not s.done]
        if not sessions_left:
            break
        _round(predictor, sessions_left, r, rounds, first_round, task_rounds)
    for s in sessions:
        s.res.clicks, s.res.final_pred = list(s.clicker.clicks), s.pred
    return [s.res for s in sessions]


def run_instance(
    predictor: SumPredictor,
    inst: Instance,
    protocol: Protocol = "clicks",
    rounds: int = 20,
    first_round: FirstRound = "oracle",
    task_rounds: TaskRounds = "every",
) -> InstanceResult:
    """Run one instance for ``rounds`` rounds; ``predictor`` must hold ``inst.image`` already."""
    return run_image(predictor, [inst], protocol, rounds, first_round, task_rounds)[0]


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
    for _, group in itertools.groupby(instances, key=lambda inst: inst.image_key):
        batch = list(group)
        predictor.set_image(batch[0].image)
        results = {p: run_image(predictor, batch, p, rounds, first_round, task_rounds) for p in protocols}
        for i, inst in enumerate(batch):
            yield inst, {p: results[p][i] for p in protocols}
