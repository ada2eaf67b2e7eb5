"""COCO run-length encoding (RLE) of masks: encode, decode, and validation before decoding.

An RLE here is pycocotools' compressed form ``{"size": [h, w], "counts": bytes}`` (column-major
runs, background first). pycocotools' C decoder writes past its buffer when the runs do not sum
to h·w, and its polygon rasteriser crashes on huge coordinates, so every RLE and polygon that
comes from a file is checked by :func:`check_rle` / :func:`check_polygons` first.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from sumseg.checks import is_int, is_real, shown

Rle = dict[str, Any]
OUTLINE_PER_SIDE = 64  # polygon outline allowed: 64·(H + W) pixels ...
OUTLINE_PER_VERTEX = 4  # ... plus 4 per vertex (a traced outline has a vertex every pixel or two)


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


def check_rle(segm: Any, height: int, width: int) -> str | None:
    """Why the RLE dict ``segm`` (compressed or uncompressed) is not a valid mask of an (height,
    width) image, or None. Every run length must lie in [0, H·W]: pycocotools keeps runs in 32
    bits, so a longer run would make it decode another mask than the one checked here."""
    if not isinstance(segm, dict) or "size" not in segm or "counts" not in segm:
        return "RLE segmentation needs 'size' and 'counts'"
    size = segm["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(is_int(v) and v > 0 for v in size)):
        return f"RLE 'size' must be [height, width] of positive ints, got {shown(size)}"
    if list(size) != [height, width]:
        return f"mask size {size[0]}x{size[1]} (HxW) differs from the image size {height}x{width}"
    pixels = height * width
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(is_int(v) and 0 <= v <= pixels for v in counts):
            return f"uncompressed RLE 'counts' must be run lengths from 0 to {pixels} (the image's pixels)"
        total = sum(counts)
    elif isinstance(counts, str | bytes):
        try:
            runs = _compressed_counts(counts.encode("ascii") if isinstance(counts, str) else counts)
        except (ValueError, UnicodeEncodeError) as e:
            return f"compressed RLE 'counts' is malformed ({e})"
        if runs.size and (runs.min() < 0 or runs.max() > pixels):
            return f"compressed RLE 'counts' decodes to a run length outside [0, {pixels}] (the image's pixels)"
        total = int(runs.sum())  # at most len(runs) * pixels: no overflow
    else:
        return f"RLE 'counts' must be a string or a list of ints, got {type(counts).__name__}"
    if total != pixels:
        return f"RLE runs cover {total} pixels, but size {height}x{width} has {pixels}"
    return None


def from_segmentation(segm: Any, height: int, width: int) -> Rle:
    """Compressed RLE from a validated COCO segmentation (polygons, or RLE of the given size)."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in segm], height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def check_polygons(segm: Any, height: int, width: int) -> str | None:
    """Why a COCO polygon list is not a valid outline in an (height, width) image, or None.

    Coordinates must be finite numbers with x in [-W, 2W] and y in [-H, 2H] (pycocotools clips
    to the image; beyond that a coordinate is a mistake, and from ~4e8 it overflows pycocotools'
    ints). pycocotools rasterises the outline at 5x resolution, ~100 bytes per pixel of outline,
    so the total outline is bounded too: at most ``OUTLINE_PER_SIDE·(H + W)`` pixels plus
    ``OUTLINE_PER_VERTEX`` per vertex.
    """
    if not isinstance(segm, list) or not segm:
        return "polygon segmentation must be a non-empty list of polygons"
    outline, vertices = 0.0, 0
    for poly in segm:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return "each polygon must be a flat list of at least 3 (x, y) pairs"
        if not all(is_real(v) for v in poly):
            return "polygon coordinates must be finite numbers"
        try:
            xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        except OverflowError:
            return "polygon coordinates must be finite numbers (one is too large for a float)"
        if not np.isfinite(xy).all():
            return "polygon coordinates must be finite numbers"
        far = (np.abs(xy - (width / 2, height / 2)) > (1.5 * width, 1.5 * height)).nonzero()
        if far[0].size:
            v, axis = xy[far[0][0], far[1][0]], "xy"[far[1][0]]
            return (
                f"polygon coordinate {v:g} ({axis}) lies outside the {height}x{width} (HxW) image by more "
                "than its size (allowed: x in [-W, 2W], y in [-H, 2H])"
            )
        outline += float(np.abs(xy - np.roll(xy, 1, axis=0)).max(axis=1).sum())
        vertices += len(xy)
    limit = OUTLINE_PER_SIDE * (height + width) + OUTLINE_PER_VERTEX * vertices
    if outline > limit:
        return (
            f"polygon outline is {outline:.0f} pixels long, more than the {limit} allowed for a "
            f"{height}x{width} image with {vertices} vertices"
        )
    return None
