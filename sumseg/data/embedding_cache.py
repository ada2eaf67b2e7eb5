"""On-disk cache of SAM image embeddings: computed once, stored fp16 in a memory-mapped array.

Files in the cache folder:

- ``meta.json``: cache format version, the encoder fingerprint, embedding shape (C, h, w);
- ``embeddings-<id>.npy``: (capacity, C, h, w) float16, memory-mapped. A file is only ever
  appended to: rows named by an index are never rewritten, and a full array grows into a *new*
  file (copy, flush) that the next index names; the old file is then unlinked (a handle that
  maps it keeps reading its own, still correct, rows). No file another handle maps is ever
  truncated or recreated in place;
- ``index.json``: ``{"fingerprint", "array": <file name>, "rows": {image key: row}}``, rewritten
  atomically after the array is flushed, so it never names a row that is not on disk. A killed
  build resumes from the last flushed index; a build stopped by an exception flushes first;
- ``build.lock``: held (``flock``) while a build runs. One cache folder is built by one process
  at a time; a second concurrent build raises :class:`~sumseg.outputs.OutputError` (under DDP,
  let rank 0 build and the other ranks open the cache afterwards).

Several handles (processes) may share a folder: ``build`` re-reads the index under the lock
before adding rows, ``get`` re-reads it once when a key is missing (:meth:`EmbeddingCache.refresh`).
Opening validates the array against the index and the model: a truncated file, a wrong dtype,
shape or memory order, or an index row outside the array raises :class:`DataError` naming the
file, so a damaged cache is never served.

Keys are :func:`sumseg.data.images.content_key` of the decoded RGB image (pixels + shape). The
fingerprint hashes the image encoder's state_dict (names, shapes, dtypes, bytes), its input
size, SAM's pixel mean/std, the preprocessing and :data:`CACHE_VERSION`. Opening a cache whose
fingerprint differs raises :class:`DataError` (``on_mismatch="raise"``, the default) or deletes
its files and starts empty (``on_mismatch="rebuild"``): stale embeddings are never served.
``build`` checks the fingerprint again, so weights changed after opening are caught too.

Preprocessing is exactly ``SamPredictor.set_image``'s: ``ResizeLongestSide(img_size)``, HWC→CHW,
``sam.preprocess`` (normalise, pad), ``sam.image_encoder`` in eval mode under ``no_grad``.
HQ-SAM's encoder also returns intermediate features, which this cache does not store: HQ models
are refused with :class:`ConfigError`. The cache takes a :class:`CacheEncoder`, which each model gives
(``cache_encoder()`` of the model interface): SAM 1's is :class:`SamCacheEncoder` (the fingerprint and
preprocessing above), SAM 2's ``Sam2CacheEncoder`` (its embeddings packed with the high-res levels, its
own fingerprint).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from tqdm import tqdm

from sumseg.atomic import write_json, writing
from sumseg.checks import load_json
from sumseg.data.images import content_key
from sumseg.data.records import ImageRecord
from sumseg.errors import ConfigError, DataError
from sumseg.outputs import check_output_dir, folder_lock

CACHE_VERSION = 2  # 2: append-only arrays named by the index
PREPROCESSING = "ResizeLongestSide+Sam.preprocess"


class CacheEncoder(Protocol):
    """What the cache stores of a model: one (C, h, w) float32 array per image (``shape``), and a
    fingerprint of everything that array depends on besides the image."""

    shape: tuple[int, int, int]

    def fingerprint(self) -> str:
        """Hex digest of everything that determines an image's array besides the image."""
        ...

    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        """(C, h, w) float32 array of an (H, W, 3) uint8 RGB image."""
        ...


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


class SamCacheEncoder:
    """SAM 1's :class:`CacheEncoder`: the (C, h, w) image embeddings of ``sam`` (:func:`encode_image`),
    fingerprinted by :func:`encoder_fingerprint`. HQ-SAM is refused with :class:`ConfigError`."""

    def __init__(self, sam: Sam) -> None:
        if "segment_anything_hq" in type(sam).__module__:
            raise ConfigError(
                "the embedding cache stores plain SAM embeddings; HQ-SAM's encoder also returns "
                "intermediate features, so HQ models cannot use it"
            )
        self.sam = sam
        h, w = sam.prompt_encoder.image_embedding_size
        self.shape: tuple[int, int, int] = (sam.prompt_encoder.embed_dim, h, w)

    def fingerprint(self) -> str:
        """:func:`encoder_fingerprint` of ``sam``."""
        return encoder_fingerprint(self.sam)

    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        """(C, h, w) float32 embedding of an (H, W, 3) uint8 RGB image (:func:`encode_image`)."""
        return encode_image(self.sam, rgb)


