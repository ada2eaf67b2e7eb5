"""SA-1B reader: a folder of per-image JSON files, each beside its image.

Each ``<name>.json`` is ``{"image": {"image_id", "file_name", "height", "width"},
"annotations": [{"id", "segmentation": {"size": [h, w], "counts": str}, ...}]}``; the image is
``<folder>/<file_name>``. Every mask gets ``default_task`` (0, general). Image ids and
annotation ids must be unique over the whole folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sumseg.checks import check_image_size, check_task, load_json, require, require_id, require_size, shown
from sumseg.data.coco import segmentation_rle
from sumseg.data.images import image_size
from sumseg.data.records import Dataset, ImageRecord, MaskRecord, SkipReport
from sumseg.errors import DataError
from sumseg.tasks import DEFAULT_TASKS


def is_sa1b_doc(doc: Any) -> bool:
    """True for a parsed SA-1B per-image document: an object with an 'image' object + 'annotations'."""
    return isinstance(doc, dict) and isinstance(doc.get("image"), dict) and "annotations" in doc


def _mask(ann: Any, i: int, path: Path, rec: ImageRecord, task: int, seen: set[str]) -> MaskRecord:
    where = f"annotations[{i}]"
    ann_id = require_id(ann, "id", path, where)
    where = f"annotation id {shown(ann_id)} ({where})"
    if str(ann_id) in seen:  # ids compare as strings, like image ids
        raise DataError(f"{path}: {where} has a duplicate annotation id")
    segm = require(ann, "segmentation", dict, path, where)
    rle = segmentation_rle(segm, rec, path, where)
    seen.add(str(ann_id))
    return MaskRecord(rle, task, ann_id)


def _record(path: Path, split: str, check_images: bool) -> tuple[ImageRecord, list[Any]]:
    doc = load_json(path)
    if not isinstance(doc, dict):
        raise DataError(f"{path}: an SA-1B file must be a JSON object with 'image' and 'annotations'")
    img = require(doc, "image", dict, path, "the top level")
    anns = require(doc, "annotations", list, path, "the top level")
    file_name = require(img, "file_name", str, path, "'image'")
    h, w = require_size(img, path, "'image'")
    image_id = str(require_id(img, "image_id", path, "'image'") if "image_id" in img else path.stem)
    image_path = path.parent / file_name
    if check_images:
        check_image_size(image_path, image_size(image_path), (h, w), str(path))
    rec = ImageRecord(image_id, image_path, h, w, source=path, dataset=path.parent.name, split=split)
    return rec, anns


def read_sa1b(
    folder: str | Path,
    *,
    split: str | None = None,
    default_task: int = 0,
    check_images: bool = True,
    skip_bad: bool = False,
) -> Dataset:
    """Read every ``*.json`` of ``folder`` (sorted by name) as SA-1B per-image annotations.

    With ``skip_bad`` a bad file (skipped whole) or a bad annotation (skipped alone) is listed
    in the returned :class:`SkipReport` instead of raising.
    """
    folder = Path(folder)
    task = check_task(default_task, DEFAULT_TASKS, folder, "the default task")
    split = split or folder.name
    report = SkipReport()
    records: list[ImageRecord] = []
    image_ids: set[str] = set()
    ann_ids: set[str] = set()
    for path in sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")):
        with report.guard(path, skip_bad):
            rec, anns = _record(path, split, check_images)
            if rec.image_id in image_ids:
                raise DataError(f"{path}: duplicate image id {rec.image_id!r} (already in another file)")
            image_ids.add(rec.image_id)
            for i, ann in enumerate(anns):
                with report.guard(path, skip_bad):  # a bad annotation is skipped alone
                    rec.masks.append(_mask(ann, i, path, rec, task, ann_ids))
            records.append(rec)
    return Dataset(records, report, "sa1b", folder)
