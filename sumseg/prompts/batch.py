"""The one prompt type: :class:`PromptBatch`, the prompts of N masks spread over B images.

Every prompt that reaches a model is one: the training sampler's rounds
(:class:`~sumseg.prompts.sampler.UncertaintySampler` returns them), the refiner's prompt
(:meth:`PromptBatch.point_and_box`, built in training and in ``sumseg uncertainty`` alike), the
evaluation harness's clicks and box (:func:`click_prompts`, the one conversion of
:class:`~sumseg.prompts.geometry.Click` values) and what
:class:`~sumseg.models.interface.PromptableModel` decodes.

Frames and conventions (SAM's, :mod:`sumseg.prompts.geometry`):

- everything is in the model's S×S **input frame** (:mod:`sumseg.prompts.frames`: for SAM 1 the image
  resized by ``ResizeLongestSide``, not padded; for SAM 2 the image squashed to S×S); the sampler and
  the refiner work in it directly, :func:`click_prompts` maps image-pixel clicks and boxes into it
  with the model's frame;
- image_index ``(N,)`` long: the image (of the features decoded with) of each prompt;
- points ``(N, P, 2)`` float32 ``(x, y)`` pixel indices (SAM's prompt encoder adds the 0.5 itself),
  or None; labels ``(N, P)`` integer, 1 positive, 0 negative, -1 no point (SAM's padding label);
- boxes ``(N, 4)`` float32 ``(x0, y0, x1, y1)`` inclusive pixel indices, meaningful only where
  has_box ``(N,)`` bool (zeros elsewhere).

A mask prompt (the previous low-res logits) and the task go beside it to the model: they are the
model's inputs, not geometry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from sumseg.prompts.frames import InputFrame, LongestSideFrame
from sumseg.prompts.geometry import Box, Click, click_points

__all__ = ["PromptBatch", "click_prompts"]


@dataclass
class PromptBatch:
    """Prompts of N masks spread over B images (frames and shapes in the module docstring)."""

    image_index: Tensor
    points: Tensor | None
    labels: Tensor | None
    boxes: Tensor
    has_box: Tensor

    @classmethod
    def points_only(cls, image_index: Tensor, points: Tensor, labels: Tensor) -> PromptBatch:
        """Point prompts ``(N, P, 2)`` / ``(N, P)`` without a box (boxes zeros, has_box False)."""
        n = points.shape[0]
        return cls(image_index, points, labels, torch.zeros(n, 4, device=points.device),
                   torch.zeros(n, dtype=torch.bool, device=points.device))

    @classmethod
    def point_and_box(cls, image_index: Tensor, points: Tensor, boxes: Tensor) -> PromptBatch:
        """The refiner's prompt: one positive point ``(N, 1, 2)`` and a box ``(N, 4)`` per mask (its
        mask prompt goes beside it), as ``SamPredictor.predict(point, label 1, box, mask_input)``."""
        labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
        return cls(image_index, points, labels, boxes, torch.ones(len(points), dtype=torch.bool,
                                                                  device=points.device))

    def __len__(self) -> int:
        return len(self.image_index)

    def take(self, index: Tensor) -> PromptBatch:
        """The prompts ``index`` ((K,) long)."""
        return PromptBatch(self.image_index[index], None if self.points is None else self.points[index],
                           None if self.labels is None else self.labels[index], self.boxes[index],
                           self.has_box[index])

    def with_points(self, more: PromptBatch) -> PromptBatch:
        """These prompts with ``more``'s point columns appended (a correction round; box kept)."""
        assert self.points is not None and self.labels is not None
        assert more.points is not None and more.labels is not None
        return replace(self, points=torch.cat([self.points, more.points], 1),
                       labels=torch.cat([self.labels, more.labels], 1))

    def points_of(self, sel: Tensor, drop_unused: bool) -> tuple[Tensor, Tensor] | None:
        """Points of the prompts ``sel``; with ``drop_unused``, without the columns none of them uses
        (None when no column is left). Without a box a prompt keeps its columns: SAM needs a token."""
        if self.points is None or self.labels is None:
            return None
        points, labels = self.points[sel], self.labels[sel]
        if not drop_unused:
            return points, labels
        used = (labels != -1).any(0)
        return (points[:, used], labels[:, used]) if bool(used.any()) else None

    def box_groups(self, among: Tensor, mask_inputs: Tensor | None, task: int | Tensor | None
                   ) -> Iterator[PromptGroup]:
        """The prompts ``among`` ((N,) bool) split as a SAM prompt encoder embeds them — every prompt of a
        call with a box or none — first those with a box, then those without (an empty group is left
        out). Each group carries its prompts' points (:meth:`points_of`; a with-box group drops the
        columns none of its prompts uses), boxes, mask inputs ((N, 1, L, L) or None) and task (one id,
        (N,) ids, or None)."""
        for with_box in (True, False):
            sel = (among & (self.has_box == with_box)).nonzero().squeeze(1)
            if sel.numel():
                yield PromptGroup(sel, self.points_of(sel, drop_unused=with_box),
                                  self.boxes[sel] if with_box else None,
                                  None if mask_inputs is None else mask_inputs[sel],
                                  task[sel] if isinstance(task, torch.Tensor) and task.dim() else task)


@dataclass
class PromptGroup:
    """Prompts ``sel`` ((K,) long indices into a :class:`PromptBatch`) that one prompt-encoder call embeds:
    points ((K, P, 2), (K, P)) or None, boxes (K, 4) or None, mask_inputs (K, 1, L, L) or None, task."""

    sel: Tensor
    points: tuple[Tensor, Tensor] | None
    boxes: Tensor | None
    mask_inputs: Tensor | None
    task: int | Tensor | None


def in_prompt_order(pieces: Sequence[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """Outputs decoded group by group — ``(sel, out_1, ..., out_k)`` per group — concatenated and put back
    in the prompts' order: ``(out_1, ..., out_k)``, each (N, ...)."""
    order = torch.cat([p[0] for p in pieces]).argsort()
    return tuple(torch.cat([p[k] for p in pieces])[order] for k in range(1, len(pieces[0])))


def click_prompts(clicks: Sequence[Sequence[Click]], boxes: Sequence[Box] | None,
                  original_size: tuple[int, ...], frame: int | InputFrame, device: torch.device | str) -> PromptBatch:
    """The prompts of N masks of ONE image from their clicks (image pixels, the same number for each)
    and their boxes (image pixels, or None), mapped into the model's S×S input frame (``frame``: the
    model's :attr:`~sumseg.models.interface.PromptableModel.frame`; an int S means SAM 1's
    ``ResizeLongestSide(S)``, as ``SamPredictor`` maps them): the one conversion of evaluation clicks
    into model prompts."""
    n = len(clicks)
    transform = LongestSideFrame(frame) if isinstance(frame, int) else frame
    points = labels = None
    if n and clicks[0]:
        pts, lbl = zip(*(click_points(c) for c in clicks), strict=True)
        coords = transform.apply_coords(np.stack(pts), original_size)
        points = torch.as_tensor(coords, dtype=torch.float, device=device)
        labels = torch.as_tensor(np.stack(lbl), dtype=torch.int, device=device)
    box_t = torch.zeros(n, 4, device=device)
    if boxes is not None:
        box = transform.apply_boxes(np.array(boxes, dtype=np.float64), original_size)
        box_t = torch.as_tensor(box, dtype=torch.float, device=device)
    has_box = torch.full((n,), boxes is not None, dtype=torch.bool, device=device)
    return PromptBatch(torch.zeros(n, dtype=torch.long, device=device), points, labels, box_t, has_box)
