"""Exact export of one task of a SumSam2 to a Hugging Face ``Sam2Model`` folder (``sumseg export --format hf``).

The weights are :meth:`SumSam2.stock_state_dict <sumseg.models.sum_sam2.SumSam2.stock_state_dict>` (the task
prompt folded into ``no_mask_embed`` and ``mask_embed.conv3``'s bias), loaded strictly into a ``Sam2Model`` of
the same architecture and written with its own ``save_pretrained`` (so the layout is transformers'). The check
loads the folder with plain ``Sam2Model.from_pretrained`` and compares its low-res logits, IoU predictions and
image-size masks with sumseg's task-T predictions over :data:`~sumseg.models.export.VERIFY_ROUNDS`-round
sessions (point, box, box+point starts; multimask on, then off; each model's previous best low-res logits fed
back), on a non-square image, the prompts mapped into the input as ``Sam2Processor`` maps them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sumseg.models.sam2_arch import build_sam2
from sumseg.models.sum_sam2 import SumSam2


def write_sam2_folder(folder: str | Path, model: SumSam2, task: int) -> None:
    """Task ``task`` of ``model`` as ``Sam2Model.save_pretrained`` writes it, into ``folder``."""
    stock = build_sam2(model.name, seed=None)
    stock.load_state_dict(model.stock_state_dict(task), strict=True)
    stock.save_pretrained(str(folder))


def verify_sam2_export(model: SumSam2, hf_model: Any, image: np.ndarray, task: int) -> float:  # noqa: ANN401
    """:func:`~sumseg.models.hf_export.compare_sessions` of ``model`` with ``task`` and a plain ``Sam2Model`` on
    ``image`` (H, W, 3) uint8 (module docstring); each decodes its own image features of the same input."""
    from sumseg.models.hf_export import compare_sessions

    hw = (int(image.shape[0]), int(image.shape[1]))
    x = model.preprocess(torch.as_tensor(np.array(image)).permute(2, 0, 1)[None].float())
    with torch.no_grad():
        ours, theirs = model.encode(x), hf_model.get_image_embeddings(x)
    return compare_sessions(model, hf_model, ours, theirs, hw, hw, task)
