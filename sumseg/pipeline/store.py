"""The pseudo-label store: per-image SA-1B JSON + safetensors arrays, per-shard indexes, a reader.

The contract with its consumers (``sumseg uncertainty``, the trainer) is docs/pseudo-labels.md;
in short, a store folder holds::

    meta.json                         model, input, settings, resolved thresholds (one per store)
    labels/<stem>.json                SA-1B document of one image (RLE, bbox, scores, point)
    labels/<stem>.safetensors         its arrays: logits (K, L, L) float16, boxes, points, scores
    labels/<stem>.uncertainty.safetensors   U (K, L, L) uint8, written by ``sumseg uncertainty``
    index/shard-<i>-of-<N>.json       the images (and skipped files) of one shard
    uncertainty.json                  the refiner that made the U maps

``L`` = 4·(S/16) is the low-resolution side (64 for tiny, 256 for SAM); the maps cover the
padded S×S model input. A per-image JSON is written last (atomically), so its presence means
that image is done. :func:`open_store` merges the shard indexes; :class:`PseudoLabelStore`
reads images lazily and raises :class:`DataError` naming the file for a missing, truncated or
foreign file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch

from sumseg.atomic import atomic_path
from sumseg.checks import load_json
from sumseg.data import rle as rle_utils
from sumseg.data.records import ImageRecord, MaskRecord
from sumseg.errors import ConfigError, DataError
from sumseg.tensor_files import file_digest, read_tensors, save_tensors

FORMAT = "sumseg-pseudo-labels"
IMAGE_FORMAT = "sumseg-pseudo-label-image"
UNCERTAINTY_FORMAT = "sumseg-uncertainty"
VERSION = 1
LOGIT_CLIP = 1.0e4  # logits are clipped to ±LOGIT_CLIP before the float16 cast (float16 max is 65504)
AREA_BINS = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0001)  # mask area / image area; the summary's histogram


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


@dataclass
class ImageLabels:
    """The K pseudo-labels of one image, best predicted IoU first.

    rles: compressed RLE masks (H, W); logits: (K, L, L) float32 decoder logits ``s`` over the
    padded S×S input; boxes: (K, 4) float32 xyxy, inclusive pixel indices in the image;
    points: (K, 2) float32 xy image pixels of the grid point that made each mask;
    predicted_iou, stability: (K,) float32; confidence: (K, L, L) float32 c = 1 − U, or None.
    """

    rles: list[rle_utils.Rle]
    logits: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    predicted_iou: torch.Tensor
    stability: torch.Tensor
    confidence: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rles)


def image_stem(image_id: str) -> str:
    """File stem of an image id: percent-quoted (reversible, no '/'); long ids get a hash instead."""
    stem = quote(image_id, safe="")
    if len(stem) > 120:
        stem = stem[:80] + "-" + hashlib.blake2b(image_id.encode(), digest_size=10).hexdigest()
    return stem


def _tensor(tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], path: Path) -> torch.Tensor:
    t = tensors.get(key)
    if t is None or tuple(t.shape) != shape:
        got = "missing" if t is None else f"shape {tuple(t.shape)}"
        raise DataError(f"{path}: tensor {key!r} must have shape {shape}, got {got}")
    return t


def write_image(labels_dir: Path, entry: StoreEntry, labels: ImageLabels) -> None:
    """Write one image's arrays, then its SA-1B JSON (the completion marker), both atomically."""
    k = len(labels)
    tensors = {
        "logits": labels.logits.float().clamp(-LOGIT_CLIP, LOGIT_CLIP).half(),
        "boxes": labels.boxes.float(),
        "points": labels.points.float(),
        "predicted_iou": labels.predicted_iou.float(),
        "stability_score": torch.nan_to_num(labels.stability.float(), nan=0.0),  # 0/0: an empty mask; JSON has no NaN
    }
    save_tensors(labels_dir / f"{entry.stem}.safetensors", tensors,
                 {"format": IMAGE_FORMAT, "version": VERSION, "num_masks": k})
    anns = []
    for j in range(k):
        x0, y0, x1, y1 = (float(v) for v in labels.boxes[j].tolist())
        anns.append({
            "id": f"{entry.image_id}/{j}",
            "segmentation": rle_utils.to_json(labels.rles[j]),
            "area": rle_utils.area(labels.rles[j]),
            "bbox": [x0, y0, x1 - x0, y1 - y0],  # SamAutomaticMaskGenerator's xywh (inclusive x1, y1)
            "predicted_iou": float(labels.predicted_iou[j]),
            "stability_score": float(tensors["stability_score"][j]),
            "point_coords": [[float(v) for v in labels.points[j].tolist()]],
            "crop_box": [0, 0, entry.width, entry.height],
        })
    doc = {
        "image": {"image_id": entry.image_id, "file_name": entry.file_name, "height": entry.height,
                  "width": entry.width},
        "annotations": anns,
        "sumseg": {"format": IMAGE_FORMAT, "version": VERSION, "position": entry.position,
                   "area_hist": entry.area_hist},
    }
    with atomic_path(labels_dir / f"{entry.stem}.json") as tmp:
        tmp.write_text(json.dumps(doc, allow_nan=False))


