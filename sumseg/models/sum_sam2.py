"""``SumSam2``: ``transformers``' ``Sam2Model`` (image mode) plus task prompts, the model interface for SAM 2.1.

It implements :class:`~sumseg.models.interface.PromptableModel` as :class:`~sumseg.models.sum_sam.SumSam`
does for SAM 1, on the same conventions (prompts in the S×S input frame, logits, low-res L = 4·S/16),
with SAM 2's own differences:

- input: the image resized to S×S *without* keeping its aspect ratio (Meta's ``SAM2Transforms`` and
  ``Sam2ImageProcessor``), RGB scaled to 0..1 and normalised with ImageNet's mean/std (:meth:`preprocess`);
  so the whole input is the image and :meth:`upscale` resizes low-res logits straight to the image's
  size (Meta's ``postprocess_masks``), ignoring ``input_size``;
- features: the image embeddings (the FPN's coarsest level plus ``no_memory_embedding``, as Sam2Model's
  image mode adds it) and the two high-resolution levels after the decoder's ``conv_s0``/``conv_s1``
  (:attr:`ImageFeatures.high_res <sumseg.models.sum_sam.ImageFeatures>`), which the decoder adds in
  while upscaling;
- the decoder also predicts an object score (:meth:`predict`); with ``multimask`` off, in eval mode,
  it falls back to the best of its three outputs when output 0 is unstable (transformers' and Meta's
  ``dynamic_multimask_via_stability``); in train mode it returns output 0;
- the task prompt is added to the dense prompt embedding exactly as in ``SumSam``: both of its sources
  are folded by :meth:`stock_state_dict` (``no_mask_embed`` and the bias of ``mask_embed.conv3``, the
  mask-embedding stack's last 1×1 conv).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sumseg.models.sam2_arch import PIXEL_MEAN, PIXEL_STD, build_sam2
from sumseg.models.sam2_cache import IMAGE_SIDE, Sam2CacheEncoder, unpack
from sumseg.models.sum_sam import GridScores, ImageFeatures
from sumseg.models.task_prompts import TaskArg, TaskPrompts
from sumseg.prompts.batch import PromptBatch, in_prompt_order
from sumseg.prompts.frames import SquashFrame

NO_MASK_KEY2 = "prompt_encoder.no_mask_embed.weight"
MASK_EMBED_BIAS_KEY = "prompt_encoder.mask_embed.conv3.bias"


def _count(points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
           mask_inputs: torch.Tensor | None) -> int:
    """N, the number of prompts, from whichever of the three is given."""
    for t in (None if points is None else points[0], boxes, mask_inputs):
        if t is not None:
            return int(t.shape[0])
    raise ValueError("a prompt needs points, a box or a mask input")


class SumSam2(nn.Module):
    """A ``transformers.Sam2Model`` with one zero-initialised task prompt per task id (module docstring).

    ``name`` is the registry name the model was built as (:data:`~sumseg.models.sam2_arch.SAM2_ARCHS`).
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, sam2: Any, task_ids: Sequence[int], name: str) -> None:  # noqa: ANN401
        super().__init__()
        self.sam2 = sam2
        self.task_prompts = TaskPrompts(task_ids, sam2.config.prompt_encoder_config.hidden_size)
        self.name = name
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return int(self.sam2.config.prompt_encoder_config.image_size)

    @property
    def frame(self) -> SquashFrame:
        """The image → input-frame geometry: the image squashed to S×S (:mod:`sumseg.prompts.frames`)."""
        return SquashFrame(self.image_size)

    @property
    def mask_threshold(self) -> float:
        """Logits above it are mask pixels (0.0, as SAM 2's predictor)."""
        return 0.0

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (``pixel_mean``'s device): its inputs go there."""
        return self.pixel_mean.device

    def new_like(self) -> SumSam2:
        """A new model of this architecture and these task ids, as ``build_sam2(name, seed=None)`` builds it (CPU)."""
        return SumSam2(build_sam2(self.name, seed=None), self.task_prompts.task_ids, self.name)

    def encoder_blocks(self) -> tuple[str, nn.Module]:
        """(parameter-name prefix, module) of the Hiera trunk whose ``blocks`` layer decay and LoRA use."""
        return "sam2.vision_encoder.backbone.", self.sam2.vision_encoder.backbone

    def is_image_side(self, name: str) -> bool:
        """Whether the parameter ``name`` computes the image features (frozen in modes decoder and lora):
        the vision encoder, ``no_memory_embedding`` and the decoder's ``conv_s0``/``conv_s1``."""
        return name.startswith(IMAGE_SIDE)

    def is_idle(self, name: str) -> bool:
        """Whether no SUM loss term reaches the parameter ``name`` (frozen in every mode): the object-score
        head (``pred_obj_score_head``), whose score the mask and IoU losses do not use."""
        return name.startswith("sam2.mask_decoder.pred_obj_score_head.")

    def cache_encoder(self) -> Sam2CacheEncoder:
        """What the embedding cache stores of this model: :class:`~sumseg.models.sam2_cache.Sam2CacheEncoder`."""
        return Sam2CacheEncoder(self)

    def encode_rgb(self, rgb: np.ndarray) -> torch.Tensor:
        """(4C, h, w) float32 packed features of an (H, W, 3) uint8 RGB image: one row as the embedding cache
        stores it (:meth:`Sam2CacheEncoder.encode <sumseg.models.sam2_cache.Sam2CacheEncoder.encode>`)."""
        return self.cache_encoder().encode(rgb)

    def cached_features(self, cached: torch.Tensor) -> ImageFeatures:
        """The embedding cache's (B, 4C, h, w) rows → features (:func:`~sumseg.models.sam2_cache.unpack`)."""
        return unpack(cached)

    def grid_scores(self, features: ImageFeatures, coords: torch.Tensor) -> GridScores:
        """:class:`~sumseg.models.sum_sam.GridScores` of n points (n, 2) xy in the input frame on ONE image
        (``features`` of batch 1, with the high-res levels): :meth:`predict`, three outputs each, task prompt
        off; a point whose object-score logit is ≤ 0 is not ``present`` and its IoUs are −inf."""
        if features.high_res is None:
            raise TypeError("a SAM 2 model decodes ImageFeatures (with their high-res levels)")
        pts = coords.float()[:, None, :]
        n = pts.shape[0]
        labels = torch.ones(n, 1, dtype=torch.long, device=pts.device)
        index = torch.zeros(n, dtype=torch.long, device=pts.device)
        low, iou, obj = self.predict(features.take(index), (pts, labels), None, None, None, multimask=True)
        present = (obj > 0)[:, None].expand_as(iou)
        iou = torch.where(present, iou.float(), torch.full_like(iou, -torch.inf, dtype=torch.float))
        return GridScores(iou, present, lambda rows: low[rows].float())

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in 0..255 → resized to S×S (bilinear, antialiased), 0..1, normalised."""
        s = self.image_size
        x = images.float() / 255.0
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Preprocessed images (B, 3, S, S) → embeddings (B, C, h, w) and the two high-res levels (with
        gradients: ``Sam2Model.get_image_embeddings`` computes the same under ``no_grad``)."""
        maps = self.sam2.get_image_features(images, return_dict=True).fpn_hidden_states  # each (hw, B, C)
        sizes = self.sam2.backbone_feature_sizes
        b = images.shape[0]
        out = [m.permute(1, 2, 0).reshape(b, -1, *size) for m, size in zip(maps, sizes, strict=True)]
        embeddings = out[-1] + self.sam2.no_memory_embedding.reshape(1, -1, 1, 1)
        return ImageFeatures(embeddings, high_res=(out[0], out[1]))

    def prompt_embeddings(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        task: TaskArg,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (N, 1, n_tokens, C) and dense (N, C, h, w) prompt embeddings of N prompts, task prompt added.

        points: ((N, P, 2) xy, (N, P) labels, -1 = no point); boxes: (N, 4) xyxy; mask_inputs: (N, 1, L, L).
        With neither points nor a box, each prompt gets one padding point (as ``Sam2Model.forward``).
        """
        n = _count(points, boxes, mask_inputs)
        if points is None and boxes is None:
            device = self.sam2.no_memory_embedding.device
            points = (torch.zeros(n, 1, 2, device=device), -torch.ones(n, 1, dtype=torch.long, device=device))
        sparse, dense = self.sam2.prompt_encoder(
            input_points=None if points is None else points[0][:, None],
            input_labels=None if points is None else points[1][:, None].long(),
            input_boxes=None if boxes is None else boxes[:, None],
            input_masks=mask_inputs,
        )
        return sparse, self.task_prompts(dense.expand(n, -1, -1, -1), task)

    def predict(
        self,
        features: ImageFeatures,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        task: TaskArg = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode N prompts, prompt k on image k of ``features`` (N images: :meth:`ImageFeatures.take`).

        Returns low-res logits (N, M, L, L), predicted IoUs (N, M) and object-score logits (N,).
        """
        if features.high_res is None:
            raise ValueError("SAM 2 features need their high-resolution levels (ImageFeatures.high_res)")
        sparse, dense = self.prompt_embeddings(points, boxes, mask_inputs, task)
        n = sparse.shape[0]
        pe = self.sam2.get_image_wide_positional_embeddings().expand(n, -1, -1, -1)
        low, iou, _, obj = self.sam2.mask_decoder(
            image_embeddings=features.embeddings, image_positional_embeddings=pe,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
            high_resolution_features=list(features.high_res),
        )
        return low[:, 0], iou[:, 0], obj[:, 0, 0]

    def decode(
        self,
        features: ImageFeatures,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        task: TaskArg = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompts on ONE image (``features`` of batch 1), as :meth:`SumSam.decode`."""
        n = _count(points, boxes, mask_inputs)
        index = torch.zeros(n, dtype=torch.long, device=features.embeddings.device)
        low, iou, _ = self.predict(features.take(index), points, boxes, mask_inputs, task, multimask)
        return low, iou

    def forward_with_scores(
        self,
        features: ImageFeatures,
        prompts: PromptBatch,
        mask_inputs: torch.Tensor | None = None,
        task: TaskArg = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` plus the object-score logits (N,)."""
        pieces: list[tuple[torch.Tensor, ...]] = []
        every = torch.ones(len(prompts), dtype=torch.bool, device=prompts.has_box.device)
        for g in prompts.box_groups(every, mask_inputs, task):  # a call embeds a box for all its prompts or none
            pieces.append((g.sel, *self.predict(features.take(prompts.image_index[g.sel]), g.points, g.boxes,
                                                g.mask_inputs, g.task, multimask)))
        low, iou, obj = in_prompt_order(pieces)
        return low, iou, obj

    def forward(
        self,
        features: ImageFeatures,
        prompts: PromptBatch,
        mask_inputs: torch.Tensor | None = None,
        task: TaskArg = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """N prompts over the B images of ``features`` → low-res logits (N, M, L, L), IoUs (N, M), in prompt
        order (the interface's ``__call__``; prompts with and without a box are decoded in two groups)."""
        low, iou, _ = self.forward_with_scores(features, prompts, mask_inputs, task, multimask)
        return low, iou

    def upscale(
        self, low_res: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Low-res logits (N, M, L, L) → logits at the original image size (N, M, H, W): one bilinear resize
        (the S×S input is the whole image; ``input_size`` is not used)."""
        return F.interpolate(low_res, tuple(original_size[-2:]), mode="bilinear", align_corners=False)

    def stock_state_dict(self, task: int) -> dict[str, torch.Tensor]:
        """``Sam2Model`` state_dict (CPU tensors) with task ``task``'s prompt e folded in: e is added to
        ``no_mask_embed`` and to the bias of ``mask_embed.conv3``, the two sources of the dense prompt."""
        state = {k: v.detach().cpu().clone() for k, v in self.sam2.state_dict().items()}
        e = self.task_prompts.embedding(task).detach().cpu()
        state[NO_MASK_KEY2] = state[NO_MASK_KEY2] + e[None, :]
        state[MASK_EMBED_BIAS_KEY] = state[MASK_EMBED_BIAS_KEY] + e
        return state
