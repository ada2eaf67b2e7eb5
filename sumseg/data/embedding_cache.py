"""On-disk cache of SAM image embeddings: computed once, stored fp16 in a memory-mapped array.

Files in the cache folder:

- ``meta.json``: cache format version, the encoder fingerprint, embedding shape (C, h, w);
- ``embeddings.npy``: (capacity, C, h, w) float16, opened with ``np.lib.format.open_memmap``;
- ``index.json``: image key → row, rewritten atomically after the array is flushed, so it never
  names a row that is not on disk. A killed build resumes from the last flushed index; a build
  stopped by an exception flushes what it computed first;
- ``build.lock``: held (``flock``) while a build runs. One cache folder is built by one process
  at a time; a second concurrent build raises :class:`DataError` (under DDP, let rank 0 build
  and the other ranks open the cache afterwards).

Keys are :func:`sumseg.data.images.content_key` of the decoded RGB image (pixels + shape). The
fingerprint hashes the image encoder's state_dict (names, shapes, dtypes, bytes), its input
size, SAM's pixel mean/std, the preprocessing and :data:`CACHE_VERSION`. Opening a cache whose
fingerprint differs raises :class:`DataError` (``on_mismatch="raise"``, the default) or deletes
its files and starts empty (``on_mismatch="rebuild"``): stale embeddings are never served.
``build`` checks the fingerprint again, so weights changed after opening are caught too.

Preprocessing is exactly ``SamPredictor.set_image``'s: ``ResizeLongestSide(img_size)``, HWC→CHW,
``sam.preprocess`` (normalise, pad), ``sam.image_encoder`` in eval mode under ``no_grad``.
HQ-SAM's encoder also returns intermediate features, which this cache does not store: HQ models
are refused with :class:`ConfigError`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, cast

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from tqdm import tqdm

from sumseg.atomic import atomic_path
from sumseg.data.checks import load_json
from sumseg.data.images import content_key
from sumseg.data.records import ImageRecord
from sumseg.errors import ConfigError, DataError

CACHE_VERSION = 1
PREPROCESSING = "ResizeLongestSide+Sam.preprocess"


def encoder_fingerprint(sam: Sam) -> str:
    """Hex blake2b-160 of everything that determines an embedding besides the image."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"v{CACHE_VERSION}|{PREPROCESSING}|img_size={sam.image_encoder.img_size}|".encode())
    h.update(sam.pixel_mean.detach().cpu().double().numpy().tobytes())
    h.update(sam.pixel_std.detach().cpu().double().numpy().tobytes())
    for name, t in sorted(sam.image_encoder.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def encode_image(sam: Sam, rgb: np.ndarray) -> torch.Tensor:
    """(C, h, w) float32 embedding of an (H, W, 3) uint8 RGB image, computed by ``SamPredictor`` itself."""
    was_training = sam.training
    sam.eval()
    try:
        predictor = SamPredictor(sam)
        predictor.set_image(rgb)
        return predictor.features[0].float()
    finally:
        sam.train(was_training)


class EmbeddingCache:
    """Image embeddings of one SAM image encoder, keyed by image content (layout in the module docstring)."""

    def __init__(
        self, root: str | Path, sam: Sam, on_mismatch: Literal["raise", "rebuild"] = "raise"
    ) -> None:
        if "segment_anything_hq" in type(sam).__module__:
            raise ConfigError(
                "the embedding cache stores plain SAM embeddings; HQ-SAM's encoder also returns "
                "intermediate features, so HQ models cannot use it"
            )
        self.root = Path(root)
        self.sam = sam
        self.fingerprint = encoder_fingerprint(sam)
        self.rows: dict[str, int] = {}
        self._mm: np.memmap | None = None
        meta_path = self.root / "meta.json"
        if meta_path.is_file():
            meta = load_json(meta_path)
            meta = meta if isinstance(meta, dict) else {}
            if meta.get("fingerprint") != self.fingerprint or meta.get("version") != CACHE_VERSION:
                if on_mismatch != "rebuild":
                    raise DataError(
                        f"{meta_path}: embedding cache was built for another image encoder, preprocessing or "
                        f"cache version (fingerprint {str(meta.get('fingerprint'))[:12]}..., this model "
                        f"{self.fingerprint[:12]}...); rebuild it (on_mismatch='rebuild') or use another "
                        "folder"
                    )
                self.clear()
            else:
                self._open_existing()

    def _open_existing(self) -> None:
        """Load the index and map the array of a cache whose fingerprint matched."""
        index_path, array_path = self.root / "index.json", self.root / "embeddings.npy"
        if not array_path.is_file():
            return  # killed before the first row was written: an empty cache
        index = load_json(index_path) if index_path.is_file() else {"rows": {}}  # killed before the first flush
        rows = index.get("rows") if isinstance(index, dict) else None
        if not isinstance(rows, dict) or index.get("fingerprint") not in (None, self.fingerprint):
            raise DataError(f"{index_path}: malformed embedding-cache index; delete the folder {self.root}")
        self._mm = cast(np.memmap, np.load(array_path, mmap_mode="r+"))
        self.rows = {str(k): int(v) for k, v in rows.items() if int(v) < self._mm.shape[0]}

    def clear(self) -> None:
        """Delete the cache's files; the cache is empty afterwards."""
        self._mm = None
        self.rows = {}
        for name in ("meta.json", "index.json", "embeddings.npy"):
            (self.root / name).unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def get(self, key: str) -> torch.Tensor:
        """(C, h, w) float32 embedding of the image with content key ``key`` (KeyError if absent)."""
        if key not in self.rows or self._mm is None:
            raise KeyError(f"image {key} is not in the embedding cache {self.root}")
        return torch.from_numpy(np.array(self._mm[self.rows[key]], dtype=np.float32))

    def _flush(self) -> None:
        assert self._mm is not None
        self._mm.flush()  # rows on disk before the index names them
        with atomic_path(self.root / "index.json") as tmp:
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "rows": self.rows}))

    def _ensure_row(self, emb: np.ndarray, remaining: int) -> int:
        """Row for a new embedding, growing (copy + atomic replace) the array when it is full."""
        row = len(self.rows)
        if self._mm is None:
            self.root.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.root / "meta.json") as tmp:
                tmp.write_text(
                    json.dumps(
                        {
                            "version": CACHE_VERSION,
                            "fingerprint": self.fingerprint,
                            "shape": list(emb.shape),
                            "dtype": "float16",
                        }
                    )
                )
            self._mm = np.lib.format.open_memmap(
                self.root / "embeddings.npy", mode="w+", dtype=np.float16, shape=(remaining, *emb.shape)
            )
        elif row >= self._mm.shape[0]:
            grown = self.root / "embeddings.npy.grow"
            new = np.lib.format.open_memmap(
                grown,
                mode="w+",
                dtype=np.float16,
                shape=(max(2 * self._mm.shape[0], row + remaining), *emb.shape),
            )
            new[:row] = self._mm[:row]
            new.flush()
            del new
            self._mm = None
            grown.replace(self.root / "embeddings.npy")
            self._mm = cast(np.memmap, np.load(self.root / "embeddings.npy", mmap_mode="r+"))
        return row

    @contextmanager
    def _build_lock(self) -> Iterator[None]:
        """Hold ``build.lock`` (an exclusive ``flock``, released by the OS if the process dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock_path = self.root / "build.lock"
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise DataError(
                    f"{lock_path}: another process is building this embedding cache; build one cache "
                    "folder from one process at a time (under DDP: rank 0 builds, then the others open it)"
                ) from e
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def build(
        self, records: Sequence[ImageRecord], progress: bool = True, flush_every: int = 32
    ) -> list[str]:
        """Compute the missing embeddings of ``records`` (one image at a time); return their keys in order.

        Rows are flushed every ``flush_every`` new embeddings and when the build ends, also by an
        exception (e.g. an unreadable image), so nothing computed is lost. One process builds a
        cache folder at a time: a second concurrent ``build`` raises :class:`DataError`.
        """
        if encoder_fingerprint(self.sam) != self.fingerprint:
            raise DataError(
                f"{self.root}: the model's image encoder changed since this cache was opened; "
                "open the cache again for the new weights"
            )
        keys: list[str] = []
        pending = 0
        with self._build_lock():
            try:
                for i, rec in enumerate(tqdm(records, desc="embeddings", unit="img", disable=not progress)):
                    rgb = rec.load_image()
                    key = content_key(rgb)
                    keys.append(key)
                    if key in self.rows:
                        continue
                    emb = encode_image(self.sam, rgb).to(torch.float16).cpu().numpy()
                    row = self._ensure_row(emb, len(records) - i)
                    assert self._mm is not None
                    if tuple(self._mm.shape[1:]) != emb.shape:
                        raise DataError(
                            f"{self.root / 'meta.json'}: cached embeddings are {tuple(self._mm.shape[1:])}, "
                            f"the model gives {emb.shape}"
                        )
                    self._mm[row] = emb
                    self.rows[key] = row
                    pending += 1
                    if pending >= flush_every:
                        self._flush()
                        pending = 0
            finally:
                if pending and self._mm is not None:
                    self._flush()
        return keys
