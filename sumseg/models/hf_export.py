"""Exact export of one task to a Hugging Face ``SamModel`` folder (``sumseg export --format hf``).

The weights are :meth:`SumSam.stock_state_dict` (the task prompt folded into ``no_mask_embed`` and the
last ``mask_downscaling`` conv's bias, as in :mod:`sumseg.models.export`), renamed to ``SamModel``'s keys
(:mod:`sumseg.models.hf_sam`), written as ``save_pretrained`` writes them: ``config.json`` and
``model.safetensors`` (metadata ``{"format": "pt"}``, the tied positional copy left out). Writing needs no
``transformers``; the check does: the folder is loaded with plain ``SamModel.from_pretrained(folder)``
before it replaces ``out``, and its low-res logits, IoU predictions and image-size masks are compared
with sumseg's task-T predictions over :data:`~sumseg.models.export.VERIFY_ROUNDS`-round sessions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from sumseg.atomic import atomic_dir, json_text
from sumseg.config.checker import refuse_bad
from sumseg.errors import ConfigError
from sumseg.models.export import (
    DEFAULT_TOLERANCE,
    VERIFY_ROUNDS,
    ExportVerificationError,
    _next_point,
    _prompt_set,
    check_export_options,
    export_source,
    task_model,
)
from sumseg.models.hf_sam import HF_CONFIG, HF_WEIGHTS, hf_config, sam_to_hf_state
from sumseg.models.registry import ARCHS
from sumseg.models.sum_sam import SumSam
from sumseg.models.sum_sam2 import SumSam2
from sumseg.outputs import OutputError, check_output_dir, check_output_file


def import_transformers() -> Any:  # noqa: ANN401 - a module
    """The ``transformers`` package (the optional extra ``sumseg[hf]``); ConfigError when it is missing."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(f"Hugging Face models need the optional extra: pip install 'sumseg[hf]' "
                          f"(transformers); import failed: {e}") from e
    return transformers


def write_hf_folder(folder: str | os.PathLike, model: SumSam, task: int) -> None:
    """Write task ``task`` of ``model`` into ``folder`` (existing, empty) in the ``SamModel`` layout."""
    folder = Path(folder)
    config = hf_config(ARCHS[model.name])
    (folder / HF_CONFIG).write_text(json_text(config, folder / HF_CONFIG, indent=2, sort_keys=True) + "\n",
                                    encoding="utf-8")
    tensors = {k: v.contiguous() for k, v in sam_to_hf_state(model.stock_state_dict(task)).items()}
    save_file(tensors, str(folder / HF_WEIGHTS), metadata={"format": "pt"})


def check_hf_out(out: str | os.PathLike, checkpoint: str | os.PathLike) -> Path:
    """``out`` may receive an HF folder: absent (its parent writable), empty, or holding only an earlier
    export's files (it is replaced whole); never the checkpoint, nor around it. OutputError otherwise."""
    out, label = Path(out), "output folder"
    if not out.exists():
        check_output_file(out, inputs=[checkpoint], label=label)  # the parent takes a new entry
        return out
    if not out.is_dir():
        raise OutputError(f"{label} {out}: is a file; an HF export is a folder ({HF_CONFIG} + {HF_WEIGHTS})")
    check_output_dir(out, inputs=[checkpoint], files=[HF_CONFIG, HF_WEIGHTS], label=label)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in (HF_CONFIG, HF_WEIGHTS))
    if foreign:
        raise OutputError(f"{label} {out}: holds other files ({', '.join(foreign[:5])}); the export replaces the "
                          "whole folder, so give a new or empty folder, or an earlier HF export")
    return out


def export_hf(
    checkpoint: str | os.PathLike | None,
    task: int,
    out: str | os.PathLike,
    verify: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    model: str | None = None,
) -> tuple[str, float | None]:
    """Write task ``task`` of ``checkpoint`` as a ``SamModel`` folder ``out`` (atomically, whole).

    ``model`` names the registry model of a plain state_dict. With ``verify`` the folder is loaded with
    ``SamModel.from_pretrained`` before it replaces ``out`` (:func:`verify_hf_export`); a difference above
    ``tolerance`` (or NaN) raises ExportVerificationError and leaves ``out`` as it was. Returns the model
    name and the largest difference (None without ``verify``).
    """
    refuse_bad(lambda c: check_export_options(c, tolerance))
    checkpoint, model = export_source(checkpoint, model)
    check_hf_out(out, checkpoint)
    net = task_model(checkpoint, task, model)
    image = _verify_image(net)
    if isinstance(net, SumSam2):  # a Sam2Model folder (models/sam2_export)
        from sumseg.models.sam2_export import verify_sam2_export, write_sam2_folder

        return net.name, _write_verified(
            out, task, verify, tolerance, "Sam2Model", lambda d: write_sam2_folder(d, net, task),
            lambda d: verify_sam2_export(net, import_transformers().Sam2Model.from_pretrained(str(d)).eval(), image,
                                         task))
    if ARCHS[net.name].hq:
        raise ConfigError(f"{checkpoint}: an HQ-SAM model ({net.name}) has no SamModel layout; export it with "
                          "--format sam (transformers' SamHQModel is not supported yet)")
    return net.name, _write_verified(
        out, task, verify, tolerance, "SamModel", lambda d: write_hf_folder(d, net, task),
        lambda d: verify_hf_export(net, import_transformers().SamModel.from_pretrained(str(d)).eval(), image, task))


