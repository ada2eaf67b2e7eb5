"""The pseudo-label store's own files as read back: every field type- and range-checked.

``meta.json``, ``index/shard-*.json``, ``labels/<stem>.json`` and ``uncertainty.json`` are sumseg's
own files, but a reader trusts none of them once they parse: each passes its schema
(:mod:`sumseg.checks`: :func:`~sumseg.checks.integer`, :func:`~sumseg.checks.real`, ...) and a
few cross-field rules (a stem is its image id's, a position lies in the input, a shard is i/N
with 0 ≤ i < N), and anything else is a :class:`DataError` naming the file and the field,
never a KeyError / TypeError / ZeroDivisionError or an allocation sized by a hostile count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from sumseg.checks import (
    check_pixels,
    check_schema,
    flag,
    integer,
    list_of,
    load_json,
    obj,
    optional,
    real,
    text,
)
from sumseg.errors import ConfigError, DataError

FORMAT = "sumseg-pseudo-labels"
IMAGE_FORMAT = "sumseg-pseudo-label-image"
UNCERTAINTY_FORMAT = "sumseg-uncertainty"
VERSION = 1
AREA_BINS = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0001)  # mask area / image area; the summary's histogram
MAX_IMAGES = 100_000_000  # images in one store (a meta.json count above this is refused, not allocated)
MAX_MASKS = 1_000_000  # pseudo-labels of one image
MAX_IMAGE_SIZE = 8192  # the model input side S a store may declare
MAX_SIDE = 2**31 - 1  # an image's height or width (their product is bounded by max_image_pixels())


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the images whose input position p has p % count == index."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """``"i/N"`` (0 ≤ i < N) or None for the whole input."""
        if text is None:
            return cls()
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard must be i/N with integers, e.g. 0/4; got {text!r}") from None
        if n < 1 or not 0 <= i < n:
            raise ConfigError(f"--shard {text}: need 0 <= i < N")
        return cls(i, n)

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}-of-{self.count:05d}"

    def selects(self, position: int) -> bool:
        return position % self.count == self.index


@dataclass
class StoreEntry:
    """One labelled image: input position, id, file stem, image path (relative to ``labels/``), size, K."""

    position: int
    image_id: str
    stem: str
    file_name: str
    height: int
    width: int
    num_masks: int
    area_hist: list[int]


def image_stem(image_id: str) -> str:
    """File stem of an image id: percent-quoted (reversible, no '/'); long ids get a hash instead."""
    stem = quote(image_id, safe="")
    if len(stem) > 120:
        stem = stem[:80] + "-" + hashlib.blake2b(image_id.encode(), digest_size=10).hexdigest()
    return stem


_HIST = list_of(integer(0, MAX_MASKS), length=len(AREA_BINS) - 1)
FRAMES = ("longest_side", "squash")
"""A store's low-res frame (``meta.json`` ``frame``; absent: SAM 1's ``longest_side``): how its logits and U
maps cover the image (:data:`sumseg.models.interface.FrameKind`)."""
META = obj({
    "model": text(), "image_size": integer(16, MAX_IMAGE_SIZE), "lowres_size": integer(4, MAX_IMAGE_SIZE // 4),
    "model_fingerprint": text(), "input": text(), "input_digest": text(), "num_images": integer(0, MAX_IMAGES),
    "settings": obj({}), "thresholds": obj({"pred_iou_thresh": real(), "stability_score_thresh": real()}),
    "calibration": optional(obj({"images": list_of(text()), "candidates": integer(0)})),
})
ENTRY = obj({"position": integer(0, MAX_IMAGES - 1), "image_id": text(), "stem": text(), "file_name": text(),
             "height": integer(1, MAX_SIDE), "width": integer(1, MAX_SIDE), "num_masks": integer(0, MAX_MASKS),
             "area_hist": _HIST})
INDEX = obj({"format": text(FORMAT), "shard": list_of(integer(0, MAX_IMAGES), length=2), "complete": flag(),
             "images": list_of(ENTRY),
             "skipped": list_of(obj({"position": optional(integer(0)), "path": text(), "reason": text()}))})
IMAGE_DOC = obj({
    "image": obj({"image_id": text(), "file_name": text(), "height": integer(1, MAX_SIDE),
                  "width": integer(1, MAX_SIDE)}),
    "annotations": list_of(obj({}), max_len=MAX_MASKS),
    "sumseg": obj({"format": text(IMAGE_FORMAT), "version": integer(VERSION, VERSION),
                   "position": integer(0, MAX_IMAGES - 1), "area_hist": _HIST}),
})
UNCERTAINTY_META = obj({"format": text(UNCERTAINTY_FORMAT), "version": integer(VERSION, VERSION),
                        "refiner": text(), "refiner_fingerprint": text(), "quantisation": text()})


def read_meta(root: Path) -> dict[str, Any]:
    """``meta.json`` of a store, checked; DataError naming the file (and the field) when missing, foreign or bad."""
    path = root / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; {root} is not a pseudo-label store (make one with sumseg pseudo-label)")
    meta = load_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a sumseg pseudo-label store file (format {meta.get('format')!r})"
                        if isinstance(meta, dict) else f"{path}: not a sumseg pseudo-label store file")
    if meta.get("version") != VERSION or isinstance(meta.get("version"), bool):
        raise DataError(f"{path}: store format version {meta.get('version')!r}; this sumseg reads {VERSION}")
    check_schema(meta, META, path)
    if meta.get("frame", "longest_side") not in FRAMES:
        raise DataError(f"{path}: field 'frame' must be one of {', '.join(FRAMES)}, got {meta.get('frame')!r}")
    if meta["lowres_size"] != meta["image_size"] // 4:
        raise DataError(f"{path}: field 'lowres_size' must be image_size / 4 = {meta['image_size'] // 4}, "
                        f"got {meta['lowres_size']}")
    return meta


def _entry(item: dict[str, Any], path: Path, where: str, num_images: int) -> StoreEntry:
    """An index's image (already schema-checked) with its cross-field rules."""
    e = StoreEntry(**{k: item[k] for k in StoreEntry.__dataclass_fields__})
    if e.position >= num_images:
        raise DataError(f"{path}: field '{where}.position' is {e.position}, but the store has {num_images} images "
                        "(meta.json)")
    if e.stem != image_stem(e.image_id):
        raise DataError(f"{path}: field '{where}.stem' must be {image_stem(e.image_id)!r} (its image id's), "
                        f"got {e.stem!r}")
    check_pixels(e.height, e.width, path, where)
    return e


