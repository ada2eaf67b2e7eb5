"""The one prompt type: its constructors, selection, correction append and the clicks → prompts conversion."""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from sumseg.prompts.batch import PromptBatch, click_prompts, in_prompt_order
from sumseg.prompts.geometry import Click


def test_constructors_take_and_with_points() -> None:
    idx = torch.tensor([0, 1, 1])
    pts = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]]])
    refiner = PromptBatch.point_and_box(idx, pts, torch.ones(3, 4))
    assert refiner.labels is not None and refiner.labels.tolist() == [[1], [1], [1]] and bool(refiner.has_box.all())
    first = PromptBatch.points_only(idx, pts, torch.tensor([[1], [-1], [0]]))
    assert not bool(first.has_box.any()) and torch.equal(first.boxes, torch.zeros(3, 4)) and len(first) == 3
    both = first.with_points(first)
    assert both.points is not None and both.points.shape == (3, 2, 2) and first.points.shape == (3, 1, 2)  # new batch
    part = both.take(torch.tensor([2, 0]))
    assert part.image_index.tolist() == [1, 0] and part.labels is not None and part.labels.tolist() == [[0, 0], [1, 1]]


def test_click_prompts_are_sam_predictors_arrays_in_the_input_frame() -> None:
    clicks = [[Click(10, 20, True), Click(30, 5, False)], [Click(0, 0, True), Click(99, 149, True)]]
    p = click_prompts(clicks, [(1, 2, 30, 40), (0, 0, 149, 99)], (100, 150), 256, "cpu")
    t = ResizeLongestSide(256)
    want = t.apply_coords(np.array([[[20, 10], [5, 30]], [[0, 0], [149, 99]]], dtype=np.float32), (100, 150))
    assert p.points is not None and p.labels is not None
    assert torch.equal(p.points, torch.as_tensor(want, dtype=torch.float)) and p.labels.tolist() == [[1, 0], [1, 1]]
    box = t.apply_boxes(np.array([(1, 2, 30, 40), (0, 0, 149, 99)], dtype=np.float64), (100, 150))
    assert torch.equal(p.boxes, torch.as_tensor(box, dtype=torch.float)) and bool(p.has_box.all())
    assert p.image_index.tolist() == [0, 0]
    box_only = click_prompts([[], []], [(1, 2, 3, 4), (5, 6, 7, 8)], (100, 150), 256, "cpu")
    assert box_only.points is None and bool(box_only.has_box.all())
    clicks_only = click_prompts(clicks, None, (100, 150), 256, "cpu")
    assert not bool(clicks_only.has_box.any()) and torch.equal(clicks_only.boxes, torch.zeros(2, 4))


def test_box_groups_split_as_a_prompt_encoder_embeds_them() -> None:
    # 4 prompts; 0 and 2 have a box; prompt 3 is left out; column 1 is used by prompt 1 only
    points = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0], [0.0, 0.0]],
                           [[9.0, 9.0], [9.0, 9.0]]])
    labels = torch.tensor([[1, -1], [1, 0], [1, -1], [1, 1]])
    boxes = torch.arange(16, dtype=torch.float).reshape(4, 4)
    has_box = torch.tensor([True, False, True, False])
    prompts = PromptBatch(torch.zeros(4, dtype=torch.long), points, labels, boxes, has_box)
    masks = torch.arange(4, dtype=torch.float).reshape(4, 1, 1, 1)
    task = torch.tensor([1, 2, 3, 0])
    groups = list(prompts.box_groups(torch.tensor([True, True, True, False]), masks, task))
    assert [g.sel.tolist() for g in groups] == [[0, 2], [1]]
    with_box, without = groups
    assert with_box.points is not None and with_box.points[0].shape == (2, 1, 2)  # the unused column dropped
    assert with_box.boxes is not None and torch.equal(with_box.boxes, boxes[[0, 2]])
    assert without.boxes is None and without.points is not None and without.points[1].tolist() == [[1, 0]]
    assert with_box.mask_inputs is not None and with_box.mask_inputs.flatten().tolist() == [0.0, 2.0]
    assert isinstance(with_box.task, torch.Tensor) and with_box.task.tolist() == [1, 3]
    assert list(prompts.box_groups(torch.ones(4, dtype=torch.bool), None, 5))[0].task == 5  # one id for all
    # outputs decoded per group come back in the prompts' order
    out = in_prompt_order([(g.sel, g.sel.float() * 10, -g.sel.float()) for g in groups])
    assert [t.tolist() for t in out] == [[0.0, 10.0, 20.0], [0.0, -1.0, -2.0]]
