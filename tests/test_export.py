"""Exact export: the stock loader's predictions equal sumseg's task-T predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor, sam_model_registry

from sumseg import SumPredictor, build_model, save_checkpoint
from sumseg.models import build_sam
from sumseg.models.export import export_checkpoint, export_state_dict
from sumseg.models.sum_sam import SumSam
from tests.conftest import randomise_task_prompts

TOL = 1e-5


def _max_diffs(ours: SumPredictor, stock: SamPredictor, task: int, multimask: bool) -> list[float]:
    """Largest |logit| difference over point, box, box+point and mask prompts."""
    h, w = ours.original_size
    prompts = [
        dict(point_coords=np.array([[w // 2, h // 2], [w // 5, h // 4]]), point_labels=np.array([1, 0])),
        dict(box=np.array([w // 8, h // 6, 3 * w // 4, 5 * h // 6])),
        dict(point_coords=np.array([[w // 3, h // 2]]), point_labels=np.array([1]), box=np.array([5, 5, w - 9, h - 7])),
    ]
    diffs = []
    for kw in prompts:
        a = ours.predict(**kw, multimask_output=multimask, return_logits=True, task=task)
        b = stock.predict(**kw, multimask_output=multimask, return_logits=True)
        # feed each model's own low-res logits back as the mask prompt (round 2 with a mask)
        a2 = ours.predict(**kw, mask_input=a[2][:1], multimask_output=multimask, return_logits=True, task=task)
        b2 = stock.predict(**kw, mask_input=b[2][:1], multimask_output=multimask, return_logits=True)
        diffs += [float(np.abs(x - y).max()) for x, y in zip(a + a2, b + b2, strict=True)]
    return diffs


def _round_trip(model: SumSam, stock_sam: torch.nn.Module, image: np.ndarray, task: int) -> list[float]:
    ours, stock = SumPredictor(model), SamPredictor(stock_sam.eval())
    ours.set_image(image)
    stock.set_image(image)
    return _max_diffs(ours, stock, task, True) + _max_diffs(ours, stock, task, False)


@pytest.mark.parametrize("task", [1, 3])
def test_tiny_export_round_trip(tmp_path: Path, rgb_image: np.ndarray, task: int) -> None:
    model = randomise_task_prompts(build_model("tiny"))
    ckpt = save_checkpoint(tmp_path / "sum.ckpt", model)
    name = export_checkpoint(ckpt, task, tmp_path / "sam.pth")
    assert name == "tiny"
    stock = build_sam("tiny", seed=123)
    stock.load_state_dict(torch.load(tmp_path / "sam.pth", weights_only=True), strict=True)
    diffs = _round_trip(model, stock, rgb_image, task)
    assert max(diffs) <= TOL
    # and the export really carries the task: stock SAM without folding is far away
    unfolded = SamPredictor(model.sam)
    unfolded.set_image(rgb_image)
    ours = SumPredictor(model)
    ours.set_image(rgb_image)
    assert max(_max_diffs(ours, unfolded, task, True)) > 1e-3


def test_export_leaves_model_untouched_and_other_keys_equal() -> None:
    model = randomise_task_prompts(build_model("tiny"))
    before = {k: v.clone() for k, v in model.sam.state_dict().items()}
    state = export_state_dict(model, 2)
    changed = [k for k in state if not torch.equal(state[k], before[k])]
    assert sorted(changed) == ["prompt_encoder.mask_downscaling.6.bias", "prompt_encoder.no_mask_embed.weight"]
    assert all(torch.equal(v, before[k]) for k, v in model.sam.state_dict().items())
    e = model.task_prompts.embedding(2).detach()
    key = "prompt_encoder.no_mask_embed.weight"
    assert torch.equal(state[key][0], before[key][0] + e)


@pytest.mark.slow
def test_vit_b_export_round_trip_with_stock_loader(tmp_path: Path) -> None:
    model = randomise_task_prompts(build_model("vit_b"), seed=3)
    ckpt = save_checkpoint(tmp_path / "sum_vit_b.ckpt", model)
    export_checkpoint(ckpt, 1, tmp_path / "sam_vit_b.pth")
    stock = sam_model_registry["vit_b"](checkpoint=str(tmp_path / "sam_vit_b.pth"))
    image = (np.random.default_rng(1).random((300, 400, 3)) * 255).astype(np.uint8)
    assert max(_round_trip(model, stock, image, 1)) <= TOL
