"""Exact export of one task to a stock SAM state_dict.

The task prompt ``e`` is added to the dense prompt embedding, which is either
``no_mask_embed`` (no mask prompt) or the output of ``mask_downscaling`` whose last layer is a
1×1 conv. Folding ``e`` into ``no_mask_embed.weight`` and that conv's bias gives the stock
model the same dense embedding for every prompt, so its predictions equal sumseg's task-T
predictions up to float rounding. The stock model applies the folded prompt on every call, as
sumseg's interactive rounds do (``rounds.task_prompt=every``, the default and the official code's
behaviour), so an export equals its checkpoint in every round.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from sumseg.atomic import atomic_path
from sumseg.config.checker import Checker, refuse_bad
from sumseg.errors import ConfigError, SumsegError
from sumseg.model_names import PRETRAINED, model_problems
from sumseg.models.checkpoint import load_checkpoint
from sumseg.models.registry import ARCHS, build_sam, is_tiny, official_builder
from sumseg.models.sum_sam import SumSam
from sumseg.outputs import check_output_file

DEFAULT_TOLERANCE = 1e-4
MAX_TOLERANCE = 1e3


def check_export_options(c: Checker, tolerance: float, key: str = "tolerance") -> None:
    """The export's numbers (``key``: ``--tolerance`` on the command line): a finite tolerance in [0, 1000]."""
    c.number(key, tolerance, 0, MAX_TOLERANCE)
"""Largest |logit| difference the verification accepts (float rounding measures about 3e-7)."""


class ExportVerificationError(SumsegError):
    """The exported file, loaded by the stock loader, does not predict what the checkpoint predicts."""


def export_checkpoint(
    checkpoint: str | os.PathLike | None,
    task: int,
    out: str | os.PathLike,
    verify: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    model: str | None = None,
) -> tuple[str, float | None]:
    """Write task ``task`` of ``checkpoint`` as a plain ``.pth`` state_dict.

    ``model`` names the registry model of a plain state_dict (a sumseg checkpoint says its own), or is
    a shipped name (``tiny_foundation``, no checkpoint): :func:`export_source`. With ``verify`` the file
    is loaded by the stock loader before it replaces ``out`` and its predictions are compared with sumseg's
    task-``task`` predictions (:func:`verify_export`): a difference above ``tolerance``, or NaN, raises
    ExportVerificationError and leaves ``out`` as it was. Returns the model name and the largest difference
    (None without ``verify``).
    """
    refuse_bad(lambda c: check_export_options(c, tolerance))
    checkpoint, model = export_source(checkpoint, model)
    check_output_file(out, inputs=[checkpoint])
    net = task_model(checkpoint, task, model)
    state = net.stock_state_dict(task)
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


def export_source(checkpoint: str | os.PathLike | None, model: str | None) -> tuple[Path, str | None]:
    """(the file an export reads, the model name to read it with), under the model-name rule every command
    shares (:func:`sumseg.model_names.model_problems`, worded with the flags ``--model`` / ``--checkpoint``);
    an export needs weights: a checkpoint, or a shipped name. ConfigError otherwise."""
    problems = [m for _, m in model_problems(model, checkpoint, ("--model", "--checkpoint"))]
    if not problems and checkpoint is None and model not in PRETRAINED:
        problems = [f"--checkpoint is needed with --model {model}: an export writes trained weights (a shipped "
                    f"model needs none: {', '.join(PRETRAINED)})"]
    if problems:
        raise ConfigError("; ".join(problems))
    return (PRETRAINED[str(model)], None) if checkpoint is None else (Path(checkpoint), model)


def task_model(checkpoint: str | os.PathLike, task: int, model: str | None) -> SumSam:
    """The model of ``checkpoint`` (``model``: the registry name of a plain state_dict), which must know
    task ``task`` (ConfigError naming the checkpoint and its tasks otherwise)."""
    net, _ = load_checkpoint(checkpoint, model)
    if task not in net.task_prompts.task_ids:
        raise ConfigError(f"{checkpoint}: unknown task id {task}; this checkpoint has tasks "
                          f"{list(net.task_prompts.task_ids)}")
    return net


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


