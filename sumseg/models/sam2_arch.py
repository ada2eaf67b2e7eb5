"""SAM 2.1 (image mode) architectures, built from ``transformers``' ``Sam2Config`` / ``Sam2Model``.

Never the third-party ``sam2`` wheel: the classes are transformers' (the optional extra ``sumseg[hf]``).
The four published sizes are those of Meta's ``sam2.1_hiera_{tiny,small,base_plus,large}.yaml``
(Hiera stage-1 width and heads, blocks per stage, global-attention blocks, window sizes, the
window positional embedding's background size); widths and heads double at every stage.
``sam2_tiny`` uses the same classes, shrunk to run on a CPU (256-px input, a 4-stage Hiera of
32..256 channels and 5 blocks, 16×16 image embeddings, 64×64 low-res masks).

``Sam2Model`` holds the image-mode weights only (Hiera, FPN neck, prompt encoder, mask decoder with its
object-score head, ``no_memory_embedding``): fewer than the published totals, which count the video
memory modules too (:data:`PUBLISHED_PARAMS`; ``tests/test_sam2_arch.py`` checks both counts).
Weights are loaded by :mod:`sumseg.models.sam2_weights`, never here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from sumseg.errors import ConfigError
from sumseg.model_names import SAM2_NAMES

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
"""SAM 2's normalisation (ImageNet's, on RGB scaled to 0..1), as Meta's transforms and ``Sam2ImageProcessor``."""


@dataclass(frozen=True)
class Sam2Arch:
    """Architecture of one SAM 2 image model (what its ``Sam2Config`` is built from)."""

    hidden_size: int
    num_heads: int
    blocks_per_stage: tuple[int, int, int, int]
    global_attention_blocks: tuple[int, ...]
    window_size_per_stage: tuple[int, int, int, int] = (8, 4, 14, 7)
    window_pos_background: tuple[int, int] = (7, 7)
    image_size: int = 1024
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def stage_dims(self) -> list[int]:
        return [self.hidden_size * 2**k for k in range(4)]

    @property
    def feature_sizes(self) -> list[list[int]]:
        """(h, w) of the three FPN levels the decoder reads: S/4, S/8 (high-res features), S/16 (embeddings)."""
        return [[self.image_size // s] * 2 for s in (4, 8, 16)]


SAM2_ARCHS: dict[str, Sam2Arch] = {
    "sam2.1_hiera_t": Sam2Arch(96, 1, (1, 2, 7, 2), (5, 7, 9)),
    "sam2.1_hiera_s": Sam2Arch(96, 1, (1, 2, 11, 2), (7, 10, 13)),
    "sam2.1_hiera_b+": Sam2Arch(112, 2, (2, 3, 16, 3), (12, 16, 20), window_pos_background=(14, 14)),
    "sam2.1_hiera_l": Sam2Arch(144, 2, (2, 6, 36, 4), (23, 33, 43), window_size_per_stage=(8, 4, 16, 8)),
    "sam2_tiny": Sam2Arch(32, 1, (1, 1, 2, 1), (3,), window_size_per_stage=(8, 4, 4, 4),
                          window_pos_background=(4, 4), image_size=256, decoder_mlp_dim=1024),
}
if set(SAM2_ARCHS) != set(SAM2_NAMES):  # pragma: no cover - the two tables are edited together
    raise RuntimeError("sumseg.model_names.SAM2_NAMES must list the SAM 2 architectures")

PUBLISHED_PARAMS: dict[str, float] = {
    "sam2.1_hiera_t": 38.9e6, "sam2.1_hiera_s": 46e6, "sam2.1_hiera_b+": 80.8e6, "sam2.1_hiera_l": 224.4e6,
}
"""Meta's published parameter counts (SAM 2 README: image and video modules together)."""

HF_FOLDER_NAMES: dict[str, str] = {
    "sam2.1_hiera_t": "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_s": "facebook/sam2.1-hiera-small",
    "sam2.1_hiera_b+": "facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_l": "facebook/sam2.1-hiera-large",
}
"""The Hugging Face repositories holding each published size as a ``Sam2Model`` folder (download them
yourself; sumseg reads local folders only)."""
META_FILES: dict[str, str] = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt", "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt", "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
}
"""Meta's checkpoint file of each published size (``dl.fbaipublicfiles.com/segment_anything_2/092824/``)."""


def import_transformers() -> Any:  # noqa: ANN401 - a module
    """The ``transformers`` package (the optional extra ``sumseg[hf]``); ConfigError when it is missing."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(f"SAM 2 models need the optional extra: pip install 'sumseg[hf]' "
                          f"(transformers); import failed: {e}") from e
    return transformers


def sam2_config_dict(arch: Sam2Arch) -> dict:
    """The ``Sam2Config`` keyword arguments of ``arch`` (sub-configs as dicts)."""
    dims = arch.stage_dims
    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=arch.hidden_size, num_attention_heads=arch.num_heads,
        image_size=[arch.image_size, arch.image_size], blocks_per_stage=list(arch.blocks_per_stage),
        embed_dim_per_stage=dims, num_attention_heads_per_stage=[arch.num_heads * 2**k for k in range(4)],
        window_size_per_stage=list(arch.window_size_per_stage),
        global_attention_blocks=list(arch.global_attention_blocks),
        window_positional_embedding_background_size=list(arch.window_pos_background),
    )
    vision = dict(model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=dims[::-1],
                  backbone_feature_sizes=arch.feature_sizes, fpn_hidden_size=arch.prompt_embed_dim)
    prompt = dict(hidden_size=arch.prompt_embed_dim, image_size=arch.image_size, patch_size=16)
    decoder = dict(hidden_size=arch.prompt_embed_dim, mlp_dim=arch.decoder_mlp_dim, iou_head_hidden_dim=256)
    return dict(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def sam2_config(name: str) -> Any:  # noqa: ANN401 - a transformers Sam2Config
    """The ``transformers.Sam2Config`` of registry name ``name``."""
    if name not in SAM2_ARCHS:
        raise ConfigError(f"unknown SAM 2 model {name!r}; known: {', '.join(SAM2_ARCHS)}")
    return import_transformers().Sam2Config(**sam2_config_dict(SAM2_ARCHS[name]))


def arch_of_sam2_config(config: Any) -> str | None:  # noqa: ANN401 - a Sam2Config
    """The registry name whose architecture a ``Sam2Config`` describes (None: none does)."""
    back = config.vision_config.backbone_config
    size = back.image_size[0] if isinstance(back.image_size, (list, tuple)) else back.image_size
    found = (back.hidden_size, back.num_attention_heads, tuple(back.blocks_per_stage),
             tuple(back.global_attention_blocks), tuple(back.window_size_per_stage),
             tuple(back.window_positional_embedding_background_size), size,
             config.prompt_encoder_config.hidden_size, config.mask_decoder_config.mlp_dim)
    for name, arch in SAM2_ARCHS.items():
        if found == tuple(getattr(arch, f) for f in Sam2Arch.__dataclass_fields__):
            return name
    return None


def build_sam2(name: str, seed: int | None = 0) -> Any:  # noqa: ANN401 - a transformers Sam2Model
    """Build ``transformers.Sam2Model`` for ``name`` with random (seeded) weights, in train mode; its two
    positional matrices equal (one, as in Meta's model)."""
    config = sam2_config(name)
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = import_transformers().Sam2Model(config)
    finally:
        torch.random.set_rng_state(gen_state)
    with torch.no_grad():  # one random-Fourier matrix, as in Meta's model (sam2_weights.TIED_POS_KEY)
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(model.shared_image_embedding.positional_embedding)
    return model.train()
