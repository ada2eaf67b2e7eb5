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

from sumseg.models.export import VERIFY_ROUNDS, _next_point, _prompt_set
from sumseg.models.sam2_arch import build_sam2
from sumseg.models.sum_sam2 import SumSam2


def write_sam2_folder(folder: str | Path, model: SumSam2, task: int) -> None:
    """Task ``task`` of ``model`` as ``Sam2Model.save_pretrained`` writes it, into ``folder``."""
    stock = build_sam2(model.name, seed=None)
    stock.load_state_dict(model.stock_state_dict(task), strict=True)
    stock.save_pretrained(str(folder))


def _inputs(kw: dict, hw: tuple[int, int], model: SumSam2) -> dict[str, torch.Tensor]:
    """A round's prompts (numpy, image pixels) → ``Sam2Model`` inputs in the S×S input (the model's frame)."""
    frame, out = model.frame, {}
    if "point_coords" in kw:
        pts = frame.apply_coords(np.asarray(kw["point_coords"], dtype=np.float64), hw)
        out["input_points"] = torch.as_tensor(pts, dtype=torch.float)[None, None]
        out["input_labels"] = torch.as_tensor(kw["point_labels"], dtype=torch.long)[None, None]
    if "box" in kw:
        box = frame.apply_boxes(np.asarray(kw["box"], dtype=np.float64)[None], hw)
        out["input_boxes"] = torch.as_tensor(box, dtype=torch.float)[None]
    return out


@torch.no_grad()
def verify_sam2_export(model: SumSam2, hf_model: Any, image: np.ndarray, task: int) -> float:  # noqa: ANN401
    """Largest |difference| between ``model`` with ``task`` and a plain ``Sam2Model`` over interactive sessions
    (module docstring); each decodes its own image features of the same input. NaN anywhere gives NaN."""
    h, w = image.shape[:2]
    x = model.preprocess(torch.as_tensor(np.array(image)).permute(2, 0, 1)[None].float())
    ours = model.encode(x)
    theirs = hf_model.get_image_embeddings(x)
    diffs: list[float] = []
    for first in _prompt_set(h, w):
        for multimask in (True, False):
            kw, low_a, low_b = dict(first), None, None
            for r in range(VERIFY_ROUNDS):
                if r:
                    point, label = _next_point(h, w, r)
                    kw["point_coords"] = np.concatenate([kw.get("point_coords", np.zeros((0, 2))), [point]])
                    kw["point_labels"] = np.concatenate([kw.get("point_labels", np.zeros(0)), [label]])
                inputs = _inputs(kw, (h, w), model)
                points = (inputs["input_points"][0], inputs["input_labels"][0]) if "input_points" in inputs else None
                boxes = inputs["input_boxes"][0] if "input_boxes" in inputs else None
                mm = multimask and r == 0
                a_low, a_iou = model.decode(ours, points, boxes, low_a, task, mm)
                b = hf_model(image_embeddings=theirs, input_masks=low_b, multimask_output=mm, **inputs)
                b_low, b_iou = b.pred_masks[0], b.iou_scores[0]
                up = [model.upscale(t, (h, w), (h, w)) for t in (a_low, b_low)]
                diffs += [float((p - q).abs().max()) for p, q in ((a_low, b_low), (a_iou, b_iou), tuple(up))]
                k = int(a_iou[0].argmax())
                low_a, low_b = a_low[:, k : k + 1], b_low[:, k : k + 1]
    return float(np.max(diffs))  # np.max propagates NaN
