"""SumSam2 implements the model interface on transformers' Sam2Model (image mode), on the tiny SAM 2 config.

The reference is plain ``Sam2Model``: its ``get_image_embeddings`` and its ``forward`` on those embeddings.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from sumseg.models.interface import PromptableModel  # noqa: E402
from sumseg.models.sam2_arch import build_sam2  # noqa: E402
from sumseg.models.sum_sam2 import SumSam2  # noqa: E402
from sumseg.prompts.batch import PromptBatch  # noqa: E402
from tests.test_sam2_arch import random_sam2  # noqa: E402

TOL = 1e-5
ROUNDS = 4


def _model(tasks: tuple[int, ...] = (0, 1, 2)) -> SumSam2:
    model = SumSam2(random_sam2(), tasks, "sam2_tiny").eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.task_prompts.task_embeddings.copy_(torch.randn(model.task_prompts.task_embeddings.shape, generator=g))
    return model


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, 192, 256, generator=torch.Generator().manual_seed(seed)) * 255


def _first_prompts() -> list[dict[str, torch.Tensor]]:
    """Point, box, box + point (S×S input frame, S = 256)."""
    point = {"points": torch.tensor([[[120.0, 90.0]]]), "labels": torch.tensor([[1]])}
    box = {"boxes": torch.tensor([[40.0, 30.0, 200.0, 170.0]])}
    return [point, box, {**point, **box}]


def _session(ours: SumSam2, hf: torch.nn.Module, x: torch.Tensor, first: dict, task: int | None,
             multimask: bool) -> float:
    """Largest |difference| of low-res logits and IoUs over ROUNDS rounds; each later round adds a point
    and feeds each model's own previous best low-res logits back as the mask prompt."""
    feats = ours.encode(x)
    theirs = hf.get_image_embeddings(x)
    kw, mask_a, mask_b, diffs = dict(first), None, None, []
    for r in range(ROUNDS):
        if r:
            p = torch.tensor([[[30.0 + 50 * r, 200.0 - 40 * r]]])
            kw["points"] = torch.cat([kw["points"], p], 1) if "points" in kw else p
            kw["labels"] = torch.cat([kw["labels"], torch.tensor([[r % 2]])], 1) if "labels" in kw else torch.tensor(
                [[r % 2]])
        points = (kw["points"], kw["labels"]) if "points" in kw else None
        mm = multimask and r == 0
        a_low, a_iou = ours.decode(feats, points, kw.get("boxes"), mask_a, task, mm)
        b = hf(image_embeddings=theirs, multimask_output=mm, input_masks=mask_b,
               input_points=None if points is None else points[0][None],
               input_labels=None if points is None else points[1][None],
               input_boxes=kw["boxes"][None] if "boxes" in kw else None)
        b_low, b_iou = b.pred_masks[0], b.iou_scores[0]
        diffs += [float((a_low - b_low).abs().max()), float((a_iou - b_iou).abs().max())]
        k = int(a_iou[0].argmax())
        mask_a, mask_b = a_low[:, k : k + 1], b_low[:, k : k + 1]
    return max(diffs)


def test_sumsam2_is_a_promptable_model_and_encodes_as_sam2model() -> None:
    model = _model()
    assert isinstance(model, PromptableModel) and model.image_size == 256
    with torch.no_grad():
        x = model.preprocess(_image())
        feats = model.encode(x)
        ref = model.sam2.get_image_embeddings(x)
    assert x.shape == (1, 3, 256, 256)
    assert feats.high_res is not None
    for a, b in zip((*feats.high_res, feats.embeddings), ref, strict=True):
        assert torch.equal(a, b)
    assert feats.embeddings.shape == (1, 256, 16, 16)
    assert feats.high_res[0].shape == (1, 32, 64, 64) and feats.high_res[1].shape == (1, 64, 32, 32)
    low = torch.randn(2, 3, 64, 64)
    assert model.upscale(low, (256, 256), (192, 256)).shape == (2, 3, 192, 256)


@pytest.mark.parametrize("multimask", [True, False])
def test_without_task_it_predicts_what_sam2model_predicts(multimask: bool) -> None:
    model = _model()
    with torch.no_grad():
        x = model.preprocess(_image(1))
        diff = max(_session(model, model.sam2, x, first, None, multimask) for first in _first_prompts())
    assert diff <= TOL, diff


