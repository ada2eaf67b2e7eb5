"""SAM 1 in the Hugging Face layout: ``transformers.SamModel`` folders, read and written without ``transformers``.

A ``SamModel`` folder (``save_pretrained``) holds ``config.json`` and ``model.safetensors`` (or shards with
``model.safetensors.index.json``). Its weights are ``segment_anything``'s, renamed module by module; the
table :data:`KEY_RULES` is that renaming (the facts of transformers' ``convert_sam_to_hf.py``, written
as one two-way table): ``image_encoder`` → ``vision_encoder`` (``blocks`` → ``layers``, ``norm*`` →
``layer_norm*``, the neck's Sequential indexes → ``conv1/layer_norm1/conv2/layer_norm2``), the prompt
encoder's ``mask_downscaling`` Sequential → ``mask_embed.conv1..conv3``, ``point_embeddings`` →
``point_embed``, the random-Fourier matrix → ``shared_image_embedding.positional_embedding`` (tied to
``prompt_encoder.shared_embedding.positional_embedding``, which ``save_pretrained`` leaves out), and in the
mask decoder ``output_upscaling`` → ``upscale_conv1/upscale_layer_norm/upscale_conv2`` and each 3-layer
MLP's ``layers.0/1/2`` → ``proj_in/layers.0/proj_out``. ``pixel_mean``/``pixel_std`` are not weights in
either layout (SAM's are non-persistent buffers; HF normalises in its image processor).

The config (:func:`hf_config`) states a :class:`~sumseg.models.registry.SamArch`; reading one back
(:func:`arch_of_config`) finds the registry model it describes. Transformers' two-way-transformer layer
norms take ``mask_decoder_config.layer_norm_eps`` (its default and the published folders: 1e-6) where
``segment_anything`` has ``nn.LayerNorm``'s 1e-5: sumseg writes 1e-5, so an exported folder computes
exactly what the model it came from computes; reading, the value is ignored (SAM's classes fix it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from sumseg.errors import CheckpointError, DataError
from sumseg.models.registry import ARCHS, SamArch

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
HF_POS_KEY = "shared_image_embedding.positional_embedding"
HF_TIED_POS_KEY = "prompt_encoder.shared_embedding.positional_embedding"
"""The tied copy of :data:`HF_POS_KEY` in ``SamModel.state_dict()``; ``save_pretrained`` does not write it."""


class HFFolderError(CheckpointError, DataError):
    """A folder given as a checkpoint is not a readable SAM 1 ``SamModel`` folder (both a checkpoint
    problem and a data problem: callers catching either see it)."""


_NECK = ("conv1", "layer_norm1", "conv2", "layer_norm2")
_MASK_EMBED = {0: "conv1", 1: "layer_norm1", 3: "conv2", 4: "layer_norm2", 6: "conv3"}
_UPSCALING = {0: "upscale_conv1", 1: "upscale_layer_norm", 3: "upscale_conv2"}
_MLP3 = ("proj_in", "layers.0", "proj_out")  # SamFeedForward of depth 3: SAM's MLP layers.0/1/2
_TWO_WAY_PARTS = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token", "mlp")

KEY_RULES: tuple[tuple[str, str], ...] = (
    ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    ("image_encoder.patch_embed.proj.", "vision_encoder.patch_embed.projection."),
    ("image_encoder.blocks.{i}.norm{j}.", "vision_encoder.layers.{i}.layer_norm{j}."),
    ("image_encoder.blocks.{i}.attn.", "vision_encoder.layers.{i}.attn."),
    ("image_encoder.blocks.{i}.mlp.", "vision_encoder.layers.{i}.mlp."),
    *((f"image_encoder.neck.{k}.", f"vision_encoder.neck.{n}.") for k, n in enumerate(_NECK)),
    ("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", HF_POS_KEY),
    ("prompt_encoder.point_embeddings.{i}.", "prompt_encoder.point_embed.{i}."),
    ("prompt_encoder.not_a_point_embed.", "prompt_encoder.not_a_point_embed."),
    ("prompt_encoder.no_mask_embed.", "prompt_encoder.no_mask_embed."),
    *((f"prompt_encoder.mask_downscaling.{k}.", f"prompt_encoder.mask_embed.{n}.") for k, n in _MASK_EMBED.items()),
    ("mask_decoder.iou_token.", "mask_decoder.iou_token."),
    ("mask_decoder.mask_tokens.", "mask_decoder.mask_tokens."),
    ("mask_decoder.transformer.layers.{i}.norm{j}.", "mask_decoder.transformer.layers.{i}.layer_norm{j}."),
    *((f"mask_decoder.transformer.layers.{{i}}.{p}.", f"mask_decoder.transformer.layers.{{i}}.{p}.")
      for p in _TWO_WAY_PARTS),
    ("mask_decoder.transformer.final_attn_token_to_image.", "mask_decoder.transformer.final_attn_token_to_image."),
    ("mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn."),
    *((f"mask_decoder.output_upscaling.{k}.", f"mask_decoder.{n}.") for k, n in _UPSCALING.items()),
    *((f"mask_decoder.output_hypernetworks_mlps.{{i}}.layers.{k}.",
       f"mask_decoder.output_hypernetworks_mlps.{{i}}.{n}.") for k, n in enumerate(_MLP3)),
    *((f"mask_decoder.iou_prediction_head.layers.{k}.", f"mask_decoder.iou_prediction_head.{n}.")
      for k, n in enumerate(_MLP3)),
)
"""(segment_anything key template, SamModel key template): ``{i}``/``{j}`` stand for an index; a
template ending in ``.`` is a module prefix followed by the parameter's own name, otherwise the whole key."""


