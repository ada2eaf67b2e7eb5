"""Task prompts: zero-initialised, bit-for-bit stock SAM at zero, applied only when asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from sumseg import SumPredictor, build_model
from sumseg.errors import ConfigError
from sumseg.models.task_prompts import TaskPrompts
from tests.conftest import randomise_task_prompts

PROMPTS = {
    "points": dict(point_coords=np.array([[120, 90], [30, 40]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([20, 30, 200, 150])),
    "box+point": dict(
        point_coords=np.array([[100, 100]]), point_labels=np.array([1]), box=np.array([20, 30, 200, 150])
    ),
}


def _stock_and_sum(name: str, image: np.ndarray):
    model = build_model(name)
    stock = SamPredictor(model.sam) if not model.is_hq else None
    ours = SumPredictor(model)
    ours.set_image(image)
    if stock is not None:
        stock.set_image(image)
    return model, stock, ours


def test_task_embeddings_are_zero_named_parameters(tiny_model) -> None:
    names = [n for n, _ in tiny_model.named_parameters() if "task" in n]
    assert names == ["task_prompts.task_embeddings"]
    emb = dict(tiny_model.named_parameters())[names[0]]
    assert emb.shape == (4, 256) and emb.requires_grad and not emb.any()


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_zero_task_prompt_is_stock_sam_bit_for_bit(rgb_image, prompt: str, multimask: bool) -> None:
    _, stock, ours = _stock_and_sum("tiny", rgb_image)
    kw = PROMPTS[prompt]
    ref = stock.predict(**kw, multimask_output=multimask, return_logits=True)
    for task in (None, 0, 1, 3):
        got = ours.predict(**kw, multimask_output=multimask, return_logits=True, task=task)
        for a, b in zip(got, ref, strict=True):
            assert np.array_equal(a, b)
    # a mask prompt (the previous round's low-res logits) goes through mask_downscaling
    ref2 = stock.predict(**kw, mask_input=ref[2][:1], multimask_output=multimask, return_logits=True)
    got2 = ours.predict(**kw, mask_input=ref[2][:1], multimask_output=multimask, return_logits=True, task=2)
    for a, b in zip(got2, ref2, strict=True):
        assert np.array_equal(a, b)


def test_task_prompt_changes_output_only_when_given(rgb_image) -> None:
    model, stock, ours = _stock_and_sum("tiny", rgb_image)
    randomise_task_prompts(model)
    kw = PROMPTS["points"]
    ref = stock.predict(**kw, return_logits=True)
    assert np.array_equal(ours.predict(**kw, return_logits=True)[0], ref[0])  # later rounds: task=None
    t1 = ours.predict(**kw, return_logits=True, task=1)[0]
    t2 = ours.predict(**kw, return_logits=True, task=2)[0]
    assert np.abs(t1 - ref[0]).max() > 1e-3 and np.abs(t1 - t2).max() > 1e-3
    # the constructor's task is the default; a call's task overrides it
    bound = SumPredictor(model, task=1)
    bound.set_image(rgb_image)
    assert np.array_equal(bound.predict(**kw, return_logits=True)[0], t1)
    assert np.array_equal(bound.predict(**kw, return_logits=True, task=2)[0], t2)


def test_hq_zero_task_prompt_matches_hq_predictor(rgb_image) -> None:
    hq = pytest.importorskip("segment_anything_hq")
    model = build_model("hq_tiny")
    ours = SumPredictor(model)
    ours.set_image(rgb_image)
    stock = hq.SamPredictor(model.sam)
    stock.set_image(rgb_image)
    kw = PROMPTS["box+point"]
    ref = stock.predict(**kw, multimask_output=False, return_logits=True, hq_token_only=False)
    got = ours.predict(**kw, multimask_output=False, return_logits=True, task=1)
    for a, b in zip(got, ref, strict=True):
        assert np.array_equal(a, b)


def test_per_mask_task_ids_and_gradients(tiny_model) -> None:
    model = build_model("tiny").train()
    feats = model.encode(model.preprocess(torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 255))
    coords = torch.tensor([[[40.0, 50.0]], [[100.0, 120.0]], [[200.0, 30.0]]])
    labels = torch.ones(3, 1)
    logits, iou = model.decode(feats, (coords, labels), task=torch.tensor([1, 1, 3]))
    assert logits.shape == (3, 1, 64, 64) and iou.shape == (3, 1)
    (logits.sum() + iou.sum()).backward()
    grad = model.task_prompts.task_embeddings.grad
    assert grad is not None
    used = grad.abs().sum(1) > 0
    assert used.tolist() == [False, True, False, True]  # rows of tasks 1 and 3 only


def test_unknown_task_id_is_a_clear_error(tiny_model, rgb_image) -> None:
    ours = SumPredictor(tiny_model)
    ours.set_image(rgb_image)
    with pytest.raises(ConfigError, match=r"unknown task id\(s\) \[7\].*knows tasks \[0, 1, 2, 3\]"):
        ours.predict(**PROMPTS["points"], task=7)
    with pytest.raises(ConfigError, match="distinct"):
        TaskPrompts([1, 1], 8)


def test_extensible_task_set() -> None:
    model = build_model("tiny", tasks=(0, 5, 9))
    assert model.task_prompts.task_ids == (0, 5, 9)
    assert model.task_prompts.rows(torch.tensor([9, 0, 5]), 3).tolist() == [2, 0, 1]


def test_call_task_none_switches_off_the_predictor_default(rgb_image) -> None:
    model = randomise_task_prompts(build_model("tiny"))
    bound, plain = SumPredictor(model, task=1), SumPredictor(model)
    bound.set_image(rgb_image)
    plain.set_image(rgb_image)
    kw = PROMPTS["points"]
    stock = plain.predict(**kw, return_logits=True)[0]
    assert np.array_equal(bound.predict(**kw, return_logits=True, task=None)[0], stock)
    assert not np.array_equal(bound.predict(**kw, return_logits=True)[0], stock)