VERIFY_ROUNDS = 4
"""Interactive rounds of the export check: round 1 from a prompt, then a point added per round with the
previous low-res logits as the mask prompt."""


def _prompt_set(h: int, w: int) -> list[dict]:
    """Point, box and box+point first-round prompts (numpy, original-image pixels) over an H×W image."""
    return [
        dict(point_coords=np.array([[w // 2, h // 2], [w // 5, h // 4]]), point_labels=np.array([1, 0])),
        dict(box=np.array([w // 8, h // 6, 3 * w // 4, 5 * h // 6])),
        dict(point_coords=np.array([[w // 3, h // 2]]), point_labels=np.array([1]), box=np.array([5, 5, w - 9, h - 7])),
    ]


def _next_point(h: int, w: int, r: int) -> tuple[list[int], int]:
    """The point added in round ``r`` (≥ 1): spread over the image, alternately negative and positive."""
    return [(w * (2 * r + 1)) // (2 * VERIFY_ROUNDS + 2), (h * (r + 2)) // (VERIFY_ROUNDS + 3)], r % 2


@torch.no_grad()
def verify_export(model: SumSam, stock_sam: Sam, image: np.ndarray, task: int) -> float:
    """Largest |logit| difference between ``model`` with ``task`` and a stock-loaded export, over
    :data:`VERIFY_ROUNDS`-round interactive sessions.

    ``SumPredictor(model).predict(task=task)`` (the task prompt on every call, as in sumseg's rounds)
    against ``SamPredictor(stock_sam).predict`` on ``image`` (H, W, 3) uint8: each session starts from
    a point, box or box+point prompt (multimask on, then off), and each later round adds a point and
    feeds the model's own previous low-res logits back as the mask prompt (the output the model
    scores highest). Every output is compared: masks at image size, IoU predictions, low-res logits.
    NaN anywhere gives NaN (so ``diff <= tolerance`` is False).
    """
    from segment_anything import SamPredictor

    from sumseg.models.predictor import SumPredictor

    ours, stock = SumPredictor(model, task=task), SamPredictor(stock_sam.eval())
    ours.set_image(image)
    stock.set_image(image)
    h, w = image.shape[:2]
    diffs = []
    for first in _prompt_set(h, w):
        for multimask in (True, False):
            kw = dict(first)
            low = {"ours": None, "stock": None}
            for r in range(VERIFY_ROUNDS):
                if r:
                    point, label = _next_point(h, w, r)
                    kw["point_coords"] = np.concatenate([kw.get("point_coords", np.zeros((0, 2))), [point]])
                    kw["point_labels"] = np.concatenate([kw.get("point_labels", np.zeros(0)), [label]])
                a = ours.predict(**kw, mask_input=low["ours"], multimask_output=multimask and r == 0,
                                 return_logits=True)
                b = stock.predict(**kw, mask_input=low["stock"], multimask_output=multimask and r == 0,
                                  return_logits=True)
                diffs += [np.abs(x - y).max() for x, y in zip(a, b, strict=True)]
                k = int(np.argmax(a[1]))
                low = {"ours": a[2][k : k + 1], "stock": b[2][k : k + 1]}
    return float(np.max(diffs))  # np.max propagates NaN (Python's max would hide it)


def stock_loader(name: str, path: Path) -> str:
    """How a user loads an export of ``name`` (docs/export.md): the official registry, or for tiny sizes
    (which segment_anything has no builder for) the same SAM classes built by sumseg."""
    if is_tiny(name):
        return (f"sam = sumseg.models.build_sam({name!r}); sam.load_state_dict(torch.load({str(path)!r}, "
                f"weights_only=True)) (segment_anything's own classes; it has no builder for the {name} size)")
    package = "segment_anything_hq" if ARCHS[name].hq else "segment_anything"
    return f"{package}.sam_model_registry[{name.removeprefix('hq_')!r}](checkpoint={str(path)!r})"
