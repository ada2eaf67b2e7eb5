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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sumseg.atomic import write_json
from sumseg.data import rle as rle_utils
from sumseg.data.records import ImageRecord, MaskRecord
from sumseg.errors import DataError
from sumseg.pipeline.store_schema import AREA_BINS as AREA_BINS
from sumseg.pipeline.store_schema import (
    FORMAT,
    IMAGE_FORMAT,
    UNCERTAINTY_FORMAT,
    VERSION,
    Shard,
    StoreEntry,
    entry_of,
    merge_indexes,
    read_image_doc,
    read_meta,
)
from sumseg.pipeline.store_schema import image_stem as image_stem
from sumseg.pipeline.store_schema import read_entry as read_entry
from sumseg.tensor_files import file_digest, read_tensors, save_tensors

LOGIT_CLIP = 1.0e4  # logits are clipped to ±LOGIT_CLIP before the float16 cast (float16 max is 65504)


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


def _tensor(tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], path: Path,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensors[key]``, which must have ``shape`` (and ``dtype``); else DataError naming the file and the tensor."""
    t = tensors.get(key)
    if t is None or tuple(t.shape) != shape:
        got = "missing" if t is None else f"shape {tuple(t.shape)}"
        raise DataError(f"{path}: tensor {key!r} must have shape {shape}, got {got}")
    if dtype is not None and t.dtype != dtype:
        raise DataError(f"{path}: tensor {key!r} must be {dtype}, got {t.dtype}")
    return t


def _check_values(arrays: dict[str, torch.Tensor], path: Path, e: StoreEntry) -> None:
    """Finite values everywhere; boxes and points inside the image; stability in [0, 1] (as written)."""
    for key, t in arrays.items():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise DataError(f"{path}: tensor {key!r} has {bad} non-finite values (NaN or inf)")
    xy = torch.tensor([e.width, e.height], dtype=torch.float32)
    for key, t in (("boxes", arrays["boxes"].reshape(-1, 2)), ("points", arrays["points"])):
        if ((t < 0) | (t > xy)).any():
            raise DataError(f"{path}: tensor {key!r} has coordinates outside the {e.height}x{e.width} (HxW) image")
    st = arrays["stability_score"]
    if ((st < 0) | (st > 1)).any():
        raise DataError(f"{path}: tensor 'stability_score' has values outside [0, 1]")


def _refuse_non_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """What is written must be finite: NaN logits would read back as a confident label."""
    for key, t in tensors.items():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise DataError(f"{path}: refusing to write tensor {key!r} with {bad} non-finite values (NaN or inf; "
                            "the model's outputs for this image are not finite)")


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
    _refuse_non_finite(tensors, labels_dir / f"{entry.stem}.safetensors")
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
    write_json(labels_dir / f"{entry.stem}.json", doc)


def write_index(index_dir: Path, shard: Shard, entries: list[StoreEntry],
                skipped: list[dict[str, Any]], complete: bool) -> None:
    """Write (atomically) the index of one shard: its finished images and skipped files."""
    doc = {"format": FORMAT, "shard": [shard.index, shard.count], "complete": complete,
           "images": [asdict(e) for e in sorted(entries, key=lambda e: e.position)], "skipped": skipped}
    write_json(index_dir / f"{shard.name}.json", doc)


class PseudoLabelStore:
    """Read access to a pseudo-label store (see the module docstring and docs/pseudo-labels.md).

    ``images``: the labelled images in input order; ``skipped``: files that could not be
    labelled (``{"position", "path", "reason"}``, position None for a file the reader refused);
    ``model``, ``image_size`` (S), ``lowres_size`` (L), ``thresholds`` (the resolved numbers)
    and ``meta`` (all of meta.json, checked by :func:`~sumseg.pipeline.store_schema.read_meta`).
    Every file read is checked (schema, shapes, dtypes, finite values); a mismatch names the file
    that is wrong: the per-image JSON is the truth, so a count it contradicts blames the index.
    """

    def __init__(self, root: Path, meta: dict[str, Any], images: list[StoreEntry],
                 skipped: list[dict[str, Any]], complete: bool, sources: dict[int, Path] | None = None) -> None:
        self.root, self.meta, self.images, self.skipped, self.complete = root, meta, images, skipped, complete
        self.model: str = meta["model"]
        self.image_size: int = int(meta["image_size"])
        self.lowres_size: int = int(meta["lowres_size"])
        self.frame: str = meta.get("frame", "longest_side")  # the low-res frame of its logits and U maps
        self.thresholds: dict[str, float] = meta["thresholds"]
        self.labels_dir = root / "labels"
        self._sources = sources or {}

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.labels_dir / self.images[i].file_name

    def _index_file(self, i: int) -> Path:
        return self._sources.get(self.images[i].position, self.root / "index")

    def _json(self, i: int) -> tuple[Path, list[dict[str, Any]]]:
        """Image i's annotations, after checking its JSON (schema) against the index's entry."""
        e = self.images[i]
        path = self.labels_dir / f"{e.stem}.json"
        if not path.is_file():
            raise DataError(f"{path}: file not found (listed in {self._index_file(i)}; the store is damaged: "
                            "rerun sumseg pseudo-label with the same arguments to relabel it)")
        raw = read_image_doc(path)
        doc = entry_of(raw, e.stem)
        if (doc.image_id, doc.position, doc.height, doc.width) != (e.image_id, e.position, e.height, e.width):
            raise DataError(f"{self._index_file(i)}: image at position {e.position} ({e.image_id!r}, "
                            f"{e.height}x{e.width}) is not what {path} holds ({doc.image_id!r} at position "
                            f"{doc.position}, {doc.height}x{doc.width})")
        if doc.num_masks != e.num_masks:
            raise DataError(f"{self._index_file(i)}: field 'num_masks' of {e.image_id!r} is {e.num_masks}, but "
                            f"{path} holds {doc.num_masks} annotations (the index is damaged: rerun sumseg "
                            "pseudo-label with the same arguments to rewrite it)")
        return path, raw["annotations"]

    def rles(self, i: int) -> list[rle_utils.Rle]:
        """Compressed RLE masks of image ``i`` (checked before decoding)."""
        path, anns = self._json(i)
        e = self.images[i]
        out = []
        for j, ann in enumerate(anns):
            segm = ann.get("segmentation")
            problem = rle_utils.check_rle(segm, e.height, e.width)
            if problem:
                raise DataError(f"{path}: annotations[{j}]: {problem}")
            out.append(rle_utils.from_segmentation(segm, e.height, e.width))
        return out

    def _arrays(self, i: int) -> tuple[Path, dict[str, torch.Tensor]]:
        """Image i's tensors, checked: shapes (K from its JSON), dtypes, finite values, coordinates in range."""
        e, n = self.images[i], self.lowres_size
        path = self.labels_dir / f"{e.stem}.safetensors"
        tensors, _ = read_tensors(path, IMAGE_FORMAT)
        k, f32 = e.num_masks, torch.float32
        shapes = {"logits": ((k, n, n), torch.float16), "boxes": ((k, 4), f32), "points": ((k, 2), f32),
                  "predicted_iou": ((k,), f32), "stability_score": ((k,), f32)}
        try:
            out = {key: _tensor(tensors, key, shape, path, dtype).float() for key, (shape, dtype) in shapes.items()}
        except DataError:
            self._json(i)  # the index's K contradicted by the image's JSON: the index is named
            raise
        _check_values(out, path, e)
        return path, out

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
        """(K, L, L) uint8 round(255·U) of image ``i``, or None when not computed; stale or damaged maps raise
        (naming the labels file or the index when it is them that are damaged)."""
        path = self.uncertainty_path(i)
        if not path.is_file():
            return None
        tensors, meta = read_tensors(path, UNCERTAINTY_FORMAT)
        labels_file = self.labels_dir / f"{self.images[i].stem}.safetensors"
        if not labels_file.is_file() or meta.get("labels_digest") != file_digest(labels_file):
            self._arrays(i)  # a missing, truncated or damaged labels file is named as such
            raise DataError(f"{path}: made for other pseudo-labels than {labels_file.name} (rerun sumseg uncertainty)")
        u = tensors.get("uncertainty")
        if u is not None and u.ndim >= 1 and u.shape[0] != self.images[i].num_masks:
            self._json(i)  # an index whose count the image's JSON contradicts is named
        n = self.lowres_size
        return _tensor(tensors, "uncertainty", (self.images[i].num_masks, n, n), path, torch.uint8)

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
    """Open a pseudo-label store (every file checked as it is read); an unfinished one raises DataError
    unless ``allow_partial``."""
    root = Path(path)
    meta = read_meta(root)
    n = meta["num_images"]
    images, skipped, covered, sources = merge_indexes(root, n)
    complete = covered == n
    if not complete and not allow_partial:
        raise DataError(f"{root}: unfinished pseudo-label store ({n - covered} of {n} input images in shards "
                        f"that have not finished; see {root / 'index'}); finish it by rerunning the same sumseg "
                        "pseudo-label command (each of its --shard i/N runs), which resumes where it stopped")
    return PseudoLabelStore(root, meta, images, skipped, complete, sources)