@pytest.mark.parametrize("multimask", [True, False])
def test_folded_task_prompt_is_exact_over_interactive_rounds(multimask: bool) -> None:
    """Plain Sam2Model loaded with stock_state_dict(task) gives our task-conditioned predictions (with mask
    inputs from round 2 on: both folds, no_mask_embed and mask_embed.conv3's bias, are exercised)."""
    model = _model()
    stock = build_sam2("sam2_tiny", seed=11).eval()
    stock.load_state_dict(model.stock_state_dict(2), strict=True)
    with torch.no_grad():
        x = model.preprocess(_image(2))
        diff = max(_session(model, stock, x, first, 2, multimask) for first in _first_prompts())
        other = max(_session(model, stock, x, first, 1, multimask) for first in _first_prompts())
    assert diff <= TOL, diff
    assert other > 1e-3  # task 1 differs from task 2: the fold is not vacuous


def _mixed_prompts() -> PromptBatch:
    points = torch.tensor([[[120.0, 90.0], [0.0, 0.0]], [[30.0, 60.0], [200.0, 40.0]], [[10.0, 10.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, -1], [1, 0], [-1, -1]])
    boxes = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [40.0, 30.0, 200.0, 170.0]])
    return PromptBatch(torch.tensor([1, 0, 1]), points, labels, boxes, torch.tensor([False, False, True]))


def test_call_over_images_and_box_groups_equals_decoding_each_prompt() -> None:
    model = _model()
    prompts = _mixed_prompts()
    task = torch.tensor([0, 1, 2])
    masks = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        feats = model.encode(model.preprocess(torch.cat([_image(3), _image(4)])))
        low, iou = model(feats, prompts, masks, task, multimask=True)
        assert low.shape == (3, 3, 64, 64) and iou.shape == (3, 3)
        for k in range(3):
            pts = prompts.points_of(torch.tensor([k]), drop_unused=bool(prompts.has_box[k]))
            box = prompts.boxes[k : k + 1] if prompts.has_box[k] else None
            one, one_iou = model.decode(feats.select(int(prompts.image_index[k])), pts, box, masks[k : k + 1],
                                        int(task[k]), True)
            torch.testing.assert_close(low[k : k + 1], one, rtol=0, atol=TOL)
            torch.testing.assert_close(iou[k : k + 1], one_iou, rtol=0, atol=TOL)


def test_gradients_reach_the_task_prompts_and_the_backbone_in_train_mode() -> None:
    model = _model().train()
    feats = model.encode(model.preprocess(torch.cat([_image(3), _image(4)])))
    low, iou, obj = model.forward_with_scores(feats, _mixed_prompts(), None, torch.tensor([0, 1, 2]))
    assert low.shape == (3, 1, 64, 64) and obj.shape == (3,)
    (low.mean() + iou.mean() + obj.mean()).backward()
    grad = model.task_prompts.task_embeddings.grad
    assert grad is not None and bool((grad.abs().sum(1) > 0).all())
    patch = model.sam2.vision_encoder.backbone.patch_embed.projection.weight.grad
    assert patch is not None and float(patch.abs().sum()) > 0


def test_build_model_gives_sumsam2_from_a_name_a_folder_or_meta_pt(tmp_path) -> None:  # noqa: ANN001
    from sumseg import build_model
    from sumseg.errors import CheckpointError
    from sumseg.models.sam2_weights import hf_to_meta_state

    fresh = build_model("sam2_tiny", tasks=[0, 1])
    assert isinstance(fresh, SumSam2) and fresh.task_prompts.task_ids == (0, 1) and not fresh.training
    ref = random_sam2()
    ref.save_pretrained(tmp_path / "hf")
    torch.save({"model": hf_to_meta_state(ref.state_dict())}, tmp_path / "tiny.pt")
    x = torch.randn(1, 3, 256, 256)
    want = ref.get_image_embeddings(x)[-1]
    for model in (build_model(None, tmp_path / "hf"), build_model("sam2_tiny", tmp_path / "hf"),
                  build_model("sam2_tiny", tmp_path / "tiny.pt")):
        assert isinstance(model, SumSam2) and model.name == "sam2_tiny"
        with torch.no_grad():
            assert torch.equal(model.encode(x).embeddings, want)
    with pytest.raises(CheckpointError, match="describes a 'sam2_tiny' model, not 'sam2.1_hiera_t'"):
        build_model("sam2.1_hiera_t", tmp_path / "hf")
