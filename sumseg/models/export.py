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

import torch

from sumseg.atomic import atomic_path
from sumseg.models.checkpoint import load_checkpoint
from sumseg.models.sum_sam import SumSam

NO_MASK_KEY = "prompt_encoder.no_mask_embed.weight"


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


def export_checkpoint(checkpoint: str | os.PathLike, task: int, out: str | os.PathLike) -> str:
    """Write task ``task`` of ``checkpoint`` as a plain ``.pth`` state_dict; return the model name."""
    model, _ = load_checkpoint(checkpoint)
    state = export_state_dict(model, task)
    with atomic_path(Path(out)) as tmp:
        torch.save(state, tmp)
    return model.name
