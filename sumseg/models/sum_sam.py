"""``SumSam``: a stock SAM (or HQ-SAM) plus task prompts, with a forward that keeps gradients.

Conventions, defined once here for the whole package:
- images enter ``encode`` already preprocessed: (B, 3, S, S) float, normalised and padded by
  ``preprocess`` (S = ``image_size``; 1024 for official models, 256 for tiny);
- prompts are :class:`sumseg.prompts.batch.PromptBatch` (the one prompt type): point coordinates
  (x, y) pixels in the S×S input frame, labels 1 = positive, 0 = negative, -1 = padding (SAM's
  convention); boxes (x0, y0, x1, y1) in the same frame;
- masks are logits unless a name says otherwise; low-resolution logits are (N, M, 4h, 4w)
  (256×256 for official models, 64×64 for tiny), M = 3 with ``multimask`` else 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import nn

from sumseg.data.embedding_cache import SamCacheEncoder, encode_image
from sumseg.errors import ConfigError
from sumseg.models.registry import build_sam
from sumseg.models.sam_grid import mask_logits_stage, transformer_stage
from sumseg.models.task_prompts import TaskArg, TaskPrompts
from sumseg.prompts.batch import PromptBatch, in_prompt_order
from sumseg.prompts.frames import LongestSideFrame

NO_MASK_KEY = "prompt_encoder.no_mask_embed.weight"


def mask_downscaling_bias_key(sam: Sam) -> str:
    """State-dict key of the bias of the last ``mask_downscaling`` conv."""
    return f"prompt_encoder.mask_downscaling.{len(sam.prompt_encoder.mask_downscaling) - 1}.bias"


@dataclass
class ImageFeatures:
    """Image-encoder output for B images.

    embeddings: (B, C, h, w) image embeddings (C = 256).
    interm: HQ-SAM only: the early ViT features (B, h, w, D) its decoder fuses in; None for SAM.
    high_res: SAM 2 only: the decoder's high-resolution features, (B, C/8, 4h, 4w) and (B, C/4, 2h, 2w)
    (the FPN's two finer levels after the decoder's ``conv_s0``/``conv_s1``); None for SAM 1.
    """

    embeddings: torch.Tensor
    interm: torch.Tensor | None = None
    high_res: tuple[torch.Tensor, torch.Tensor] | None = None

    def select(self, i: int) -> ImageFeatures:
        """Features of image ``i`` alone (batch of 1), as the mask decoder expects."""
        return self.take(slice(i, i + 1))

    def take(self, index: slice | torch.Tensor) -> ImageFeatures:
        """Features of the images ``index`` (a slice or (K,) long indices, repeats allowed)."""
        interm = None if self.interm is None else self.interm[index]
        high_res = None if self.high_res is None else (self.high_res[0][index], self.high_res[1][index])
        return ImageFeatures(self.embeddings[index], interm, high_res)


@dataclass
class GridScores:
    """The three multimask outputs of n single positive points on one image, scored before their logits.

    iou: (n, 3) float32 predicted IoUs (−inf where ``present`` is False); present: (n, 3) bool, False
    where the model finds no object at the point (SAM 2's object score ≤ 0), or None (SAM 1: no such
    score); logits: (r,) long indices of points → their (r, 3, L, L) low-res logits (computed on demand).
    """

    iou: torch.Tensor
    present: torch.Tensor | None
    logits: Callable[[torch.Tensor], torch.Tensor]


class SumSam(nn.Module):
    """SAM with one zero-initialised task prompt per task id.

    ``name`` is the registry name the model was built as (it travels in checkpoints).
    """

    def __init__(self, sam: Sam, task_ids: Sequence[int], name: str) -> None:
        super().__init__()
        self.sam = sam
        self.task_prompts = TaskPrompts(task_ids, sam.prompt_encoder.embed_dim)
        self.name = name
        self.is_hq = hasattr(sam.mask_decoder, "hf_token")

    @property
    def image_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    @property
    def frame(self) -> LongestSideFrame:
        """The image → input-frame geometry: ``ResizeLongestSide(S)`` (:mod:`sumseg.prompts.frames`)."""
        return LongestSideFrame(self.image_size)

    @property
    def mask_threshold(self) -> float:
        """Logits above it are mask pixels (SAM's 0.0)."""
        return float(self.sam.mask_threshold)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (``sam.pixel_mean``'s device): its inputs go there."""
        return self.sam.pixel_mean.device

    def new_like(self) -> SumSam:
        """A new model of this architecture and these task ids, as ``build_sam(name, seed=None)`` builds it (CPU)."""
        return SumSam(build_sam(self.name, seed=None), self.task_prompts.task_ids, self.name)

    def encoder_blocks(self) -> tuple[str, nn.Module]:
        """(parameter-name prefix, module) of the image encoder whose ``blocks`` layer decay and LoRA use."""
        return "sam.image_encoder.", self.sam.image_encoder

    def is_image_side(self, name: str) -> bool:
        """Whether the parameter ``name`` computes the image features (frozen in modes decoder and lora)."""
        return name.startswith("sam.image_encoder.")

    def is_idle(self, name: str) -> bool:
        """Whether no SUM loss term reaches the parameter ``name`` (frozen in every mode): none of SAM's."""
        return False

    def cache_encoder(self) -> SamCacheEncoder:
        """What the embedding cache stores of this model: the image embeddings of ``sam``
        (:class:`~sumseg.data.embedding_cache.SamCacheEncoder`; HQ-SAM is refused with ConfigError)."""
        return SamCacheEncoder(self.sam)

    def encode_rgb(self, rgb: np.ndarray) -> torch.Tensor:
        """(C, h, w) float32 embeddings of an (H, W, 3) uint8 RGB image, as ``SamPredictor`` computes them
        (:func:`~sumseg.data.embedding_cache.encode_image`): one row as the embedding cache stores it."""
        return encode_image(self.sam, rgb)

    def cached_features(self, cached: torch.Tensor) -> ImageFeatures:
        """The embedding cache's (B, C, h, w) rows → features (they are the embeddings)."""
        return ImageFeatures(cached)

    def grid_scores(self, features: ImageFeatures, coords: torch.Tensor) -> GridScores:
        """:class:`GridScores` of n points (n, 2) xy in the input frame on ONE image (``features`` of batch 1),
        task prompt off: the decoder split at its IoU head (:mod:`sumseg.models.sam_grid`), the logits'
        stage run only for the rows asked for. HQ-SAM (one output per prompt) is refused with ConfigError."""
        if self.is_hq:
            raise ConfigError(f"pseudo-labels need a SAM model; {self.name} is HQ-SAM (one output per prompt)")
        hs, src, iou = transformer_stage(self, features.embeddings, coords)
        shape = (int(features.embeddings.shape[-2]), int(features.embeddings.shape[-1]))
        return GridScores(iou, None, lambda rows: mask_logits_stage(self, hs[rows], src[rows], shape))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in 0..255, longest side resized to ``image_size`` → normalised, padded."""
        return self.sam.preprocess(images)

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Run the image encoder on preprocessed images (B, 3, S, S)."""
        out = self.sam.image_encoder(images)
        if self.is_hq:
            embeddings, interm = out
            return ImageFeatures(embeddings, interm[0])
        return ImageFeatures(out)

    def prompt_embeddings(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        task: TaskArg,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (N, n_tokens, C) and dense (N, C, h, w) prompt embeddings, task prompt added.

        points: ((N, P, 2) xy coordinates, (N, P) labels); boxes: (N, 4) xyxy;
        mask_inputs: (N, 1, 4h, 4w) logits of an earlier prediction.
        """
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
        return sparse, self.task_prompts(dense, task)

    def decode(
        self,
        features: ImageFeatures,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        task: TaskArg = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompts on ONE image (``features`` of batch 1, as SAM's decoder requires).

        Returns low-resolution mask logits (N, M, 4h, 4w) and predicted IoUs (N, M).
        """
        sparse, dense = self.prompt_embeddings(points, boxes, mask_inputs, task)
        kwargs = {}
        if self.is_hq:
            kwargs = {"hq_token_only": False, "interm_embeddings": [features.interm]}
        return self.sam.mask_decoder(
            image_embeddings=features.embeddings,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            **kwargs,
        )

    def forward(
        self,
        features: ImageFeatures,
        prompts: PromptBatch,
        mask_inputs: torch.Tensor | None = None,
        task: TaskArg = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompts spread over the B images of ``features`` (the module DDP wraps).

        SAM's prompt encoder embeds a box for every prompt of a call or for none, so each image's
        prompts are split into a with-box and a without-box group (one :meth:`decode` each); point
        columns whose label is -1 for a whole group are dropped (a box-first mask has no round-1
        point). Outputs come back in prompt order: low-res logits (N, M, 4h, 4w), IoUs (N, M).
        ``mask_inputs``: (N, 1, 4h, 4w) or None; ``task``: one id, (N,) ids or None.
        """
        pieces: list[tuple[torch.Tensor, ...]] = []
        for b in prompts.image_index.unique().tolist():
            for g in prompts.box_groups(prompts.image_index == b, mask_inputs, task):
                pieces.append((g.sel, *self.decode(features.select(b), g.points, g.boxes, g.mask_inputs, g.task,
                                                   multimask)))
        low, iou = in_prompt_order(pieces)
        return low, iou

    def upscale(
        self, low_res: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Low-res logits (N, M, 4h, 4w) → logits at the original image size (N, M, H, W)."""
        return self.sam.postprocess_masks(low_res, input_size, original_size)

    def stock_state_dict(self, task: int) -> dict[str, torch.Tensor]:
        """Stock SAM state_dict (CPU tensors) with task ``task``'s prompt folded in: its embedding e is
        added to ``no_mask_embed`` and to the bias of the last ``mask_downscaling`` conv, the two places
        SAM's dense prompt comes from (with and without a mask input)."""
        state = {k: v.detach().cpu().clone() for k, v in self.sam.state_dict().items()}
        e = self.task_prompts.embedding(task).detach().cpu()
        state[NO_MASK_KEY] = state[NO_MASK_KEY] + e[None, :]
        bias = mask_downscaling_bias_key(self.sam)
        state[bias] = state[bias] + e
        return state


def input_size(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(h, w) of the image inside the S×S model input: ResizeLongestSide's rounding, no padding."""
    scale = image_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def lowres_to_image(maps: torch.Tensor, image_size: int, hw: tuple[int, int]) -> torch.Tensor:
    """(K, L, L) low-res maps → (K, H, W) in image pixels: exactly ``Sam.postprocess_masks``.

    Bilinear to S×S, crop the resized image's (h, w), bilinear to the original (H, W) — skipped when
    (h, w) = (H, W): bilinear resampling to the same size is the identity (exactly).
    """
    x = torch.nn.functional.interpolate(maps[:, None].float(), (image_size, image_size), mode="bilinear",
                                        align_corners=False)
    h, w = input_size(hw[0], hw[1], image_size)
    x = x[..., :h, :w]
    if (h, w) != tuple(hw):
        x = torch.nn.functional.interpolate(x, hw, mode="bilinear", align_corners=False)
    return x[:, 0]