def read_index(path: Path, num_images: int) -> tuple[Shard, list[StoreEntry], list[dict[str, Any]], bool]:
    """One shard index, checked: its shard, images, skipped files and whether the shard finished."""
    doc = check_schema(load_json(path), INDEX, path)
    i, n = doc["shard"]
    shard = Shard(i, n)
    if n < 1 or i >= n:
        raise DataError(f"{path}: field 'shard' must be [i, N] with 0 <= i < N, got {[i, n]}")
    if path.stem != shard.name:
        raise DataError(f"{path}: field 'shard' is {[i, n]}, but the file name says otherwise ({shard.name}.json)")
    entries = [_entry(item, path, f"images[{j}]", num_images) for j, item in enumerate(doc["images"])]
    return shard, entries, doc["skipped"], doc["complete"]


def merge_indexes(root: Path, num_images: int) -> tuple[list[StoreEntry], list[dict[str, Any]], int, dict[int, Path]]:
    """Entries (by position), skipped files (by path), how many input positions complete shards cover,
    and the index file that lists each entry (by position)."""
    entries: dict[int, StoreEntry] = {}
    sources: dict[int, Path] = {}
    skipped: dict[str, dict[str, Any]] = {}
    covered = np.zeros(num_images, bool)
    for path in sorted((root / "index").glob("shard-*.json")):
        shard, new, bad, complete = read_index(path, num_images)
        for entry in new:
            if entries.setdefault(entry.position, entry) != entry:
                raise DataError(f"{path}: image at input position {entry.position} differs from "
                                f"{sources[entry.position].name}'s")
            sources.setdefault(entry.position, path)
        skipped.update((str(item["path"]), item) for item in bad)
        if complete:
            covered[shard.index::shard.count] = True
    return [entries[p] for p in sorted(entries)], [skipped[p] for p in sorted(skipped)], int(covered.sum()), sources


def read_image_doc(path: Path) -> dict[str, Any]:
    """A per-image JSON (``labels/<stem>.json``), checked: its image, annotations and sumseg fields."""
    doc = check_schema(load_json(path), IMAGE_DOC, path)
    check_pixels(doc["image"]["height"], doc["image"]["width"], path, "image")
    return doc


def entry_of(doc: dict[str, Any], stem: str) -> StoreEntry:
    """The index entry a checked per-image JSON stands for."""
    own, img = doc["sumseg"], doc["image"]
    return StoreEntry(own["position"], img["image_id"], stem, img["file_name"], img["height"], img["width"],
                      len(doc["annotations"]), own["area_hist"])


def read_entry(labels_dir: Path, stem: str) -> StoreEntry | None:
    """The entry of a finished image (its JSON exists, checked), or None when it is not written yet."""
    path = labels_dir / f"{stem}.json"
    return entry_of(read_image_doc(path), stem) if path.is_file() else None


def read_uncertainty_meta(path: Path) -> dict[str, Any]:
    """``uncertainty.json`` of a store (the refiner that made its U maps), checked."""
    doc = load_json(path)
    if not isinstance(doc, dict) or doc.get("format") != UNCERTAINTY_FORMAT:
        raise DataError(f"{path}: not a sumseg uncertainty file (field 'format' must be {UNCERTAINTY_FORMAT!r})")
    return check_schema(doc, UNCERTAINTY_META, path)
