"""SAM 2.1 weights: Meta's ``.pt`` key layout ↔ ``transformers.Sam2Model``'s, and the two ways in.

Meta's ``sam2.1_hiera_*.pt`` is ``{"model": state_dict}`` of the ``sam2`` repository's ``SAM2Base``. Its
image-mode tensors are ``Sam2Model``'s, renamed module by module (the facts of transformers'
``convert_sam2_to_hf.py``, written here as one two-way table, :data:`META_KEY_RULES`): ``image_encoder.trunk``
→ ``vision_encoder.backbone`` (``norm*`` → ``layer_norm*``, the MLP's ``layers.0/1`` → ``proj_in/proj_out``,
``patch_embed.proj`` → ``patch_embed.projection``), the neck's ``convs.{i}.conv`` → ``convs.{i}``,
``sam_prompt_encoder`` → ``prompt_encoder`` (``mask_downscaling`` → ``mask_embed.conv1..conv3``),
``sam_mask_decoder`` → ``mask_decoder`` (attention ``out_proj`` → ``o_proj``, ``output_upscaling`` →
``upscale_*``, each 3-layer MLP's ``layers.0/1/2`` → ``proj_in/layers.0/proj_out``), ``no_mem_embed`` →
``no_memory_embedding`` and the random-Fourier matrix → ``shared_image_embedding.positional_embedding``.
One change is not a rename: Meta's four ``point_embeddings.{i}.weight`` (1, C) are the rows of
``prompt_encoder.point_embed.weight`` (4, C). The video modules (:data:`VIDEO_ONLY_PREFIXES`) have no
image-mode counterpart and are left out; any other key without a rule, and any ``Sam2Model`` tensor the
file does not provide, is a CheckpointError naming them.

A Hugging Face ``Sam2Model`` folder (``save_pretrained``: ``config.json`` + safetensors) is read with
``Sam2Config``'s own reader and our own tensor reading (no hub, no pickle); its config must be one of the
registry's architectures (:func:`~sumseg.models.sam2_arch.arch_of_sam2_config`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from sumseg.errors import CheckpointError
from sumseg.models.hf_sam import HFFolderError
from sumseg.models.sam2_arch import SAM2_ARCHS, arch_of_sam2_config, build_sam2, import_transformers
from sumseg.models.sum_sam2 import SumSam2

POS_KEY = "shared_image_embedding.positional_embedding"
TIED_POS_KEY = "prompt_encoder.shared_embedding.positional_embedding"
"""The prompt encoder's copy of :data:`POS_KEY`. ``Sam2Model`` holds two buffers (not tied: a fresh one draws
two matrices); Meta's model holds one (``pe_layer``) for both, so a Meta file sets both and a ``Sam2Model``
whose two differ has no Meta layout. :func:`~sumseg.models.sam2_arch.build_sam2` makes them equal."""
POINT_EMBED_KEY = "prompt_encoder.point_embed.weight"
META_POINT_KEY = "sam_prompt_encoder.point_embeddings.{i}.weight"
VIDEO_ONLY_PREFIXES: tuple[str, ...] = (
    "memory_attention.", "memory_encoder.", "mask_downsample.", "maskmem_tpos_enc", "no_mem_pos_enc",
    "no_obj_ptr", "obj_ptr_proj.", "obj_ptr_tpos_proj.", "no_obj_embed_spatial",
)
"""Meta keys of the video (memory) modules: ``Sam2Model`` (image mode) has no counterpart."""

_MLP3 = ("proj_in", "layers.0", "proj_out")  # Sam2FeedForward of depth 3: Meta's MLP layers.0/1/2
_MLP2 = ("proj_in", "proj_out")
_MASK_EMBED = {0: "conv1", 1: "layer_norm1", 3: "conv2", 4: "layer_norm2", 6: "conv3"}
_UPSCALING = {0: "upscale_conv1", 1: "upscale_layer_norm", 3: "upscale_conv2"}
_ATTNS = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
_PROJ = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "out_proj": "o_proj"}
_T, _B = "image_encoder.trunk.", "vision_encoder.backbone."
_MD, _HD = "sam_mask_decoder.", "mask_decoder."
_TW = "transformer.layers.{i}."

META_KEY_RULES: tuple[tuple[str, str], ...] = (
    (_T + "pos_embed", _B + "pos_embed"),
    (_T + "pos_embed_window", _B + "pos_embed_window"),
    (_T + "patch_embed.proj.", _B + "patch_embed.projection."),
    (_T + "blocks.{i}.norm{j}.", _B + "blocks.{i}.layer_norm{j}."),
    (_T + "blocks.{i}.attn.", _B + "blocks.{i}.attn."),
    (_T + "blocks.{i}.proj.", _B + "blocks.{i}.proj."),
    *((_T + f"blocks.{{i}}.mlp.layers.{k}.", _B + f"blocks.{{i}}.mlp.{n}.") for k, n in enumerate(_MLP2)),
    ("image_encoder.neck.convs.{i}.conv.", "vision_encoder.neck.convs.{i}."),
    ("no_mem_embed", "no_memory_embedding"),
    ("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", POS_KEY),
    ("sam_prompt_encoder.not_a_point_embed.", "prompt_encoder.not_a_point_embed."),
    ("sam_prompt_encoder.no_mask_embed.", "prompt_encoder.no_mask_embed."),
    *((f"sam_prompt_encoder.mask_downscaling.{k}.", f"prompt_encoder.mask_embed.{n}.") for k, n in _MASK_EMBED.items()),
    *((_MD + t, _HD + t) for t in ("iou_token.", "mask_tokens.", "obj_score_token.", "conv_s0.", "conv_s1.")),
    (_MD + _TW + "norm{j}.", _HD + _TW + "layer_norm{j}."),
    *((_MD + _TW + f"{a}.{p}.", _HD + _TW + f"{a}.{h}.") for a in _ATTNS for p, h in _PROJ.items()),
    *((_MD + _TW + f"mlp.layers.{k}.", _HD + _TW + f"mlp.{n}.") for k, n in enumerate(_MLP2)),
    *((_MD + f"transformer.final_attn_token_to_image.{p}.", _HD + f"transformer.final_attn_token_to_image.{h}.")
      for p, h in _PROJ.items()),
    (_MD + "transformer.norm_final_attn.", _HD + "transformer.layer_norm_final_attn."),
    *((_MD + f"output_upscaling.{k}.", _HD + n + ".") for k, n in _UPSCALING.items()),
    *((_MD + f"output_hypernetworks_mlps.{{i}}.layers.{k}.", _HD + f"output_hypernetworks_mlps.{{i}}.{n}.")
      for k, n in enumerate(_MLP3)),
    *((_MD + f"{head}.layers.{k}.", _HD + f"{head}.{n}.")
      for head in ("iou_prediction_head", "pred_obj_score_head") for k, n in enumerate(_MLP3)),
)
"""(Meta key template, ``Sam2Model`` key template): ``{i}``/``{j}`` stand for an index; a template ending in
``.`` is a module prefix followed by the rest of the key, otherwise the whole key."""


def _pattern(template: str) -> re.Pattern[str]:
    body = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{j\}", r"(?P<j>\d+)")
    return re.compile(body + (r"(?P<rest>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)" if template.endswith(".") else ""))


_RULES = tuple((_pattern(m), m, _pattern(h), h) for m, h in META_KEY_RULES)


def _rename(key: str, to_hf: bool) -> str | None:
    out = []
    for meta_pat, meta_t, hf_pat, hf_t in _RULES:
        m = (meta_pat if to_hf else hf_pat).fullmatch(key)
        if m:
            g = m.groupdict()
            target = (hf_t if to_hf else meta_t).replace("{i}", g.get("i") or "").replace("{j}", g.get("j") or "")
            out.append(target + (g.get("rest") or ""))
    if len(out) > 1:  # pragma: no cover - the table is tested to be one-to-one
        raise RuntimeError(f"key {key!r} matches {len(out)} rules of META_KEY_RULES")
    return out[0] if out else None


def meta_to_hf_key(key: str) -> str | None:
    """A Meta SAM 2 key → its ``Sam2Model`` key (None: no rule; the point embeddings are not renamed)."""
    return _rename(key, to_hf=True)


def hf_to_meta_key(key: str) -> str | None:
    """A ``Sam2Model`` key → its Meta key (None: no rule)."""
    return _rename(key, to_hf=False)


def meta_to_hf_state(state: Mapping[str, torch.Tensor], where: object = "state_dict") -> dict[str, torch.Tensor]:
    """Meta's image-mode tensors → ``Sam2Model``'s (same tensors, renamed; the point embeddings stacked;
    the video modules left out). A key with no rule raises CheckpointError naming them."""
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    unmapped = []
    point = re.compile(re.escape(META_POINT_KEY).replace(r"\{i\}", r"(\d+)"))
    for key, value in state.items():
        m = point.fullmatch(key)
        if m:
            points[int(m.group(1))] = value
        elif not key.startswith(VIDEO_ONLY_PREFIXES):
            new = meta_to_hf_key(key)
            if new is None:
                unmapped.append(key)
            else:
                out[new] = value
    if unmapped:
        raise CheckpointError(f"{where}: {len(unmapped)} key(s) with no Sam2Model counterpart: "
                              f"{', '.join(unmapped[:8])}{' ...' if len(unmapped) > 8 else ''}")
    if points:
        if sorted(points) != list(range(len(points))):
            raise CheckpointError(f"{where}: point embeddings {sorted(points)} are not 0..{len(points) - 1}")
        out[POINT_EMBED_KEY] = torch.cat([points[i].reshape(1, -1) for i in range(len(points))])
    return out


def hf_to_meta_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``Sam2Model`` tensors → Meta's image-mode keys (the inverse of :func:`meta_to_hf_state`; the tied
    prompt encoder's positional copy left out: it must equal :data:`POS_KEY`). A key with no rule raises
    CheckpointError."""
    out = {}
    tied = state.get(TIED_POS_KEY)
    if tied is not None and POS_KEY in state and not torch.equal(state[POS_KEY], tied):
        raise CheckpointError(f"{POS_KEY} and {TIED_POS_KEY} differ: Meta's layout holds one matrix for both")
    for key, value in state.items():
        if key == TIED_POS_KEY:
            continue
        if key == POINT_EMBED_KEY:
            out.update({META_POINT_KEY.format(i=i): row[None].clone() for i, row in enumerate(value)})
            continue
        new = hf_to_meta_key(key)
        if new is None:
            raise CheckpointError(f"Sam2Model key {key!r} has no Meta counterpart")
        out[new] = value
    return out


