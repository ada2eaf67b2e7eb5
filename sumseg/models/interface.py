"""The model interface: what the pipeline, the trainer, the refiner, evaluation and export call.

:class:`~sumseg.models.sum_sam.SumSam` implements it for SAM 1 and HQ-SAM. A second backbone
(SAM 2.1 through ``transformers``) is :class:`~sumseg.models.sum_sam2.SumSam2`. The image → input-frame
geometry is a member (:attr:`PromptableModel.frame`), so that consumers map image pixels as the model
does; so are what the embedding cache stores of it (:meth:`PromptableModel.cache_encoder`), the automatic
mask generator's grid decoding (:meth:`PromptableModel.grid_scores`) and a fresh model of its architecture
(:meth:`PromptableModel.new_like`): the pipeline, the trainer and evaluation call these instead of asking
which backbone they have. Frames and shapes are those of
:mod:`sumseg.models.sum_sam` (S×S input frame, low-res L×L logits, L = 4·S/16); prompts are the one
prompt type, :class:`sumseg.prompts.batch.PromptBatch` (its frames stated there).
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch.nn import functional as F

from sumseg.data.embedding_cache import CacheEncoder
from sumseg.models.sum_sam import GridScores, ImageFeatures, lowres_to_image
from sumseg.models.task_prompts import TaskArg
from sumseg.prompts.batch import PromptBatch
from sumseg.prompts.frames import InputFrame, SquashFrame

FrameKind = Literal["longest_side", "squash"]
"""How a low-res (L, L) map covers the image: ``"longest_side"`` (SAM 1: over the padded S×S input, the
image in its top-left) or ``"squash"`` (SAM 2: the whole image, squashed). A pseudo-label store's
``meta.json`` says ``frame`` (absent: ``"longest_side"``, the stores made before SAM 2)."""


@runtime_checkable
class PromptableModel(Protocol):
    """A promptable segmentation model with task prompts (module docstring)."""

    @property
    def image_size(self) -> int:
        """S, the side of the square model input."""
        ...

    @property
    def frame(self) -> InputFrame:
        """The image → input-frame geometry (:mod:`sumseg.prompts.frames`): the input size of an (H, W)
        image and where its pixels land (SAM 1: ``ResizeLongestSide``; SAM 2: squashed to S×S)."""
        ...

    @property
    def mask_threshold(self) -> float:
        """Logits above it are mask pixels."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: its inputs go there."""
        ...

    def new_like(self) -> PromptableModel:
        """A new model of this one's architecture and task ids, as its registry builds it (``seed=None``, on the
        CPU): what a LoRA run's saver loads the merged weights into."""
        ...

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) RGB 0..255, ``frame.apply_image``'d → the normalised (B, 3, S, S) model input."""
        ...

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Preprocessed images (B, 3, S, S) → their features (embeddings (B, C, h, w), backbone extras)."""
        ...

    def cache_encoder(self) -> CacheEncoder:
        """What :class:`~sumseg.data.embedding_cache.EmbeddingCache` stores of this model: one (C', h, w) row
        per image and a fingerprint of everything the row depends on besides the image."""
        ...

    def encode_rgb(self, rgb: np.ndarray) -> torch.Tensor:
        """(C', h, w) float32 row of an (H, W, 3) uint8 RGB image, computed now (eval mode, no gradients), as
        the embedding cache stores it."""
        ...

    def cached_features(self, cached: torch.Tensor) -> ImageFeatures:
        """(B, C', h, w) rows (the embedding cache's, or :meth:`encode_rgb`'s) → the features of B images."""
        ...

    def grid_scores(self, features: ImageFeatures, coords: torch.Tensor) -> GridScores:
        """The three multimask outputs of n single positive points (n, 2) xy in the input frame on ONE image
        (``features`` of batch 1), task prompt off: predicted IoUs now, logits for the rows asked for
        (:class:`~sumseg.models.sum_sam.GridScores`; the automatic mask generator's grid)."""
        ...

    def __call__(self, features: ImageFeatures, prompts: PromptBatch, mask_inputs: torch.Tensor | None = None,
                 task: TaskArg = None, multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """N prompts over the B images of ``features`` (+ (N, 1, L, L) mask inputs, task ids) →
        low-res logits (N, M, L, L) and predicted IoUs (N, M); M = 3 with ``multimask`` else 1."""
        ...

    def upscale(self, low_res: torch.Tensor, input_size: tuple[int, ...],
                original_size: tuple[int, ...]) -> torch.Tensor:
        """Low-res logits (N, M, L, L) → logits at the original image size (N, M, H, W)."""
        ...

    def stock_state_dict(self, task: int) -> dict[str, torch.Tensor]:
        """The backbone's own state_dict (CPU tensors) with task ``task``'s prompt folded into its
        weights: the stock model loaded from it predicts what this model predicts for ``task``."""
        ...


def frame_kind(model: PromptableModel) -> FrameKind:
    """The :data:`FrameKind` of ``model``'s low-res logits (a model without a ``frame``: SAM 1's)."""
    return "squash" if isinstance(getattr(model, "frame", None), SquashFrame) else "longest_side"


def lowres_to_image_in(kind: str, maps: torch.Tensor, image_size: int, hw: tuple[int, int]) -> torch.Tensor:
    """(K, L, L) low-res maps of frame ``kind`` → (K, H, W) image pixels: SAM 1's ``postprocess_masks``
    (:func:`~sumseg.models.sum_sam.lowres_to_image`, exactly) or SAM 2's one bilinear resize."""
    if kind == "squash":
        return F.interpolate(maps[:, None].float(), tuple(hw), mode="bilinear", align_corners=False)[:, 0]
    return lowres_to_image(maps, image_size, hw)


def image_to_lowres_in(kind: str, maps: torch.Tensor, image_size: int) -> torch.Tensor:
    """(K, H, W) image-pixel maps → (K, L, L) in the low-res frame ``kind`` (L = S/4): squash, a bilinear
    antialiased resize; longest side, bilinear to the image's size in the input, zero padding to S×S, then
    an area mean over each low-res pixel's 4×4 input pixels."""
    low = image_size // 4
    x = maps[:, None].float()
    if kind == "squash":
        return F.interpolate(x, (low, low), mode="bilinear", align_corners=False, antialias=True)[:, 0]
    h, w = maps.shape[-2:]
    scale = image_size / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False, antialias=True)
    x = F.pad(x, (0, image_size - nw, 0, image_size - nh))
    return F.interpolate(x, (low, low), mode="area")[:, 0]


def map_lowres(maps: torch.Tensor, src: str, dst: str, image_size: int, hw: tuple[int, int]) -> torch.Tensor:
    """(K, L, L) maps of an (H, W) image from low-res frame ``src`` to frame ``dst`` (itself when they agree)."""
    if src == dst:
        return maps.float()
    return image_to_lowres_in(dst, lowres_to_image_in(src, maps, image_size, hw), image_size)