def _verify_image(net: SumSam | SumSam2) -> np.ndarray:
    """The check's non-square (3S/4 × S) random uint8 RGB image."""
    image = np.random.default_rng(0).random((net.image_size * 3 // 4, net.image_size, 3)) * 255
    return image.astype(np.uint8)


def _write_verified(out: str | os.PathLike, task: int, verify: bool, tolerance: float, loader: str,
                    write: Callable[[Path], None], check: Callable[[Path], float]) -> float | None:
    """``write`` the folder ``out`` atomically (whole); with ``verify``, ``check`` it (its largest logit
    difference) before it replaces ``out`` — above ``tolerance`` (or NaN) nothing is written."""
    diff = None
    with atomic_dir(out) as tmp:
        write(tmp)
        if verify:
            diff = check(tmp)
            if not diff <= tolerance:  # NaN fails too
                raise ExportVerificationError(
                    f"{out}: {loader}.from_pretrained's predictions differ from the checkpoint's task-{task} "
                    f"predictions (max |logit diff| {diff:.2e}, above the tolerance {tolerance:.0e}); nothing was "
                    "written")
    return diff


def preprocess_image(model: SumSam, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 RGB → the model input (1, 3, S, S) and the resized image's (h, w) in it, exactly as
    ``SamPredictor.set_image`` computes them."""
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(model.image_size).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    return model.preprocess(x), (int(x.shape[-2]), int(x.shape[-1]))


def session_inputs(kw: dict, hw: tuple[int, int], frame: Any) -> dict[str, torch.Tensor]:  # noqa: ANN401
    """A round's prompts (numpy, image pixels) → ``SamModel`` / ``Sam2Model`` inputs in the S×S input, mapped by
    the model's ``frame``: ``input_points`` (1, 1, P, 2), ``input_labels`` (1, 1, P), ``input_boxes`` (1, 1, 4)."""
    out = {}
    if "point_coords" in kw:
        pts = frame.apply_coords(np.asarray(kw["point_coords"], dtype=np.float64), hw)
        out["input_points"] = torch.as_tensor(pts, dtype=torch.float)[None, None]
        out["input_labels"] = torch.as_tensor(kw["point_labels"], dtype=torch.long)[None, None]
    if "box" in kw:
        box = frame.apply_boxes(np.asarray(kw["box"], dtype=np.float64).reshape(1, 4), hw)
        out["input_boxes"] = torch.as_tensor(box, dtype=torch.float)[None]
    return out


@torch.no_grad()
def compare_sessions(model: SumSam | SumSam2, hf_model: Any, ours: Any, theirs: Any, hw: tuple[int, int],  # noqa: ANN401
                     hw_in: tuple[int, int], task: int) -> float:
    """Largest |difference| between ``model`` with ``task`` (on its features ``ours``) and ``hf_model`` (on its
    image embeddings ``theirs``) over interactive sessions on an (H, W) = ``hw`` image (``hw_in``: its size
    inside the input). Each session starts from a point, box or box+point prompt (multimask on, then off);
    each later round adds a point and feeds each model's own previous low-res logits (1, 1, L, L) of the
    output ``model`` scores highest back as the mask prompt. Compared: low-res logits (1, M, L, L), IoU
    predictions (1, M) and masks at image size (1, M, H, W). NaN anywhere gives NaN."""
    diffs: list[float] = []
    h, w = hw
    for first in _prompt_set(h, w):
        for multimask in (True, False):
            kw, low_a, low_b = dict(first), None, None
            for r in range(VERIFY_ROUNDS):
                if r:
                    point, label = _next_point(h, w, r)
                    kw["point_coords"] = np.concatenate([kw.get("point_coords", np.zeros((0, 2))), [point]])
                    kw["point_labels"] = np.concatenate([kw.get("point_labels", np.zeros(0)), [label]])
                inputs = session_inputs(kw, hw, model.frame)
                points = (inputs["input_points"][0], inputs["input_labels"][0]) if "input_points" in inputs else None
                boxes = inputs["input_boxes"][0] if "input_boxes" in inputs else None
                mm = multimask and r == 0
                a_low, a_iou = model.decode(ours, points, boxes, low_a, task, mm)
                b = hf_model(image_embeddings=theirs, input_masks=low_b, multimask_output=mm, **inputs)
                b_low, b_iou = b.pred_masks[0], b.iou_scores[0]
                up = [model.upscale(x, hw_in, hw) for x in (a_low, b_low)]
                diffs += [float((p - q).abs().max()) for p, q in ((a_low, b_low), (a_iou, b_iou), tuple(up))]
                k = int(a_iou[0].argmax())
                low_a, low_b = a_low[:, k : k + 1], b_low[:, k : k + 1]
    return float(np.max(diffs))  # np.max propagates NaN


def verify_hf_export(model: SumSam, hf_model: Any, image: np.ndarray, task: int) -> float:  # noqa: ANN401
    """:func:`compare_sessions` of ``model`` and a ``SamModel`` on ``image`` (H, W, 3) uint8: both see the same
    input (1, 3, S, S), each decodes its own image embeddings (1, C, h, w) (which differ by float rounding:
    about 2e-6 of their scale on the tiny config)."""
    x, hw_in = preprocess_image(model, image)
    with torch.no_grad():
        ours, theirs = model.encode(x), hf_model.get_image_embeddings(x)
    return compare_sessions(model, hf_model, ours, theirs, image.shape[:2], hw_in, task)
