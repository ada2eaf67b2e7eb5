"""Checkpoint I/O. Our format: one safetensors file whose header metadata holds JSON.

Weights: ``SumSam.state_dict()`` (``sam.*`` stock keys + ``task_prompts.task_embeddings``), or a
``SumSam2``'s (``sam2.*``, ``Sam2Model``'s keys; the architecture is :data:`~sumseg.models.sam2_arch.SAM2_ARCHS`').
Metadata: one header key, ``__metadata__["sumseg"]``, holding one JSON object — format, format
version and ``meta`` (model name, architecture, task ids, step, sumseg version, an optional
config). One key, because safetensors writes several in a varying order: the same weights saved
twice give the same bytes. Version 1 files (``format``, ``format_version`` and ``sumseg`` as three
keys, e.g. the shipped ``tiny_foundation``) are read as before. Writes are atomic; loading never unpickles code:
safetensors for ours, ``torch.load(weights_only=True)`` for official ``.pth`` state dicts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sumseg.atomic import atomic_path, json_text
from sumseg.checks import check_int, check_task_ids, shown
from sumseg.errors import CheckpointError, ConfigError
from sumseg.model_names import PRETRAINED, SAM2_NAMES, model_problems
from sumseg.models.hf_sam import HF_CONFIG, read_hf_folder
from sumseg.models.registry import ARCHS, build_sam
from sumseg.models.sam2_arch import SAM2_ARCHS, build_sam2
from sumseg.models.sam2_weights import is_sam2_folder, load_sam2_model
from sumseg.models.sum_sam import SumSam
from sumseg.models.sum_sam2 import SumSam2
from sumseg.models.task_prompts import DEFAULT_TASKS

FORMAT = "sumseg-checkpoint"
FORMAT_VERSION = 2  # 2: one metadata key (reproducible bytes); 1: three keys, still read


@dataclass
class CheckpointMeta:
    """What a sumseg checkpoint says about itself."""

    model: str
    task_ids: list[int]
    step: int = 0
    config: dict = field(default_factory=dict)
    sumseg_version: str = ""
    arch: dict = field(default_factory=dict)


def _version() -> str:
    from sumseg.version import __version__

    return __version__


def save_checkpoint(
    path: str | os.PathLike, model: SumSam | SumSam2, step: int = 0, config: Mapping | None = None
) -> Path:
    """Write ``model`` atomically as a sumseg checkpoint (safetensors + JSON metadata)."""
    meta = CheckpointMeta(
        model=model.name,
        task_ids=list(model.task_prompts.task_ids),
        step=int(step),
        config=dict(config or {}),
        sumseg_version=_version(),
        arch=(ARCHS[model.name] if isinstance(model, SumSam) else SAM2_ARCHS[model.name]).to_dict(),
    )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    header = {"sumseg": json_text({"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta.__dict__}, path)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=header)
    return path


_META_TYPES: dict[str, type] = {"model": str, "config": dict, "sumseg_version": str, "arch": dict}


def _ours(header: Mapping[str, str]) -> bool:
    """Whether a safetensors header is a sumseg checkpoint's (either layout)."""
    return header.get("format") == FORMAT if "format" in header else "sumseg" in header