def read_entry(labels_dir: Path, stem: str) -> StoreEntry | None:
    """The entry of a finished image (its JSON exists), or None when it is not written yet."""
    path = labels_dir / f"{stem}.json"
    if not path.is_file():
        return None
    doc = load_json(path)
    try:
        own, img = doc["sumseg"], doc["image"]
        if own["format"] != IMAGE_FORMAT:
            raise KeyError("format")
        return StoreEntry(int(own["position"]), str(img["image_id"]), stem, str(img["file_name"]),
                          int(img["height"]), int(img["width"]), len(doc["annotations"]),
                          [int(v) for v in own["area_hist"]])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: not a sumseg pseudo-label file (missing or bad field {e})") from e


def write_index(index_dir: Path, shard: Shard, entries: list[StoreEntry],
                skipped: list[dict[str, Any]], complete: bool) -> None:
    """Write (atomically) the index of one shard: its finished images and skipped files."""
    doc = {"format": FORMAT, "shard": [shard.index, shard.count], "complete": complete,
           "images": [asdict(e) for e in sorted(entries, key=lambda e: e.position)], "skipped": skipped}
    with atomic_path(index_dir / f"{shard.name}.json") as tmp:
        tmp.write_text(json.dumps(doc))


def read_meta(root: Path) -> dict[str, Any]:
    """``meta.json`` of a store; DataError naming the file when it is missing or foreign."""
    path = root / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; {root} is not a pseudo-label store (make one with sumseg pseudo-label)")
    meta = load_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a sumseg pseudo-label store file (format {meta.get('format')!r})"
                        if isinstance(meta, dict) else f"{path}: not a sumseg pseudo-label store file")
    if meta.get("version") != VERSION:
        raise DataError(f"{path}: store format version {meta.get('version')!r}; this sumseg reads {VERSION}")
    return meta


