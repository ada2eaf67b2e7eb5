"""sumseg's own tensor files and digests: safetensors written atomically with ONE JSON metadata key
(so equal content gives equal bytes), read back with their format checked; blake2b digests of a
module's state and of a file's bytes (what stores and caches record to detect a stale input)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sumseg.atomic import atomic_path, json_text
from sumseg.errors import DataError


def state_fingerprint(module: torch.nn.Module) -> str:
    """Hex blake2b-160 of a module's state_dict (names, shapes, dtypes, bytes)."""
    h = hashlib.blake2b(digest_size=20)
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """Hex blake2b-128 of a file's bytes."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a safetensors file atomically; ``meta`` goes in as ONE JSON string (key order is then fixed,
    so equal content gives equal bytes: safetensors does not keep the order of several metadata keys)."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                  metadata={"sumseg": json_text(meta, path, sort_keys=True)})


def read_tensors(path: Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a file written by :func:`save_tensors` whose metadata says ``format == fmt``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (the store is incomplete; rerun the command that writes it)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(header.get("sumseg", "{}"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: unreadable safetensors file (truncated or corrupt): {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise DataError(f"{path}: not a {fmt} file (no sumseg metadata saying so)")
    return tensors, meta