def _pattern(template: str) -> re.Pattern[str]:
    body = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{j\}", r"(?P<j>\d+)")
    return re.compile(body + (r"(?P<rest>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)" if template.endswith(".") else ""))


_RULES = tuple((_pattern(s), s, _pattern(h), h) for s, h in KEY_RULES)


def _rename(key: str, to_hf: bool) -> str | None:
    """``key`` in the other layout; None when no rule takes it. Exactly one rule takes any key."""
    out = []
    for sam_pat, sam_t, hf_pat, hf_t in _RULES:
        m = (sam_pat if to_hf else hf_pat).fullmatch(key)
        if m:
            groups = m.groupdict()
            target = (hf_t if to_hf else sam_t).replace("{i}", groups.get("i") or "")
            target = target.replace("{j}", groups.get("j") or "")
            out.append(target + (groups.get("rest") or ""))
    if len(out) > 1:  # pragma: no cover - the table is tested to be one-to-one
        raise RuntimeError(f"key {key!r} matches {len(out)} rules of KEY_RULES")
    return out[0] if out else None


def sam_to_hf_key(key: str) -> str | None:
    """A ``segment_anything`` ``Sam`` state_dict key → its ``SamModel`` key (None: no counterpart, e.g. HQ's)."""
    return _rename(key, to_hf=True)


def hf_to_sam_key(key: str) -> str | None:
    """A ``SamModel`` state_dict key → its ``segment_anything`` key (None: no counterpart)."""
    return _rename(key, to_hf=False)