def _merge_indexes(root: Path, num_images: int) -> tuple[list[StoreEntry], list[dict[str, Any]], set[int]]:
    """Entries (by position), skipped files (by path) and the positions covered by complete shards."""
    entries: dict[int, StoreEntry] = {}
    skipped: dict[str, dict[str, Any]] = {}
    covered: set[int] = set()
    for path in sorted((root / "index").glob("shard-*.json")):
        doc = load_json(path)
        try:
            if doc["format"] != FORMAT:
                raise KeyError("format")
            shard = Shard(*doc["shard"])
            new = [StoreEntry(**item) for item in doc["images"]]
            bad = {str(item["path"]): item for item in doc["skipped"]}
            complete = bool(doc["complete"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}: not a sumseg pseudo-label index (missing or bad field {err})") from err
        for entry in new:
            if entries.setdefault(entry.position, entry) != entry:
                raise DataError(f"{path}: image at input position {entry.position} differs from another index's")
        skipped.update(bad)
        if complete:
            covered.update(p for p in range(num_images) if shard.selects(p))
    return [entries[p] for p in sorted(entries)], [skipped[p] for p in sorted(skipped)], covered


class PseudoLabelStore:
    """Read access to a pseudo-label store (see the module docstring and docs/pseudo-labels.md).

    ``images``: the labelled images in input order; ``skipped``: files that could not be
    labelled (``{"position", "path", "reason"}``, position None for a file the reader refused);
    ``model``, ``image_size`` (S), ``lowres_size`` (L), ``thresholds`` (the resolved numbers)
    and ``meta`` (all of meta.json).
    """

    def __init__(self, root: Path, meta: dict[str, Any], images: list[StoreEntry],
                 skipped: list[dict[str, Any]], complete: bool) -> None:
        self.root, self.meta, self.images, self.skipped, self.complete = root, meta, images, skipped, complete
        self.model: str = meta["model"]
        self.image_size: int = int(meta["image_size"])
        self.lowres_size: int = int(meta["lowres_size"])
        self.thresholds: dict[str, float] = meta["thresholds"]
        self.labels_dir = root / "labels"

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.labels_dir / self.images[i].file_name

    def _json(self, i: int) -> tuple[Path, list[dict[str, Any]]]:
        e = self.images[i]
        path = self.labels_dir / f"{e.stem}.json"
        if not path.is_file():
            raise DataError(f"{path}: file not found (listed in the store index; the store is damaged)")
        doc = load_json(path)
        anns = doc.get("annotations") if isinstance(doc, dict) else None
        if not isinstance(anns, list) or len(anns) != e.num_masks:
            raise DataError(f"{path}: expected {e.num_masks} annotations as the index says")
        return path, anns

    def rles(self, i: int) -> list[rle_utils.Rle]:
        """Compressed RLE masks of image ``i`` (checked before decoding)."""
        path, anns = self._json(i)
        e = self.images[i]
        out = []
        for j, ann in enumerate(anns):
            segm = ann.get("segmentation") if isinstance(ann, dict) else None
            problem = rle_utils.check_rle(segm, e.height, e.width)
            if problem:
                raise DataError(f"{path}: annotations[{j}]: {problem}")
            out.append(rle_utils.from_segmentation(segm, e.height, e.width))
        return out

    def _arrays(self, i: int) -> tuple[Path, dict[str, torch.Tensor]]:
        e, n = self.images[i], self.lowres_size
        path = self.labels_dir / f"{e.stem}.safetensors"
        tensors, _ = read_tensors(path, IMAGE_FORMAT)
        k = e.num_masks
        shapes = {"logits": (k, n, n), "boxes": (k, 4), "points": (k, 2), "predicted_iou": (k,),
                  "stability_score": (k,)}
        return path, {key: _tensor(tensors, key, shape, path).float() for key, shape in shapes.items()}

    def load(self, i: int, confidence: bool = True) -> ImageLabels:
        """Everything stored for image ``i`` (confidence None before ``sumseg uncertainty``, or if not asked)."""
        _, a = self._arrays(i)
        return ImageLabels(self.rles(i), a["logits"], a["boxes"], a["points"], a["predicted_iou"],
                           a["stability_score"], self.confidence(i) if confidence else None)

    def masks(self, i: int) -> np.ndarray:
        """(K, H, W) bool masks of image ``i``."""
        e = self.images[i]
        rles = self.rles(i)
        return np.stack([rle_utils.decode(r) for r in rles]) if rles else np.zeros((0, e.height, e.width), bool)

    def logits(self, i: int) -> torch.Tensor:
        """(K, L, L) float32 logits ``s`` over the padded S×S input (float16 in the file)."""
        return self._arrays(i)[1]["logits"]

    def uncertainty_path(self, i: int) -> Path:
        return self.labels_dir / f"{self.images[i].stem}.uncertainty.safetensors"

    def uncertainty_u8(self, i: int) -> torch.Tensor | None:
        """(K, L, L) uint8 round(255·U) of image ``i``, or None when not computed; stale maps raise."""
        path = self.uncertainty_path(i)
        if not path.is_file():
            return None
        tensors, meta = read_tensors(path, UNCERTAINTY_FORMAT)
        labels_file = self.labels_dir / f"{self.images[i].stem}.safetensors"
        if meta.get("labels_digest") != file_digest(labels_file):
            raise DataError(f"{path}: made for other pseudo-labels than {labels_file.name} (rerun sumseg uncertainty)")
        n = self.lowres_size
        u = _tensor(tensors, "uncertainty", (self.images[i].num_masks, n, n), path)
        if u.dtype != torch.uint8:
            raise DataError(f"{path}: tensor 'uncertainty' must be uint8, got {u.dtype}")
        return u

    def confidence(self, i: int) -> torch.Tensor | None:
        """(K, L, L) float32 c = 1 − U (U stored as round(255·U), error ≤ 1/510), or None."""
        u = self.uncertainty_u8(i)
        return None if u is None else 1.0 - u.float() / 255.0

    @property
    def has_uncertainty(self) -> bool:
        """True when every image has its U maps."""
        return all(self.uncertainty_path(i).is_file() for i in range(len(self)))

    def record(self, i: int) -> ImageRecord:
        """Image ``i`` as an :class:`ImageRecord` (task 0 masks, lazy RLE), like any reader's."""
        e = self.images[i]
        rec = ImageRecord(e.image_id, self.image_path(i), e.height, e.width,
                          source=self.labels_dir / f"{e.stem}.json", dataset=self.root.name, split="pseudo")
        rec.masks = [MaskRecord(r, 0, f"{e.image_id}/{j}") for j, r in enumerate(self.rles(i))]
        return rec


def open_store(path: str | Path, allow_partial: bool = False) -> PseudoLabelStore:
    """Open a pseudo-label store; an unfinished one raises DataError unless ``allow_partial``."""
    root = Path(path)
    meta = read_meta(root)
    n = int(meta["num_images"])
    images, skipped, covered = _merge_indexes(root, n)
    complete = len(covered) == n
    if not complete and not allow_partial:
        raise DataError(f"{root}: unfinished pseudo-label store ({n - len(covered)} of {n} input images in shards "
                        f"that have not finished; see {root / 'index'}); finish the run(s) or open with "
                        "allow_partial=True")
    return PseudoLabelStore(root, meta, images, skipped, complete)
