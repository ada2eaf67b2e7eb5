"""Name → builder registry for the SAM variants sumseg fine-tunes.

Every builder returns a stock ``segment_anything`` (or ``segment_anything_hq``) ``Sam`` with
random weights. Official sizes use the official builders; ``tiny`` configurations use the same
classes, shrunk to run on a CPU (256-px input, 16×16 image embeddings, 4 ViT blocks).
Weights are loaded by :mod:`sumseg.models.checkpoint`, never here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial

import segment_anything.modeling
import torch
from segment_anything.modeling import Sam

from sumseg.errors import ConfigError
from sumseg.model_names import MODEL_NAMES

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamArch:
    """Architecture arguments of one SAM variant (stored in every checkpoint's metadata)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    hq: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        return d


_VIT_H = SamArch(1280, 32, 16, (7, 15, 23, 31))
_VIT_L = SamArch(1024, 24, 16, (5, 11, 17, 23))
_VIT_B = SamArch(768, 12, 12, (2, 5, 8, 11))
_TINY = SamArch(96, 4, 3, (1, 3), image_size=256, window_size=8, decoder_mlp_dim=1024)

ARCHS: dict[str, SamArch] = {
    "vit_h": _VIT_H,
    "vit_l": _VIT_L,
    "vit_b": _VIT_B,
    "tiny": _TINY,
    "hq_vit_h": replace(_VIT_H, hq=True),
    "hq_vit_l": replace(_VIT_L, hq=True),
    "hq_vit_b": replace(_VIT_B, hq=True),
    "hq_tiny": replace(_TINY, hq=True),
}
if set(ARCHS) != set(MODEL_NAMES):  # pragma: no cover - the two tables are edited together
    raise RuntimeError("sumseg.model_names.MODEL_NAMES must list the registry's architectures")


def official_builder(name: str) -> Callable[..., Sam]:
    """The official package's own builder of an official size: ``builder(checkpoint=None | path)``.

    ``segment_anything.sam_model_registry[name]``, or the HQ package's registry for ``hq_*``.
    """
    if ARCHS[name].hq:
        return import_hq().sam_model_registry[name.removeprefix("hq_")]
    from segment_anything import sam_model_registry

    return sam_model_registry[name]


def import_hq():  # noqa: ANN202 - returns a module
    try:
        with warnings.catch_warnings():  # its timm imports and registrations warn on every import
            warnings.simplefilter("ignore")
            import segment_anything_hq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "HQ-SAM models need the optional extra: pip install 'sumseg[hq]' "
            f"(segment-anything-hq and timm); import failed: {e}"
        ) from e
    return segment_anything_hq


def _build_from_arch(arch: SamArch) -> Sam:
    """Build SAM (or HQ-SAM) classes from explicit architecture arguments."""
    m = import_hq().modeling if arch.hq else segment_anything.modeling
    decoder = partial(m.MaskDecoderHQ, vit_dim=arch.encoder_embed_dim) if arch.hq else m.MaskDecoder
    emb = arch.image_size // arch.patch_size
    return m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.encoder_global_attn_indexes,
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=decoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(
                depth=2, embedding_dim=arch.prompt_embed_dim, mlp_dim=arch.decoder_mlp_dim, num_heads=8
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


def is_tiny(name: str) -> bool:
    """Tiny configurations have no official builder: sumseg builds them from the same classes."""
    return ARCHS[name].image_size != 1024


def build_sam(name: str, seed: int | None = 0) -> Sam:
    """Build the stock SAM module for ``name`` with random (seeded) weights, in train mode.

    Official sizes go through the official builders, so their parameter names and shapes are
    exactly those of the released ``.pth`` files. ``tiny``/``hq_tiny`` use the same classes.
    """
    if name not in ARCHS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        sam = _build_from_arch(ARCHS[name]) if is_tiny(name) else official_builder(name)(checkpoint=None)
    finally:
        torch.random.set_rng_state(gen_state)
    for p in sam.parameters():  # the HQ builder freezes most weights; sumseg decides per mode
        p.requires_grad_(True)
    return sam.train()