def sam_to_hf_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A SAM 1 state_dict → the tensors ``SamModel.save_pretrained`` writes (same tensors, renamed; the
    tied positional copy left out). A key without a counterpart (HQ-SAM's) raises CheckpointError."""
    out = {}
    for key, value in state.items():
        new = sam_to_hf_key(key)
        if new is None:
            raise CheckpointError(f"state_dict key {key!r} has no SamModel counterpart (HQ-SAM is not SAM 1)")
        out[new] = value
    return out


def hf_to_sam_state(state: Mapping[str, torch.Tensor], where: object) -> dict[str, torch.Tensor]:
    """``SamModel`` tensors → a ``segment_anything`` state_dict. The tied copy of the positional matrix
    may be present (then it must equal the other); keys without a counterpart keep their names, so the
    model's key check (:func:`~sumseg.models.checkpoint.check_state_dict`) lists them as unexpected."""
    state = dict(state)
    tied = state.pop(HF_TIED_POS_KEY, None)
    if tied is not None:
        main = state.setdefault(HF_POS_KEY, tied)
        if main.shape != tied.shape or not torch.equal(main, tied):
            raise HFFolderError(f"{where}: {HF_POS_KEY} and its tied copy {HF_TIED_POS_KEY} differ")
    return {hf_to_sam_key(k) or k: v for k, v in state.items()}


def hf_config(arch: SamArch) -> dict:
    """The ``config.json`` of a ``SamModel`` with architecture ``arch`` (every field, as
    ``save_pretrained`` writes them), for SAM 1 only (HQ-SAM is ``SamHQModel``, not written here)."""
    if arch.hq:
        raise CheckpointError("HQ-SAM has no SamModel layout (transformers' SamHQModel is not supported yet)")
    vision = dict(
        model_type="sam_vision_model", hidden_size=arch.encoder_embed_dim, output_channels=arch.prompt_embed_dim,
        num_hidden_layers=arch.encoder_depth, num_attention_heads=arch.encoder_num_heads, num_channels=3,
        image_size=arch.image_size, patch_size=arch.patch_size, hidden_act="gelu", layer_norm_eps=1e-6,
        attention_dropout=0.0, initializer_range=1e-10, qkv_bias=True, mlp_ratio=4.0, use_abs_pos=True,
        use_rel_pos=True, window_size=arch.window_size, global_attn_indexes=list(arch.encoder_global_attn_indexes),
        num_pos_feats=arch.prompt_embed_dim // 2, mlp_dim=4 * arch.encoder_embed_dim,
        scale=arch.encoder_embed_dim // 2,
    )
    prompt = dict(
        model_type="sam_prompt_encoder", hidden_size=arch.prompt_embed_dim, image_size=arch.image_size,
        patch_size=arch.patch_size, image_embedding_size=arch.image_size // arch.patch_size, mask_input_channels=16,
        num_point_embeddings=4, hidden_act="gelu", layer_norm_eps=1e-6,
    )
    decoder = dict(
        model_type="sam_mask_decoder", hidden_size=arch.prompt_embed_dim, hidden_act="relu",
        mlp_dim=arch.decoder_mlp_dim, num_hidden_layers=2, num_attention_heads=8, attention_downsample_rate=2,
        num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256,
        layer_norm_eps=1e-5,  # segment_anything's nn.LayerNorm (module docstring)
    )
    return dict(architectures=["SamModel"], model_type="sam", dtype="float32", initializer_range=0.02,
                tie_word_embeddings=True, vision_config=vision, prompt_encoder_config=prompt,
                mask_decoder_config=decoder)


_HF_DEFAULTS = {  # transformers' own defaults (configuration_sam.py): config.json may leave these out
    "vision_config": dict(hidden_size=768, output_channels=256, num_hidden_layers=12, num_attention_heads=12,
                          num_channels=3, image_size=1024, patch_size=16, hidden_act="gelu", qkv_bias=True,
                          mlp_ratio=4.0, use_abs_pos=True, use_rel_pos=True, window_size=14,
                          global_attn_indexes=[2, 5, 8, 11], num_pos_feats=128, mlp_dim=None),
    "prompt_encoder_config": dict(hidden_size=256, image_size=1024, patch_size=16, mask_input_channels=16,
                                  num_point_embeddings=4, hidden_act="gelu"),
    "mask_decoder_config": dict(hidden_size=256, hidden_act="relu", mlp_dim=2048, num_hidden_layers=2,
                                num_attention_heads=8, attention_downsample_rate=2, num_multimask_outputs=3,
                                iou_head_depth=3, iou_head_hidden_dim=256),
}
_IGNORED = {"layer_norm_eps", "attention_dropout", "initializer_range", "scale", "image_embedding_size", "model_type"}


def _filled(config: Mapping, where: object) -> dict[str, dict]:
    """The three sub-configs of a SamModel config, transformers' defaults filled in (HFFolderError if malformed)."""
    out = {}
    for part, defaults in _HF_DEFAULTS.items():
        given = config.get(part) or {}
        if not isinstance(given, dict):
            raise HFFolderError(f"{where}: {HF_CONFIG}: '{part}' must be an object, got {type(given).__name__}")
        out[part] = {**defaults, **given}
    vision = out["vision_config"]
    if vision["mlp_dim"] is None and isinstance(vision["hidden_size"], int | float):
        vision["mlp_dim"] = int(vision["hidden_size"] * vision["mlp_ratio"])
    return out


def arch_of_config(config: Mapping, where: object) -> str:
    """The registry name (a SAM 1 one) whose architecture a ``SamModel`` config describes.

    Every field that shapes the computation must equal that of :func:`hf_config` for the name; the
    layer-norm epsilons and initialisation settings are not compared (module docstring). HFFolderError
    when none fits, naming the first fields that differ from the closest model.
    """
    given = _filled(config, where)
    best: tuple[int, str, list[str]] | None = None
    for name, arch in ARCHS.items():
        if arch.hq:
            continue
        want = hf_config(arch)
        diffs = [f"{part}.{k}: {given[part].get(k)!r} (a {name} has {v!r})"
                 for part in _HF_DEFAULTS for k, v in want[part].items()
                 if k not in _IGNORED and _norm(given[part].get(k)) != _norm(v)]
        if not diffs:
            return name
        if best is None or len(diffs) < best[0]:
            best = (len(diffs), name, diffs)
    assert best is not None
    raise HFFolderError(f"{where}: {HF_CONFIG} describes a SAM architecture sumseg has no registry model for; "
                        f"closest is {best[1]!r}, which differs in {', '.join(best[2][:4])}")


def _norm(value: object) -> object:
    """Config values compared as JSON reads them (tuples as lists, 4 == 4.0)."""
    if isinstance(value, tuple | list):
        return [_norm(v) for v in value]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _contents(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "") if names else "nothing"


def read_hf_config(folder: str | Path) -> dict:
    """``folder``'s ``config.json``, checked to be a SAM 1 ``SamModel``'s (HFFolderError naming the
    folder and what it holds otherwise: no config, unreadable JSON, another model type)."""
    folder = Path(folder)
    path = folder / HF_CONFIG
    if not path.is_file():
        raise HFFolderError(f"{folder}: is a folder, not a checkpoint file, and not a Hugging Face model folder "
                            f"(no {HF_CONFIG}); it holds {_contents(folder)}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise HFFolderError(f"{path}: unreadable config: {e}") from e
    if not isinstance(config, dict):
        raise HFFolderError(f"{path}: must hold a JSON object, got {type(config).__name__}")
    kind = config.get("model_type")
    if kind != "sam":
        arches = config.get("architectures")
        what = f"a {kind!r} model" if kind is not None else f"a {HF_CONFIG} without a model_type"
        what += f" ({', '.join(map(str, arches))})" if isinstance(arches, list) else ""
        hint = " (HQ-SAM folders are not supported yet)" if kind == "sam_hq" else ""
        raise HFFolderError(f"{folder}: holds {what}, not a SAM 1 SamModel (model_type 'sam'){hint}")
    return config


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder: ``model.safetensors`` or the shards its index names."""
    if (folder / HF_WEIGHTS).is_file():
        return [folder / HF_WEIGHTS]
    if (folder / HF_INDEX).is_file():
        try:
            weight_map = json.loads((folder / HF_INDEX).read_text(encoding="utf-8"))["weight_map"]
            shards = sorted({str(v) for v in weight_map.values()})
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise HFFolderError(f"{folder / HF_INDEX}: unreadable shard index: {e}") from e
        if any(Path(s).name != s for s in shards):
            raise HFFolderError(f"{folder / HF_INDEX}: shard names must be file names in the folder")
        return [folder / s for s in shards]
    pickled = " (sumseg reads safetensors only; it never unpickles pytorch_model.bin)" if (
        folder / "pytorch_model.bin").exists() else ""
    raise HFFolderError(f"{folder}: no {HF_WEIGHTS} (nor {HF_INDEX}){pickled}; it holds {_contents(folder)}")


def read_hf_folder(folder: str | Path) -> tuple[str, dict[str, torch.Tensor]]:
    """A local ``SamModel`` folder → (registry name from its config, ``segment_anything`` state_dict on CPU).

    Reads ``config.json`` and the safetensors weights only (never a hub, never a pickle). HFFolderError
    for a folder that is not a SAM 1 ``SamModel`` one (module docstring) or whose weights are damaged.
    """
    folder = Path(folder)
    name = arch_of_config(read_hf_config(folder), folder / HF_CONFIG)
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        try:
            state.update(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise HFFolderError(f"{path}: damaged safetensors file (truncated or corrupt): {e}") from e
    return name, hf_to_sam_state(state, folder)
