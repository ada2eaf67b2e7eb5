"""COCO run-length encoding (RLE) of masks: encode, decode, and validation before decoding.

An RLE here is pycocotools' compressed form ``{"size": [h, w], "counts": bytes}`` (column-major
runs, background first). pycocotools' C decoder writes past its buffer when the runs do not sum
to h·w, so every RLE that comes from a file is checked by :func:`check_rle` first.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

Rle = dict[str, Any]


def encode(mask: np.ndarray) -> Rle:
    """Compressed RLE of an (H, W) bool/0-1 mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}


def decode(rle: Rle) -> np.ndarray:
    """(H, W) bool mask of a compressed RLE."""
    with warnings.catch_warnings():  # pycocotools' Cython decoder trips numpy 2's copy-keyword warning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def area(rle: Rle) -> int:
    """Foreground pixel count of a compressed RLE."""
    return int(mask_utils.area(rle))


def bbox(rle: Rle) -> tuple[float, float, float, float]:
    """Tight box (x, y, w, h) in COCO convention (pixels, exclusive end)."""
    x, y, w, h = mask_utils.toBbox(rle).tolist()
    return float(x), float(y), float(w), float(h)


def to_json(rle: Rle) -> dict[str, Any]:
    """JSON-serialisable copy (counts as ASCII str)."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def _compressed_counts(s: bytes) -> np.ndarray:
    """Run lengths of a compressed counts string (pycocotools' rleFrString, vectorised).

    Raises ValueError on characters outside the alphabet or a truncated last value.
    """
    c = np.frombuffer(s, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("counts string has characters outside the RLE alphabet")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ValueError("counts string ends inside a value")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(c.size) - starts[group]
    if k.max() > 11:
        raise ValueError("counts string has a value longer than 12 characters")
    vals = np.zeros(ends.size, np.int64)
    np.add.at(vals, group, (c & 0x1F) << (5 * k))
    neg = (c[ends] & 0x10) != 0
    vals[neg] -= np.left_shift(1, 5 * (ends[neg] - starts[neg] + 1))
    cnts = vals.copy()
    # counts[m] += counts[m - 2] for m > 2: running sums over the odd and the even (from 2) indices
    cnts[1::2] = np.cumsum(vals[1::2])
    if cnts.size > 2:
        cnts[2::2] = np.cumsum(vals[2::2])
    return cnts


def check_rle(segm: Any) -> str | None:
    """Why the RLE dict ``segm`` (compressed or uncompressed) is malformed, or None when valid."""
    if not isinstance(segm, dict) or "size" not in segm or "counts" not in segm:
        return "RLE segmentation needs 'size' and 'counts'"
    size = segm["size"]
    if not (
        isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    ):
        return f"RLE 'size' must be [height, width] of positive ints, got {size!r}"
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts):
            return "uncompressed RLE 'counts' must be non-negative ints"
        runs = np.asarray(counts, dtype=np.int64)
    elif isinstance(counts, str | bytes):
        try:
            runs = _compressed_counts(counts.encode("ascii") if isinstance(counts, str) else counts)
        except (ValueError, UnicodeEncodeError) as e:
            return f"compressed RLE 'counts' is malformed ({e})"
        if runs.size and runs.min() < 0:
            return "compressed RLE 'counts' decodes to negative run lengths"
    else:
        return f"RLE 'counts' must be a string or a list of ints, got {type(counts).__name__}"
    total = int(runs.sum())
    if total != size[0] * size[1]:
        return f"RLE runs cover {total} pixels, but size {size[0]}x{size[1]} has {size[0] * size[1]}"
    return None


def from_segmentation(segm: Any, height: int, width: int) -> Rle:
    """Compressed RLE from a validated COCO segmentation (polygons, or RLE of the given size)."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in segm], height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def check_polygons(segm: Any) -> str | None:
    """Why a COCO polygon list is malformed, or None when valid."""
    if not isinstance(segm, list) or not segm:
        return "polygon segmentation must be a non-empty list of polygons"
    for poly in segm:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return "each polygon must be a flat list of at least 3 (x, y) pairs"
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
            return "polygon coordinates must be finite numbers"
    return None
