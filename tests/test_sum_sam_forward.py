"""SumSam.forward: a mixed batch over several images equals decoding each prompt alone."""

from __future__ import annotations

import torch

from sumseg import build_model
from sumseg.prompts.batch import PromptBatch
from tests.conftest import randomise_task_prompts


def _features(model, n_images: int):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n_images, 3, model.image_size, model.image_size, generator=g) * 255
    with torch.no_grad():
        return model.encode(model.preprocess(images))


def test_mixed_batch_equals_per_prompt_decoding() -> None:
    model = randomise_task_prompts(build_model("tiny"))  # not the shared fixture: its prompts stay 0
    feats = _features(model, 2)
    # 5 prompts on 2 images; prompts 1 and 3 have a box (and prompt 3 no point at all)
    image_index = torch.tensor([0, 0, 1, 1, 0])
    points = torch.tensor([[[40.0, 50.0], [10.0, 10.0]], [[100.0, 90.0], [0.0, 0.0]], [[200.0, 30.0], [60.0, 60.0]],
                           [[0.0, 0.0], [0.0, 0.0]], [[128.0, 128.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0], [1, -1], [1, 1], [-1, -1], [1, -1]])
    boxes = torch.tensor([[0.0] * 4, [60.0, 50.0, 180.0, 160.0], [0.0] * 4, [10.0, 20.0, 90.0, 120.0], [0.0] * 4])
    has_box = torch.tensor([False, True, False, True, False])
    tasks = torch.tensor([1, 2, 3, 0, 1])
    masks_in = torch.randn(5, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    prompts = PromptBatch(image_index, points, labels, boxes, has_box)
    with torch.no_grad():
        low, iou = model(feats, prompts, masks_in, tasks, multimask=True)
        assert low.shape == (5, 3, 64, 64) and iou.shape == (5, 3)
        for i in range(5):
            # SAM embeds a -1 label as a padding token, which changes the output: without a box every
            # column is kept (padding as in a batch); each box group here has one prompt, so its
            # unused columns are exactly its -1 labels
            keep = labels[i] != -1 if has_box[i] else torch.ones_like(labels[i], dtype=torch.bool)
            pts = (points[i : i + 1, keep], labels[i : i + 1, keep]) if bool(keep.any()) else None
            ref_low, ref_iou = model.decode(
                feats.select(int(image_index[i])), pts, boxes[i : i + 1] if has_box[i] else None,
                masks_in[i : i + 1], int(tasks[i]), multimask=True,
            )
            torch.testing.assert_close(low[i : i + 1], ref_low, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(iou[i : i + 1], ref_iou, atol=1e-5, rtol=1e-5)


def test_box_prompts_are_not_dropped(tiny_model) -> None:
    """A box must change the output: the forward must not silently decode it as 'no box'."""
    feats = _features(tiny_model, 1)
    points = torch.tensor([[[100.0, 100.0]]] * 2)
    labels = torch.tensor([[1], [1]])
    boxes = torch.tensor([[0.0] * 4, [20.0, 20.0, 200.0, 200.0]])
    prompts = PromptBatch(torch.tensor([0, 0]), points, labels, boxes, torch.tensor([False, True]))
    with torch.no_grad():
        low, _ = tiny_model(feats, prompts)
        alone, _ = tiny_model.decode(feats.select(0), (points[1:], labels[1:]), boxes[1:])
        no_box, _ = tiny_model.decode(feats.select(0), (points[1:], labels[1:]), None)
    torch.testing.assert_close(low[1:], alone, atol=1e-5, rtol=1e-5)
    assert (low[1:] - no_box).abs().max() > 1e-3


def test_forward_keeps_gradients(tiny_model) -> None:
    feats = _features(tiny_model, 1)
    prompts = PromptBatch(torch.tensor([0]), torch.tensor([[[50.0, 60.0]]]), torch.tensor([[1]]),
                          torch.zeros(1, 4), torch.tensor([False]))
    low, iou = tiny_model(feats, prompts, None, 1)
    (low.sum() + iou.sum()).backward()
    grads = {n: p.grad for n, p in tiny_model.named_parameters()}
    assert grads["task_prompts.task_embeddings"][1].abs().sum() > 0  # task 1's row only
    assert grads["task_prompts.task_embeddings"][[0, 2, 3]].abs().sum() == 0
    assert grads["sam.mask_decoder.iou_prediction_head.layers.0.weight"].abs().sum() > 0
    tiny_model.zero_grad(set_to_none=True)