def _meta(header: Mapping[str, str], path: Path) -> CheckpointMeta:
    """The checked metadata of a sumseg checkpoint's header: every field of its type, task ids
    distinct and below TASK_ID_LIMIT (an id sizes the task lookup table), a step >= 0."""
    try:
        packed = None if "format" in header else json.loads(header["sumseg"])
        if packed is not None and (not isinstance(packed, dict) or packed.get("format") != FORMAT):
            raise ValueError(f"not an object with format {FORMAT!r}")
    except (KeyError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: sumseg checkpoint with unreadable metadata: {e}") from e
    version = str(header.get("format_version")) if packed is None else str(packed.get("format_version"))
    if version not in ("1", str(FORMAT_VERSION)) or (packed is None) != (version == "1"):
        raise CheckpointError(
            f"{path}: sumseg checkpoint format version {shown(version)}; this sumseg reads versions 1 and "
            f"{FORMAT_VERSION}"
        )
    try:
        raw = json.loads(header["sumseg"]) if packed is None else packed.get("meta")
    except (KeyError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: sumseg checkpoint with unreadable metadata: {e}") from e
    fields = set(CheckpointMeta.__dataclass_fields__)
    if not isinstance(raw, dict) or not {"model", "task_ids"} <= raw.keys() <= fields:
        raise CheckpointError(f"{path}: sumseg checkpoint metadata must be an object with the fields {sorted(fields)}")
    for key, kind in _META_TYPES.items():
        if key in raw and not isinstance(raw[key], kind):
            raise CheckpointError(
                f"{path}: checkpoint metadata field '{key}' must be {kind.__name__}, got {type(raw[key]).__name__}"
            )
    raw["task_ids"] = check_task_ids(raw["task_ids"], path, "checkpoint metadata: task ids", CheckpointError)
    raw["step"] = check_int(raw.get("step", 0), path, "checkpoint metadata field 'step'", 0, None, CheckpointError)
    return CheckpointMeta(**raw)


def _check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Every floating-point tensor must be finite: NaN or infinity is refused, naming the tensor."""
    for key, t in state.items():
        if not (t.is_floating_point() or t.is_complex()):
            continue
        if t.is_floating_point() and t.element_size() == 1:
            t = t.float()  # 8-bit floats have no isfinite kernel
        if not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{path}: tensor '{key}' has {n} non-finite value{'s' if n > 1 else ''} (NaN or infinity); "
                "refusing to load it"
            )


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with a little-endian u64 header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n <= path.stat().st_size - 8


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], CheckpointMeta | None]:
    """Read weights to CPU without running pickled code.

    Returns (state_dict, meta): meta is None for a plain state_dict (official SAM ``.pth``,
    our export, or a Hugging Face ``SamModel`` folder, renamed to SAM's keys), whose keys are stock
    SAM keys. Metadata is checked field by field and every floating-point tensor must be finite
    (CheckpointError naming the file and tensor).
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)[1], None
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: damaged safetensors checkpoint (truncated or corrupt): {e}") from e
        meta = _meta(header, path) if _ours(header) else None
        _check_finite(state, path)
        return state, meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - arbitrary bytes make the restricted unpickler fail in any way
        # weights_only=True runs no code, so whatever failed, the file is simply not a state_dict

        raise CheckpointError(
            f"{path}: not a readable checkpoint (neither safetensors nor a torch state_dict; "
            f"truncated or not a checkpoint at all): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict of tensors")
    _check_finite(obj, path)
    return dict(obj), None


def _read_folder(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """A Hugging Face ``SamModel`` folder (:mod:`sumseg.models.hf_sam`) → (its registry name, stock SAM
    state_dict), every floating-point tensor finite."""
    name, state = read_hf_folder(path)
    _check_finite(state, path)
    return name, state


def read_meta(path: str | os.PathLike) -> CheckpointMeta | None:
    """The checked metadata of a sumseg checkpoint, without reading its tensors; None for any other file."""
    path = Path(path)
    if not path.is_file() or not _is_safetensors(path):
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged safetensors checkpoint (truncated or corrupt): {e}") from e
    return _meta(header, path) if _ours(header) else None


def _fingerprint_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the registry model whose architecture matches a stock SAM state_dict, if any."""
    pos = state.get("image_encoder.pos_embed")
    if pos is None or pos.ndim != 4:
        return None
    depth = 1 + max((int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")), default=-1)
    hq = "mask_decoder.hf_token.weight" in state
    for name, arch in ARCHS.items():
        grid = arch.image_size // arch.patch_size
        if (arch.hq, arch.encoder_depth, arch.encoder_embed_dim, grid) == (hq, depth, pos.shape[3], pos.shape[1]):
            return name
    return None


def check_state_dict(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], name: str, path: Path
) -> None:
    """Raise CheckpointError naming the model and the first mismatching keys/shapes/dtype kinds."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and tuple(got[k].shape) != tuple(v.shape)
    ]
    dtypes = [  # a float parameter loaded from an int, bool or complex tensor would be silently cast
        f"{k}: checkpoint {got[k].dtype} vs model {v.dtype}"
        for k, v in expected.items()
        if k in got and (got[k].is_floating_point(), got[k].is_complex()) != (v.is_floating_point(), v.is_complex())
    ]
    if not (missing or unexpected or shapes or dtypes):
        return
    parts = [f"{path}: checkpoint does not fit model {name!r}"]
    guess = _fingerprint_arch(got)
    if guess and guess != name:
        parts.append(f"it looks like a {guess!r} checkpoint")
    kinds = ("shape mismatches", shapes), ("dtype mismatches", dtypes), ("missing keys", missing)
    for label, items in (*kinds, ("unexpected keys", unexpected)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    raise CheckpointError("; ".join(parts))


Sam2Name = Literal["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "sam2_tiny"]


@overload
def build_model(name: Sam2Name, checkpoint: str | os.PathLike | None = None,  # type: ignore[overload-overlap]
                tasks: Sequence[int] = DEFAULT_TASKS) -> SumSam2: ...
@overload
def build_model(name: str | None = None, checkpoint: str | os.PathLike | None = None,
                tasks: Sequence[int] = DEFAULT_TASKS) -> SumSam: ...
def build_model(
    name: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    tasks: Sequence[int] = DEFAULT_TASKS,
) -> SumSam | SumSam2:
    """Build a task-conditioned SAM by registry name, optionally loading weights (eval mode).

    A name in :data:`~sumseg.model_names.PRETRAINED` (``tiny_foundation``) loads the weights
    shipped with sumseg (its own task ids; no checkpoint). ``name`` and ``checkpoint`` follow
    :func:`~sumseg.model_names.model_problems` (ConfigError otherwise).

    ``checkpoint`` may be an official SAM/HQ-SAM ``.pth`` (a state_dict of ``name``), an
    exported stock file, a sumseg checkpoint (see :func:`load_checkpoint`), or a local Hugging Face
    ``SamModel`` folder (``config.json`` + ``model.safetensors``; its config names the model, so
    ``name`` may be omitted; :mod:`sumseg.models.hf_sam`).

    A SAM 2 name (:data:`~sumseg.model_names.SAM2_NAMES`), or a ``Sam2Model`` folder with no name, gives a
    :class:`~sumseg.models.sum_sam2.SumSam2` (:func:`~sumseg.models.sam2_weights.load_sam2_model`: random
    weights, the folder, or Meta's ``.pt``); every command takes these names (``--model``, ``model.name``).
    """
    ours = checkpoint is not None and Path(checkpoint).is_file() and read_meta(checkpoint) is not None
    if not ours and (name in SAM2_NAMES or (name is None and is_sam2_folder(checkpoint))):
        return load_sam2_model(name, None if checkpoint is None else Path(checkpoint), tasks)
    if ours and name in SAM2_NAMES:  # a sumseg checkpoint of a SumSam2 (it must hold that model)
        assert checkpoint is not None
        return load_checkpoint(checkpoint, name, tasks)[0]
    problems = model_problems(name, checkpoint, ("name", "checkpoint"))
    if problems:
        raise ConfigError("; ".join(m for _, m in problems))
    if name in PRETRAINED:
        if not PRETRAINED[name].is_file():
            raise CheckpointError(f"{PRETRAINED[name]}: the {name!r} weights are not in this installation")
        return load_checkpoint(PRETRAINED[name])[0]
    if checkpoint is not None:
        return load_checkpoint(checkpoint, name, tasks)[0]
    assert name is not None
    return SumSam(build_sam(name), tasks, name).eval()


def load_checkpoint(
    path: str | os.PathLike, name: str | None = None, tasks: Sequence[int] = DEFAULT_TASKS
) -> tuple[SumSam, CheckpointMeta | None]:
    """Load a checkpoint into a new model; also return its metadata (None for a plain state_dict).

    For a sumseg checkpoint or a ``SamModel`` folder ``name`` may be omitted (when given it must match) and the
    checkpoint's task ids replace ``tasks``. A plain state_dict needs ``name``.
    """
    path = Path(path)
    if path.is_dir():  # a SamModel folder: its config.json names the architecture
        held, state = _read_folder(path)
        if name is not None and name != held:
            raise CheckpointError(f"{path}: its {HF_CONFIG} describes a {held!r} model, not {name!r}")
        name, meta = held, None
    else:
        state, meta = read_checkpoint(path)
    if meta is not None:
        if name is not None and name != meta.model:
            raise CheckpointError(f"{path}: checkpoint holds a {meta.model!r} model, not {name!r}")
        name, tasks = meta.model, meta.task_ids
    if name is None:
        guess = _fingerprint_arch(state)
        hint = f" (it looks like {guess!r})" if guess else ""
        raise CheckpointError(f"{path}: a plain state_dict does not say its model: pass a model name{hint}")
    if meta is not None and name in SAM2_ARCHS:  # a sumseg checkpoint of a SumSam2
        model2 = SumSam2(build_sam2(name, seed=None), tasks, name)
        check_state_dict(model2.state_dict(), state, name, path)
        model2.load_state_dict(state, strict=True)
        return model2.eval(), meta  # type: ignore[return-value]  # build_model's overloads type it
    if name not in ARCHS:
        raise CheckpointError(f"{path}: model {name!r} is not one sumseg knows ({', '.join(ARCHS)})")
    model = SumSam(build_sam(name), tasks, name)
    target = model if meta is not None else model.sam
    check_state_dict(target.state_dict(), state, name, path)
    target.load_state_dict(state, strict=True)
    return model.eval(), meta