def _load_into(model: Any, state: Mapping[str, torch.Tensor], where: object) -> Any:  # noqa: ANN401
    """Load ``Sam2Model`` tensors into ``model`` exactly: every tensor present (the prompt encoder's positional
    copy may be left out: then it is :data:`POS_KEY`), no other, shapes equal; CheckpointError naming what is
    missing, unexpected or misshapen."""
    state = dict(state)
    if POS_KEY in state:
        state.setdefault(TIED_POS_KEY, state[POS_KEY])
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in want.items()
              if k in state and state[k].shape != v.shape]
    problems = [f"{len(items)} {label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", shapes)) if items]
    if problems:
        raise CheckpointError(f"{where}: does not fit the Sam2Model; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model


def load_meta_pt(path: str | Path, name: str) -> Any:  # noqa: ANN401 - a transformers Sam2Model
    """Meta's ``sam2.1_hiera_*.pt`` (``{"model": state_dict}`` or a bare state_dict) → ``Sam2Model`` of
    registry name ``name`` (eval mode). Read with ``torch.load(weights_only=True)`` (no code runs)."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - arbitrary bytes make the restricted unpickler fail in any way
        raise CheckpointError(f"{path}: not a readable SAM 2 checkpoint: {type(e).__name__}: {e}") from e
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a SAM 2 state_dict of tensors")
    return _load_into(build_sam2(name), meta_to_hf_state(obj, path), path).eval()


def _weight_files(folder: Path, name: str) -> list[Path]:
    """``model.safetensors``, or the shards ``model.safetensors.index.json`` names."""
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        raise HFFolderError(f"{folder}: a Sam2Model folder ({name}) without model.safetensors (nor its index); "
                            "sumseg reads safetensors only")
    try:
        shards = sorted({str(v) for v in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise HFFolderError(f"{index}: unreadable shard index: {e}") from e
    if any(Path(s).name != s for s in shards):
        raise HFFolderError(f"{index}: shard names must be file names in the folder")
    return [folder / s for s in shards]


def read_sam2_folder(folder: str | Path) -> tuple[str, Any]:
    """A local ``Sam2Model`` folder → (its registry name, the ``Sam2Model`` with its weights, eval mode)."""
    folder = Path(folder)
    transformers = import_transformers()
    try:
        config = transformers.Sam2Config.from_json_file(str(folder / "config.json"))
    except (OSError, ValueError, TypeError) as e:
        raise HFFolderError(f"{folder}: no readable Sam2Model config.json: {e}") from e
    if getattr(config, "model_type", None) != "sam2":
        raise HFFolderError(f"{folder}: its config.json is not a Sam2Model's (model_type 'sam2')")
    name = arch_of_sam2_config(config)
    if name is None:
        raise HFFolderError(f"{folder}: its Sam2Config is none of sumseg's SAM 2 architectures")
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(folder, name):
        try:
            state.update(load_file(str(f), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise HFFolderError(f"{f}: missing or damaged safetensors file: {e}") from e
    return name, _load_into(build_sam2(name), state, folder).eval()


def is_sam2_folder(path: object) -> bool:
    """``path`` is a folder whose ``config.json`` says ``model_type: sam2`` (a Sam2Model folder)."""
    if path is None or not Path(str(path)).is_dir():
        return False
    try:
        config = json.loads((Path(str(path)) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "sam2"


def load_sam2_model(name: str | None, checkpoint: str | Path | None, tasks: Sequence[int]) -> SumSam2:
    """A task-conditioned SAM 2 (eval mode): random seeded weights without ``checkpoint``; a ``Sam2Model``
    folder (its config names the model; ``name``, when given, must match); or Meta's ``.pt`` of ``name``."""
    if name is not None and name not in SAM2_ARCHS:
        raise CheckpointError(f"{name!r} is not a SAM 2 model ({', '.join(SAM2_ARCHS)})")
    if checkpoint is None:
        if name is None:
            raise CheckpointError("a SAM 2 model needs a name or a checkpoint")
        return SumSam2(build_sam2(name), tasks, name).eval()
    path = Path(checkpoint)
    if path.is_dir():
        held, sam2 = read_sam2_folder(path)
        if name is not None and name != held:
            raise CheckpointError(f"{path}: its config.json describes a {held!r} model, not {name!r}")
        return SumSam2(sam2, tasks, held).eval()
    if name is None:
        raise CheckpointError(f"{path}: Meta's .pt does not say its model: pass a SAM 2 model name")
    return SumSam2(load_meta_pt(path, name), tasks, name).eval()
