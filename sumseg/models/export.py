"""Exact export of one task to a stock SAM state_dict.

The task prompt ``e`` is added to the dense prompt embedding, which is either
``no_mask_embed`` (no mask prompt) or the output of ``mask_downscaling`` whose last layer is a
1×1 conv. Folding ``e`` into ``no_mask_embed.weight`` and that conv's bias gives the stock
model the same dense embedding for every prompt, so its predictions equal sumseg's task-T
predictions up to float rounding. The stock model applies the folded prompt on every call
(sumseg's interactive rounds apply it in the first round only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from sumseg.atomic import atomic_path
from sumseg.errors import ConfigError, SumsegError
from sumseg.models.checkpoint import load_checkpoint
from sumseg.models.registry import build_sam, is_tiny, official_builder
from sumseg.models.sum_sam import SumSam
from sumseg.outputs import check_output_file

NO_MASK_KEY = "prompt_encoder.no_mask_embed.weight"
DEFAULT_TOLERANCE = 1e-4
"""Largest |logit| difference the verification accepts (float rounding measures about 3e-7)."""


class ExportVerificationError(SumsegError):
    """The exported file, loaded by the stock loader, does not predict what the checkpoint predicts."""


def mask_downscaling_bias_key(model: SumSam) -> str:
    """State-dict key of the bias of the last ``mask_downscaling`` conv."""
    last = len(model.sam.prompt_encoder.mask_downscaling) - 1
    return f"prompt_encoder.mask_downscaling.{last}.bias"


def export_state_dict(model: SumSam, task: int) -> dict[str, torch.Tensor]:
    """Stock SAM state_dict (CPU tensors) of ``model`` with task ``task``'s prompt folded in."""
    state = {k: v.detach().cpu().clone() for k, v in model.sam.state_dict().items()}
    e = model.task_prompts.embedding(task).detach().cpu()
    state[NO_MASK_KEY] = state[NO_MASK_KEY] + e[None, :]
    bias = mask_downscaling_bias_key(model)
    state[bias] = state[bias] + e
    return state


def export_checkpoint(
    checkpoint: str | os.PathLike,
    task: int,
    out: str | os.PathLike,
    verify: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    model: str | None = None,
) -> tuple[str, float | None]:
    """Write task ``task`` of ``checkpoint`` as a plain ``.pth`` state_dict.

    ``model`` names the registry model of a plain state_dict (a sumseg checkpoint says its own).
    With ``verify`` the file is loaded by the stock loader before it replaces ``out`` and its
    predictions are compared with sumseg's task-``task`` predictions (:func:`verify_export`): a
    difference above ``tolerance``, or NaN, raises ExportVerificationError and leaves ``out`` as
    it was. Returns the model name and the largest difference (None without ``verify``).
    """
    check_output_file(out, inputs=[checkpoint])
    net, _ = load_checkpoint(checkpoint, model)
    if task not in net.task_prompts.task_ids:
        raise ConfigError(f"{checkpoint}: unknown task id {task}; this checkpoint has tasks "
                          f"{list(net.task_prompts.task_ids)}")
    state = export_state_dict(net, task)
    diff = None
    with atomic_path(Path(out)) as tmp:
        torch.save(state, tmp)
        if verify:
            image = (np.random.default_rng(0).random((net.image_size * 3 // 4, net.image_size, 3)) * 255)
            diff = verify_export(net, load_stock(tmp, net.name), image.astype(np.uint8), task)
            if not diff <= tolerance:  # NaN fails too
                raise ExportVerificationError(
                    f"{out}: the stock loader's predictions differ from the checkpoint's task-{task} predictions "
                    f"(max |logit diff| {diff:.2e}, above the tolerance {tolerance:.0e}); the file was not written"
                )
    return net.name, diff


def load_stock(path: str | os.PathLike, name: str) -> Sam:
    """Load an exported file the way a user of the stock packages would.

    Official sizes: ``segment_anything.sam_model_registry[name](checkpoint=path)`` (or the HQ
    package's registry for ``hq_*``); tiny configurations: the same classes built by
    :func:`build_sam`, then ``load_state_dict(strict=True)``.
    """
    if is_tiny(name):
        sam = build_sam(name, seed=None)
        sam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return sam.eval()
    return official_builder(name)(checkpoint=str(path)).eval()


def _prompt_set(h: int, w: int) -> list[dict]:
    """Point, box and box+point prompts (numpy, original-image pixels) spread over an H×W image."""
    return [
        dict(point_coords=np.array([[w // 2, h // 2], [w // 5, h // 4]]), point_labels=np.array([1, 0])),
        dict(box=np.array([w // 8, h // 6, 3 * w // 4, 5 * h // 6])),
        dict(point_coords=np.array([[w // 3, h // 2]]), point_labels=np.array([1]), box=np.array([5, 5, w - 9, h - 7])),
    ]


@torch.no_grad()
def verify_export(model: SumSam, stock_sam: Sam, image: np.ndarray, task: int) -> float:
    """Largest |logit| difference between ``model`` with ``task`` and a stock-loaded export.

    Compares ``SumPredictor(model).predict(task=task)`` with ``SamPredictor(stock_sam).predict``
    on ``image`` (H, W, 3) uint8 for point, box and box+point prompts, multimask on and off,
    each followed by a second call that feeds the model's own low-res logits back as the mask
    prompt. Every output is compared: masks at image size, IoU predictions, low-res logits.
    NaN anywhere gives NaN (so ``diff <= tolerance`` is False).
    """
    from segment_anything import SamPredictor

    from sumseg.predictor import SumPredictor

    ours, stock = SumPredictor(model, task=task), SamPredictor(stock_sam.eval())
    ours.set_image(image)
    stock.set_image(image)
    diffs = []
    for kw in _prompt_set(*image.shape[:2]):
        for multimask in (True, False):
            a = ours.predict(**kw, multimask_output=multimask, return_logits=True)
            b = stock.predict(**kw, multimask_output=multimask, return_logits=True)
            a2 = ours.predict(**kw, mask_input=a[2][:1], multimask_output=multimask, return_logits=True)
            b2 = stock.predict(**kw, mask_input=b[2][:1], multimask_output=multimask, return_logits=True)
            diffs += [np.abs(x - y).max() for x, y in zip(a + a2, b + b2, strict=True)]
    return float(np.max(diffs))  # np.max propagates NaN (Python's max would hide it)
