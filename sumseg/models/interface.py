"""The model interface: what the pipeline, the trainer, the refiner, evaluation and export call.

:class:`~sumseg.models.sum_sam.SumSam` implements it for SAM 1 and HQ-SAM. A second backbone
(SAM 2.1 through ``transformers``) is :class:`~sumseg.models.sum_sam2.SumSam2`. The image → input-frame
geometry is a member (:attr:`PromptableModel.frame`), so that consumers map image pixels as the model
does. Frames and shapes are those of
:mod:`sumseg.models.sum_sam` (S×S input frame, low-res L×L logits, L = 4·S/16); prompts are the one
prompt type, :class:`sumseg.prompts.batch.PromptBatch` (its frames stated there).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from sumseg.models.sum_sam import ImageFeatures
from sumseg.models.task_prompts import TaskArg
from sumseg.prompts.batch import PromptBatch
from sumseg.prompts.frames import InputFrame


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

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) RGB 0..255, ``frame.apply_image``'d → the normalised (B, 3, S, S) model input."""
        ...

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Preprocessed images (B, 3, S, S) → their features (embeddings (B, C, h, w), backbone extras)."""
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