class EmbeddingCache:
    """Image arrays of one model's :class:`CacheEncoder`, keyed by image content (layout in the module docstring)."""

    def __init__(
        self, root: str | Path, encoder: CacheEncoder, on_mismatch: Literal["raise", "rebuild"] = "raise"
    ) -> None:
        self.root = Path(root)
        self.encoder = encoder
        self.fingerprint = self._current_fingerprint()
        self.shape: tuple[int, ...] = tuple(encoder.shape)
        self.rows: dict[str, int] = {}
        self._array: str | None = None  # file name of the mapped array
        self._mm: np.memmap | None = None
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            return
        meta = load_json(meta_path)
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("fingerprint") == self.fingerprint and meta.get("version") == CACHE_VERSION:
            self.refresh()
        elif on_mismatch == "rebuild":
            self.clear()
        else:
            raise DataError(
                f"{meta_path}: embedding cache was built for another image encoder, preprocessing or "
                f"cache version (fingerprint {str(meta.get('fingerprint'))[:12]}..., this model "
                f"{self.fingerprint[:12]}...); rebuild it (on_mismatch='rebuild') or use another folder"
            )

    def _current_fingerprint(self) -> str:
        return self.encoder.fingerprint()

    def refresh(self, writable: bool = False) -> None:
        """Re-read ``index.json`` and map the array it names (picks up what other handles built)."""
        for _ in range(5):  # another handle may swap the array between reading the index and opening it
            index = self._read_index()
            if index is None:
                self.rows, self._array, self._mm = {}, None, None
                return
            name, rows = index
            try:
                mm = _open_array(self.root / name, self.shape, writable)
            except FileNotFoundError:
                continue
            _check_rows(self.root / "index.json", rows, mm.shape[0])
            self.rows, self._array, self._mm = rows, name, mm
            return
        raise DataError(f"{self.root / 'index.json'}: names the array file {name}, which does not exist; "
                        f"delete the folder {self.root}")

    def _read_index(self) -> tuple[str, dict[str, int]] | None:
        """(array file name, rows) of ``index.json``; None when there is no index or no row yet."""
        path = self.root / "index.json"
        if not path.is_file():
            return None  # killed before the first flush: an empty cache
        index = load_json(path)
        if not isinstance(index, dict) or not isinstance(index.get("rows"), dict):
            raise DataError(f"{path}: malformed embedding-cache index; delete the folder {self.root}")
        if index.get("fingerprint") not in (None, self.fingerprint):
            raise DataError(f"{path}: the cache was rebuilt for another image encoder since this handle "
                            "opened it; open it again with the model it was built for")
        name, rows = index.get("array"), index["rows"]
        if not rows:
            return None
        if not isinstance(name, str) or not _ARRAY_NAME.fullmatch(name):
            raise DataError(f"{path}: malformed embedding-cache index (array file {name!r}); "
                            f"delete the folder {self.root}")
        return name, rows

    def clear(self) -> None:
        """Delete the cache's files (under the build lock); the cache is empty afterwards."""
        with self._build_lock():
            self.rows, self._array, self._mm = {}, None, None
            for path in [self.root / "meta.json", self.root / "index.json", *self.root.glob("embeddings*.npy")]:
                path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def get(self, key: str) -> torch.Tensor:
        """(C, h, w) float32 embedding of the image with content key ``key`` (KeyError if absent).

        A key this handle does not know yet is looked up again after re-reading the index.
        """
        if key not in self.rows:
            self.refresh(writable=self._mm is not None and self._mm.mode == "r+")
        if key not in self.rows or self._mm is None:
            raise KeyError(f"image {key} is not in the embedding cache {self.root}")
        return torch.from_numpy(np.array(self._mm[self.rows[key]], dtype=np.float32))

    def _flush(self, stale: list[Path]) -> None:
        """Rows to disk, then the index that names them, then unlink arrays no index names any more."""
        assert self._mm is not None
        self._mm.flush()
        write_json(self.root / "index.json", {"fingerprint": self.fingerprint, "array": self._array,
                                              "rows": self.rows})
        for path in stale:
            path.unlink(missing_ok=True)
        stale.clear()

    def _new_array(self, capacity: int, stale: list[Path]) -> None:
        """Map a new array file of ``capacity`` rows holding this handle's rows (growth, or the first one)."""
        name = f"embeddings-{secrets.token_hex(8)}.npy"  # a name no handle has mapped
        path = self.root / name
        try:
            with writing(path):  # a full disk names the array (the file is sized in full when it is made)
                new = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(capacity, *self.shape))
                if self._mm is not None:
                    used = max(self.rows.values(), default=-1) + 1
                    new[:used] = self._mm[:used]
                new.flush()
        except BaseException:
            path.unlink(missing_ok=True)  # no index names it yet
            raise
        if self._mm is not None:
            stale.append(self.root / str(self._array))
        self._mm, self._array = new, name

    def _remove_orphans(self) -> None:
        """Arrays no index names (left by a build killed before its first flush after growing)."""
        for path in self.root.glob("embeddings*.npy"):
            if path.name != self._array:
                path.unlink(missing_ok=True)

    @contextmanager
    def _build_lock(self) -> Iterator[None]:
        """Hold ``build.lock`` (an exclusive ``flock``, released by the OS if the process dies)."""
        check_output_dir(self.root, label="embedding cache folder")
        with folder_lock(self.root, "build.lock", label="embedding cache folder",
                         busy="another process is building this embedding cache; build one cache folder "
                              "from one process at a time (under DDP: rank 0 builds, then the others open it)"):
            yield

    def build(
        self, records: Sequence[ImageRecord], progress: bool = True, flush_every: int = 32
    ) -> list[str]:
        """Compute the missing embeddings of ``records`` (one image at a time); return their keys in order.

        Rows are flushed every ``flush_every`` new embeddings and when the build ends, also by an
        exception (e.g. an unreadable image), so nothing computed is lost. One process builds a
        cache folder at a time: a second concurrent ``build`` raises OutputError.
        """
        if self._current_fingerprint() != self.fingerprint:
            raise DataError(
                f"{self.root}: the model's image encoder changed since this cache was opened; "
                "open the cache again for the new weights"
            )
        keys: list[str] = []
        pending = 0
        stale: list[Path] = []  # array files to unlink once an index no longer names them
        with self._build_lock():
            self.refresh(writable=True)  # rows other handles added since this one read the index
            self._remove_orphans()
            if not (self.root / "meta.json").is_file():
                write_json(self.root / "meta.json", {"version": CACHE_VERSION, "fingerprint": self.fingerprint,
                                                     "shape": list(self.shape), "dtype": "float16"})
            try:
                for i, rec in enumerate(tqdm(records, desc="embeddings", unit="img", disable=not progress)):
                    rgb = rec.load_image()
                    key = content_key(rgb)
                    keys.append(key)
                    if key in self.rows:
                        continue
                    emb = self.encoder.encode(rgb).to(torch.float16).cpu().numpy()
                    if emb.shape != self.shape:
                        raise DataError(f"{self.root}: the model gives embeddings of shape {emb.shape}, "
                                        f"its prompt encoder expects {self.shape}")
                    row = max(self.rows.values(), default=-1) + 1
                    if self._mm is None or row >= self._mm.shape[0]:
                        self._new_array(max(2 * row, row + len(records) - i), stale)
                    assert self._mm is not None
                    self._mm[row] = emb
                    self.rows[key] = row
                    pending += 1
                    if pending >= flush_every:
                        self._flush(stale)
                        pending = 0
            finally:
                if pending:
                    self._flush(stale)
        return keys


