"""SAM 2's image features in the embedding cache: one (4C, h, w) array per image, exactly unpacked.

The embedding cache (:mod:`sumseg.data.embedding_cache`) stores one (C', h, w) array per image. SAM 2's
decoder needs, besides the (C, h, w) embeddings, the two high-resolution levels (C/4, 2h, 2w) and
(C/8, 4h, 4w) (:attr:`ImageFeatures.high_res <sumseg.models.sum_sam.ImageFeatures>`). :func:`pack`
pixel-unshuffles them to (C, h, w) and (2C, h, w) and stacks the three along channels (4C in all: 3× the
embeddings' values, as docs/models.md states); :func:`unpack` is its exact inverse (a permutation).

What the cache stores are the features after every weight they depend on (:data:`IMAGE_SIDE`: the
vision encoder, ``no_memory_embedding``, the decoder's ``conv_s0``/``conv_s1``); the decoder mode freezes
exactly those (:meth:`SumSam2.is_image_side <sumseg.models.sum_sam2.SumSam2.is_image_side>`), and the
fingerprint hashes them.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from sumseg.models.sum_sam import ImageFeatures

if TYPE_CHECKING:
    from sumseg.models.sum_sam2 import SumSam2

CACHE_FORMAT = "sam2-packed-v1|squash+SumSam2.preprocess"
IMAGE_SIDE = ("sam2.vision_encoder.", "sam2.no_memory_embedding", "sam2.mask_decoder.conv_s0.",
              "sam2.mask_decoder.conv_s1.")


def pack(features: ImageFeatures) -> torch.Tensor:
    """(B, C, h, w) embeddings + high-res levels → (B, 4C, h, w): [embeddings, level 2h unshuffled by 2,
    level 4h unshuffled by 4]."""
    assert features.high_res is not None
    fine, mid = features.high_res
    return torch.cat([features.embeddings, F.pixel_unshuffle(mid, 2), F.pixel_unshuffle(fine, 4)], 1)


def unpack(packed: torch.Tensor) -> ImageFeatures:
    """The inverse of :func:`pack` (exact): (B, 4C, h, w) → embeddings and high-res levels."""
    c = packed.shape[1] // 4
    return ImageFeatures(packed[:, :c], high_res=(F.pixel_shuffle(packed[:, 2 * c :], 4),
                                                  F.pixel_shuffle(packed[:, c : 2 * c], 2)))


class Sam2CacheEncoder:
    """What :class:`~sumseg.data.embedding_cache.EmbeddingCache` needs of a SumSam2: the stored shape, a
    fingerprint of everything the features depend on besides the image, and one image's packed features."""

    def __init__(self, model: SumSam2) -> None:
        self.model = model
        c = int(model.sam2.config.mask_decoder_config.hidden_size)
        side = model.image_size // 16
        self.shape: tuple[int, int, int] = (4 * c, side, side)

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{CACHE_FORMAT}|img_size={self.model.image_size}|".encode())
        h.update(self.model.pixel_mean.detach().cpu().double().numpy().tobytes())
        h.update(self.model.pixel_std.detach().cpu().double().numpy().tobytes())
        for name, t in sorted(self.model.state_dict().items()):
            if name.startswith(IMAGE_SIDE):
                h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        """(4C, h, w) float32 packed features of an (H, W, 3) uint8 RGB image (eval mode, as the predictor)."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            image = torch.as_tensor(model.frame.apply_image(rgb), device=model.pixel_mean.device)
            x = model.preprocess(image.permute(2, 0, 1)[None])
            return pack(model.encode(x))[0].float()
        finally:
            model.train(was_training)
