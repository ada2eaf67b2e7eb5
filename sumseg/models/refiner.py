"""The refiner's model side (DESIGN §1, docs/refiner.md): the frozen twin that shares the refiner's
image encoder, and the set of parameters a refiner trains (prompt encoder + mask decoder).

Both take a :class:`~sumseg.models.sum_sam2.SumSam2` too: its twin is a copy of the ``Sam2Model`` with the
vision encoder left out (the twin decodes the refiner's features, high-res levels included); it trains
the prompt encoder and the mask decoder except the decoder's image side (``conv_s0``/``conv_s1``, whose
outputs the features and the embedding cache hold) and the idle object-score head."""

from __future__ import annotations

import copy

from segment_anything.modeling import Sam
from torch import Tensor, nn

from sumseg.errors import ConfigError
from sumseg.model_names import refiner_problem
from sumseg.models.sum_sam import SumSam
from sumseg.models.sum_sam2 import SumSam2


def check_refiner(model: SumSam, where: str) -> SumSam:
    """``model`` when it may be a refiner (:func:`sumseg.model_names.refiner_problem`), else ConfigError
    led by ``where`` (the key or file that named it)."""
    problem = refiner_problem(model.name, where)
    if problem:
        raise ConfigError(problem)
    return model


class _SharedEncoder(nn.Module):
    """The frozen twin's image encoder slot: the twin reads the refiner's embeddings instead."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size

    def forward(self, images: Tensor) -> Tensor:
        raise RuntimeError("the frozen twin has no image encoder: give it the refiner's embeddings")


def _frozen_copy2(model: SumSam2) -> SumSam2:
    """SAM 2's twin: ``model`` deep-copied with its vision encoder replaced by the shared-encoder slot."""
    slot = _SharedEncoder(model.image_size)
    frozen = copy.deepcopy(model, memo={id(model.sam2.vision_encoder): slot}).eval()
    return frozen.requires_grad_(False)


def frozen_copy(model: SumSam | SumSam2) -> SumSam | SumSam2:
    """A frozen copy of ``model``'s prompt encoder, mask decoder and task prompts, without an image
    encoder of its own (it decodes the embeddings of ``model``'s encoder, which never trains)."""
    if isinstance(model, SumSam2):
        return _frozen_copy2(model)
    sam = model.sam
    frozen_sam = Sam(_SharedEncoder(model.image_size), copy.deepcopy(sam.prompt_encoder),  # type: ignore[arg-type]
                     copy.deepcopy(sam.mask_decoder), pixel_mean=sam.pixel_mean.flatten().tolist(),
                     pixel_std=sam.pixel_std.flatten().tolist())
    frozen = SumSam(frozen_sam, model.task_prompts.task_ids, model.name).to(sam.pixel_mean.device).eval()
    frozen.task_prompts.load_state_dict(model.task_prompts.state_dict())
    return frozen.requires_grad_(False)


def trainable_parameters(refiner: SumSam | SumSam2) -> list[nn.Parameter]:
    """Freeze everything but the prompt encoder and the mask decoder; return those parameters (SAM 2: less
    the decoder's image side and its idle object-score head, module docstring)."""
    refiner.requires_grad_(False)
    if isinstance(refiner, SumSam2):
        chosen = [p for name, p in refiner.named_parameters()
                  if name.startswith(("sam2.prompt_encoder.", "sam2.mask_decoder."))
                  and not refiner.is_image_side(name) and not refiner.is_idle(name)]
        for p in chosen:
            p.requires_grad_(True)
        return chosen
    parts = (refiner.sam.prompt_encoder, refiner.sam.mask_decoder)
    for part in parts:
        part.requires_grad_(True)
    return [p for part in parts for p in part.parameters()]
