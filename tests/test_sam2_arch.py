"""SAM 2.1 architectures and weights: the registry's sizes, Meta's ``.pt`` key layout, ``Sam2Model`` folders.

On the tiny SAM 2 config with random weights (the published sizes are built on the ``meta`` device: shapes
and counts only). The HF side is transformers' own ``Sam2Model`` (skipped without it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every load here is of a local folder
transformers = pytest.importorskip("transformers")

from sumseg.errors import CheckpointError  # noqa: E402
from sumseg.model_names import SAM2_NAMES  # noqa: E402
from sumseg.models.sam2_arch import (  # noqa: E402
    PUBLISHED_PARAMS,
    SAM2_ARCHS,
    arch_of_sam2_config,
    build_sam2,
    sam2_config,
    sam2_config_dict,
)
from sumseg.models.sam2_weights import (  # noqa: E402
    TIED_POS_KEY,
    VIDEO_ONLY_PREFIXES,
    hf_to_meta_key,
    hf_to_meta_state,
    load_meta_pt,
    meta_to_hf_key,
    meta_to_hf_state,
    read_sam2_folder,
)

# Sam2Model (image mode) parameter counts of the registry's sizes, measured with transformers 5.23
IMAGE_PARAMS = {"sam2.1_hiera_t": 31_440_721, "sam2.1_hiera_s": 38_538_577, "sam2.1_hiera_b+": 73_328_401,
                "sam2.1_hiera_l": 216_924_865, "sam2_tiny": 4_465_137}


def random_sam2(seed: int = 3) -> torch.nn.Module:
    """The tiny SAM 2 with every tensor random (several are zeros or ones at init)."""
    model = build_sam2("sam2_tiny", seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + p)
    return model.eval()


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    points = torch.tensor([[[[40.0, 60.0], [200.0, 100.0]]]])
    with torch.no_grad():
        out = model(pixel_values=x, input_points=points, input_labels=torch.tensor([[[1, 0]]]))
    return out.pred_masks, out.iou_scores, out.object_score_logits


def test_names_match_the_model_names_table() -> None:
    assert tuple(SAM2_ARCHS) == SAM2_NAMES


@pytest.mark.parametrize("name", list(SAM2_ARCHS))
def test_parameter_counts_match_the_published_sizes(name: str) -> None:
    """Sam2Model's count is the image model's; with the video modules (Sam2VideoModel, same config) it is
    Meta's published total to the digit they give (38.96M → "38.9M": truncated)."""
    with torch.device("meta"):
        image = transformers.Sam2Model(sam2_config(name))
        video = transformers.Sam2VideoModel(transformers.Sam2VideoConfig(**sam2_config_dict(SAM2_ARCHS[name])))
    assert sum(p.numel() for p in image.parameters()) == IMAGE_PARAMS[name]
    if name in PUBLISHED_PARAMS:
        total = sum(p.numel() for p in video.parameters())
        unit = 1e6 if name == "sam2.1_hiera_s" else 1e5  # Meta truncates: "46M", the others to 0.1M
        assert int(total // unit) == round(PUBLISHED_PARAMS[name] / unit), total
    assert arch_of_sam2_config(image.config) == name


def test_tiny_builds_seeded_and_runs() -> None:
    a, b = build_sam2("sam2_tiny", seed=0), build_sam2("sam2_tiny", seed=0)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    masks, iou, obj = _outputs(a.eval(), torch.randn(1, 3, 256, 256))
    assert masks.shape == (1, 1, 3, 64, 64) and iou.shape == (1, 1, 3) and obj.shape == (1, 1, 1)


META_FACTS = {  # Meta's key → Sam2Model's, read from the published conversion script
    "image_encoder.trunk.patch_embed.proj.weight": "vision_encoder.backbone.patch_embed.projection.weight",
    "image_encoder.trunk.blocks.1.mlp.layers.1.bias": "vision_encoder.backbone.blocks.1.mlp.proj_out.bias",
    "image_encoder.trunk.blocks.0.norm2.weight": "vision_encoder.backbone.blocks.0.layer_norm2.weight",
    "image_encoder.neck.convs.3.conv.weight": "vision_encoder.neck.convs.3.weight",
    "no_mem_embed": "no_memory_embedding",
    "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": "shared_image_embedding.positional_embedding",
    "sam_prompt_encoder.mask_downscaling.6.bias": "prompt_encoder.mask_embed.conv3.bias",
    "sam_mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight":
        "mask_decoder.transformer.layers.1.cross_attn_image_to_token.o_proj.weight",
    "sam_mask_decoder.transformer.layers.0.norm4.bias": "mask_decoder.transformer.layers.0.layer_norm4.bias",
    "sam_mask_decoder.transformer.norm_final_attn.weight": "mask_decoder.transformer.layer_norm_final_attn.weight",
    "sam_mask_decoder.output_upscaling.1.weight": "mask_decoder.upscale_layer_norm.weight",
    "sam_mask_decoder.output_hypernetworks_mlps.2.layers.1.weight":
        "mask_decoder.output_hypernetworks_mlps.2.layers.0.weight",
    "sam_mask_decoder.pred_obj_score_head.layers.2.bias": "mask_decoder.pred_obj_score_head.proj_out.bias",
    "sam_mask_decoder.conv_s1.weight": "mask_decoder.conv_s1.weight",
}


@pytest.mark.parametrize("meta", list(META_FACTS))
def test_key_table_states_the_published_renames(meta: str) -> None:
    assert meta_to_hf_key(meta) == META_FACTS[meta]
    assert hf_to_meta_key(META_FACTS[meta]) == meta


def test_meta_layout_round_trips_exactly() -> None:
    """A random state_dict in Meta's layout (the inverse table applied to Sam2Model's keys) maps back to
    every Sam2Model tensor, same shapes, same values; Meta's four point embeddings are rows of one."""
    hf = random_sam2().state_dict()
    meta = hf_to_meta_state(hf)
    assert [k for k in meta if k.startswith("sam_prompt_encoder.point_embeddings")] == [
        f"sam_prompt_encoder.point_embeddings.{i}.weight" for i in range(4)]
    assert all(meta[f"sam_prompt_encoder.point_embeddings.{i}.weight"].shape == (1, 256) for i in range(4))
    assert all(k.startswith(("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.")) or k == "no_mem_embed"
               for k in meta)
    back = meta_to_hf_state(meta)
    assert set(back) == set(hf) - {TIED_POS_KEY}
    for k, v in back.items():
        assert v.shape == hf[k].shape and torch.equal(v, hf[k]), k


def test_meta_pt_loads_with_video_keys_left_out_and_names_problems(tmp_path: Path) -> None:
    ref = random_sam2()
    meta = hf_to_meta_state(ref.state_dict())
    video = {p + ("weight" if p.endswith(".") else ""): torch.zeros(2) for p in VIDEO_ONLY_PREFIXES}
    torch.save({"model": {**meta, **video}}, tmp_path / "sam2.1_hiera_tiny.pt")
    model = load_meta_pt(tmp_path / "sam2.1_hiera_tiny.pt", "sam2_tiny")
    x = torch.randn(1, 3, 256, 256)
    for a, b in zip(_outputs(model, x), _outputs(ref, x), strict=True):
        assert torch.equal(a, b)
    torch.save({"model": {**meta, "sam_mask_decoder.extra_head.weight": torch.zeros(1)}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="no Sam2Model counterpart: sam_mask_decoder.extra_head.weight"):
        load_meta_pt(tmp_path / "odd.pt", "sam2_tiny")
    short = {k: v for k, v in meta.items() if "conv_s0" not in k}
    torch.save({"model": short}, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match=r"2 missing keys: mask_decoder.conv_s0"):
        load_meta_pt(tmp_path / "short.pt", "sam2_tiny")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_meta_pt(tmp_path / "sam2.1_hiera_tiny.pt", "sam2.1_hiera_t")


def test_saved_hf_folder_loads_with_equal_outputs(tmp_path: Path) -> None:
    ref = random_sam2()
    ref.save_pretrained(tmp_path / "hf")
    name, model = read_sam2_folder(tmp_path / "hf")
    assert name == "sam2_tiny"
    x = torch.randn(1, 3, 256, 256)
    for a, b in zip(_outputs(model, x), _outputs(ref, x), strict=True):
        assert torch.equal(a, b)
    plain = transformers.Sam2Model.from_pretrained(str(tmp_path / "hf")).eval()
    for a, b in zip(_outputs(plain, x), _outputs(ref, x), strict=True):
        assert torch.equal(a, b)
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="damaged safetensors"):
        read_sam2_folder(tmp_path / "hf")


def test_two_different_positional_matrices_have_no_meta_layout() -> None:
    state = dict(random_sam2().state_dict())
    assert torch.equal(state[TIED_POS_KEY], state["shared_image_embedding.positional_embedding"])  # build_sam2
    state[TIED_POS_KEY] = state[TIED_POS_KEY] + 1
    with pytest.raises(CheckpointError, match="Meta's layout holds one matrix for both"):
        hf_to_meta_state(state)
