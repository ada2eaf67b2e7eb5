"""Training batches: masks of a few images in the model's input frame, with targets and confidence.

Frames (the model's :attr:`~sumseg.models.interface.PromptableModel.frame`): for SAM 1 an image of size
(H, W) is resized so its longest side is S (``image_size``) and padded bottom/right to S×S — the *input
frame*; for SAM 2 it is resized to S×S. The decoder's low-resolution frame is
(4h, 4w) = (S/4, S/4) and covers the whole padded input; a low-res pixel (i, j) covers input pixels
[4i, 4i + 4) × [4j, 4j + 4). Prompts (points, boxes) are (x, y) pixels of the input frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sumseg.models.interface import PromptableModel, frame_kind, map_lowres
from sumseg.prompts.frames import InputFrame


@dataclass
class MaskSample:
    """One image and the masks drawn from it for a step (K ≥ 1 masks).

    image: (H, W, 3) uint8 RGB; masks: (K, H, W) bool targets; ignore: (H, W) bool or None;
    confidence: (K, 4h, 4w) float32 ``c = 1 − U`` in the low-res frame, or None (c ≡ 1);
    tasks: (K,) int64 task ids; pseudo: the masks are pseudo-labels (not human labels);
    confidence_frame: the low-res frame ``confidence`` is in (the store's ``frame``:
    :data:`~sumseg.models.interface.FrameKind`).
    """

    image: np.ndarray
    masks: np.ndarray
    tasks: np.ndarray
    ignore: np.ndarray | None = None
    confidence: Tensor | None = None
    pseudo: bool = False
    confidence_frame: str = "longest_side"


@dataclass
class MaskBatch:
    """N masks over B images, ready for the interactive step (frames in the module docstring).

    images: (B, 3, S, S) preprocessed (normalised, padded), or None when ``embeddings`` are given;
    embeddings: (B, C', h, w) the embedding cache's rows (frozen encoder; ``model.cached_features`` reads
    them: SAM 1's embeddings, SAM 2's packed with its high-res levels), or None;
    image_index: (N,) int64, the image of each mask;
    gt: (N, S, S) bool masks in the input frame (False on padding);
    ignore: (N, S, S) bool pixels no prompt is drawn from (padding and the dataset's ignore map);
    target: (N, 4h, 4w) float32 fraction of each low-res pixel inside the mask;
    confidence: (N, 4h, 4w) float32 c of the label in the low-res frame: 1 for human labels and
    self-training, 1 − U for SUM's pseudo-labels (ignored and padding pixels are ``ignore``'s:
    :meth:`confidence_lowres` / :meth:`confidence_input` give c with them at 0);
    tasks: (N,) int64 task ids; pseudo: (N,) bool, the mask is a pseudo-label.
    """

    images: Tensor | None
    embeddings: Tensor | None
    image_index: Tensor
    gt: Tensor
    ignore: Tensor
    target: Tensor
    confidence: Tensor
    tasks: Tensor
    pseudo: Tensor

    def to(self, device: torch.device | str) -> MaskBatch:
        def opt(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return MaskBatch(opt(self.images), opt(self.embeddings), self.image_index.to(device), self.gt.to(device),
                         self.ignore.to(device), self.target.to(device), self.confidence.to(device),
                         self.tasks.to(device), self.pseudo.to(device))

    def confidence_lowres(self) -> Tensor:
        """(N, 4h, 4w) c, 0 on every low-res pixel not wholly inside the valid (not ignored) input."""
        low = self.confidence.shape[-1]
        valid = F.interpolate((~self.ignore[:, None]).float(), size=(low, low), mode="area")[:, 0] == 1
        return self.confidence * valid

    def confidence_input(self) -> Tensor:
        """(N, S, S) c in the input frame: the low-res map upsampled bilinearly, 0 on ignored pixels."""
        size = self.gt.shape[-1]
        up = F.interpolate(self.confidence[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        return up.clamp(0, 1) * ~self.ignore


def _to_input_frame(masks: np.ndarray, frame: InputFrame) -> Tensor:
    """(K, H, W) bool → (K, S, S) bool: nearest-neighbour resize to the image's size in the model's input
    frame (SAM 1: the longest side to S, padded; SAM 2: S×S)."""
    k, h, w = masks.shape
    size = frame.target_length
    nh, nw = frame.input_size((h, w))
    out = np.zeros((k, size, size), dtype=bool)
    for i in range(k):
        m = masks[i] if (nh, nw) == (h, w) else cv2.resize(
            masks[i].astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
        out[i, :nh, :nw] = m
    return torch.from_numpy(out)


def _confidence(conf: Tensor, hw: tuple[int, int], model: PromptableModel, src: str) -> Tensor:
    """(K, L, L) c of the store (in its low-res frame ``src``, the pseudo-labels' model's) in ``model``'s
    low-res frame: itself when the frames agree, else mapped through the image
    (:func:`~sumseg.models.interface.map_lowres`; SAM 1 → SAM 2: ``lowres_to_image``, resized to L×L)."""
    dst = frame_kind(model)
    return map_lowres(conf.float(), src, dst, model.image_size, hw)


def collate(samples: list[MaskSample], model: PromptableModel, embeddings: Tensor | None = None) -> MaskBatch:
    """Build a :class:`MaskBatch` from ``samples`` (one per image), preprocessing as SamPredictor does
    (the model's :attr:`~sumseg.models.interface.PromptableModel.frame`).

    With ``embeddings`` ((B, C, h, w), the embedding cache's rows) the images are not preprocessed.
    """
    size = model.image_size
    low = size // 4
    resize = model.frame
    device = model.device
    images, gts, ignores, confs, index, pseudo = [], [], [], [], [], []
    for b, s in enumerate(samples):
        h, w = s.image.shape[:2]
        k = len(s.masks)
        if embeddings is None:
            img = torch.as_tensor(resize.apply_image(s.image)).permute(2, 0, 1)[None].float()
            images.append(model.preprocess(img.to(device)))
        outside = np.ones((1, h, w), dtype=bool) if s.ignore is None else ~s.ignore[None]
        valid = _to_input_frame(outside, resize)  # (1, S, S): inside the image and not ignored
        gts.append(_to_input_frame(s.masks, resize))
        ignores.append((~valid).expand(k, -1, -1))
        confs.append(torch.ones(k, low, low) if s.confidence is None else _confidence(s.confidence, (h, w), model,
                                                                                     s.confidence_frame))
        index.append(torch.full((k,), b, dtype=torch.long))
        pseudo.append(torch.full((k,), s.pseudo, dtype=torch.bool))
    gt = torch.cat(gts)
    target = F.interpolate(gt[:, None].float(), size=(low, low), mode="area")[:, 0]
    return MaskBatch(
        images=torch.cat(images) if embeddings is None else None,
        embeddings=embeddings,
        image_index=torch.cat(index),
        gt=gt,
        ignore=torch.cat(ignores),
        target=target,
        confidence=torch.cat(confs),
        tasks=torch.as_tensor(np.concatenate([s.tasks for s in samples]), dtype=torch.long),
        pseudo=torch.cat(pseudo),
    )
