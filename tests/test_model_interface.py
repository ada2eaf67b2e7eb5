"""SumSam implements the model interface (sumseg.models.interface) that the rest of the package calls."""

from __future__ import annotations

import torch

from sumseg.models.checkpoint import build_model
from sumseg.models.interface import PromptableModel
from sumseg.prompts.batch import PromptBatch


def test_sumsam_is_a_promptable_model_and_its_members_work_together() -> None:
    model = build_model("tiny", tasks=[0, 1]).eval()
    assert isinstance(model, PromptableModel)
    with torch.no_grad():
        model.task_prompts.task_embeddings[1] = torch.randn(model.task_prompts.task_embeddings.shape[1])
        images = model.preprocess(torch.rand(1, 3, 256, 192) * 255)
        features = model.encode(images)
        prompts = PromptBatch(torch.zeros(2, dtype=torch.long), torch.tensor([[[60.0, 80.0]], [[30.0, 40.0]]]),
                              torch.ones(2, 1, dtype=torch.long), torch.zeros(2, 4), torch.zeros(2, dtype=torch.bool))
        low, iou = model(features, prompts, None, 1, multimask=True)
        assert low.shape == (2, 3, 64, 64) and iou.shape == (2, 3)
        assert model.upscale(low, (256, 192), (512, 384)).shape == (2, 3, 512, 384)
        # the folded stock weights give the task-1 prediction with no task prompt at all
        stock = build_model("tiny", tasks=[0]).eval()
        stock.sam.load_state_dict(model.stock_state_dict(1))
        low0, _ = stock(features, prompts, None, None, multimask=True)
        low_other, _ = model(features, prompts, None, 0, multimask=True)
    torch.testing.assert_close(low0, low, rtol=1e-4, atol=1e-4)
    assert (low_other - low).abs().max() > 1e-3  # task 1 differs from task 0: the fold is not vacuous


def test_an_object_without_the_members_is_not_one() -> None:
    assert not isinstance(torch.nn.Linear(2, 2), PromptableModel)