_ARRAY_NAME = re.compile(r"embeddings-[0-9a-f]{16}\.npy")


def _open_array(path: Path, shape: tuple[int, ...], writable: bool) -> np.memmap:
    """Map a cache array after checking its header and size: (capacity, *shape) float16, C order.

    The header and the size are checked on the same open file that is mapped (numpy would pad a
    short file with zeros in ``r+`` mode); a header whose length field was changed would shift
    every row, so the data must start on numpy's alignment and end at the file's end.
    FileNotFoundError propagates (the caller retries).
    """
    with open(path, "r+b" if writable else "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            got_shape, fortran, dtype = read_header(f)
        except Exception as e:  # noqa: BLE001 - numpy parses the header with ast/tokenize: any failure means malformed
            why = (str(e).splitlines() or [""])[0][:100]
            raise DataError(f"{path}: not a readable .npy array ({type(e).__name__}: {why}); "
                            f"delete the folder {path.parent}") from e
        offset = f.tell()
        if dtype != np.float16 or fortran or len(got_shape) != 4 or tuple(got_shape[1:]) != shape:
            raise DataError(f"{path}: embedding array is {dtype} {tuple(got_shape)}"
                            f"{' (Fortran order)' if fortran else ''}; this model's cache needs float16 "
                            f"(N, {', '.join(map(str, shape))}); delete the folder {path.parent}")
        need = offset + math.prod(got_shape) * 2  # exact (np.prod would wrap around for huge shapes)
        size = os.fstat(f.fileno()).st_size
        if size < need:
            raise DataError(f"{path}: embedding array is truncated ({size} bytes, its header needs {need}); "
                            f"delete the folder {path.parent}")
        if size != need or offset % np.lib.format.ARRAY_ALIGN:  # numpy writes aligned headers, exact sizes
            raise DataError(f"{path}: embedding array's header does not fit the file ({size} bytes, data at "
                            f"byte {offset}, header says {need}); delete the folder {path.parent}")
        return np.memmap(f, dtype=np.float16, mode="r+" if writable else "r", offset=offset, shape=tuple(got_shape))


def _check_rows(index_path: Path, rows: dict, capacity: int) -> None:
    """Index rows must be distinct ints inside the array (a row outside it would read another image)."""
    seen: set[int] = set()
    for key, row in rows.items():
        if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < capacity:
            problem = f"is not a row of the array ({capacity} rows)"
        elif row in seen:
            problem = "another image has too"
        else:
            seen.add(row)
            continue
        raise DataError(f"{index_path}: image {key} has row {row!r}, which {problem}; "
                        f"delete the folder {index_path.parent}")
