"""COCO instance JSON reader (polygons, compressed and uncompressed RLE, ``iscrowd``).

Top-level fields: ``images`` (each: ``id``, ``file_name``, ``height``, ``width``) and
``annotations`` (each: ``id``, ``image_id``, ``segmentation``; optional ``iscrowd``, ``task``,
``category_id``). An optional top-level ``tasks`` list (ints or ``{"id": int}`` objects)
declares task ids beyond 0–3. A mask's task is its ``task`` field, else
``category_tasks[category_id]``, else ``default_task``. Crowd annotations (``iscrowd: 1``) go
into the image's ignore map by default (``crowd="ignore"``); ``"instance"`` keeps them as masks,
``"drop"`` discards them. Image files are ``image_root / file_name`` (image_root defaults to
the JSON's folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pycocotools import mask as mask_utils

from sumseg.data import rle as rle_utils
from sumseg.data.checks import check_image_size, check_task, load_json, require, require_size
from sumseg.data.images import image_size
from sumseg.data.records import Dataset, ImageRecord, MaskRecord, SkipReport
from sumseg.errors import DataError
from sumseg.tasks import DEFAULT_TASKS

Crowd = Literal["ignore", "instance", "drop"]


def declared_tasks(doc: dict[str, Any], path: Path) -> frozenset[int]:
    """0–3 plus the ids a dataset declares in its optional top-level ``tasks`` list."""
    tasks = doc.get("tasks", [])
    if not isinstance(tasks, list):
        raise DataError(f"{path}: top-level 'tasks' must be a list of task ids or {{'id': int}} objects")
    ids = set(DEFAULT_TASKS)
    for i, t in enumerate(tasks):
        tid = t.get("id") if isinstance(t, dict) else t
        if not isinstance(tid, int) or isinstance(tid, bool) or tid < 0:
            raise DataError(f"{path}: tasks[{i}] must be a non-negative int id, got {t!r}")
        ids.add(tid)
    return frozenset(ids)


def _image_record(img: Any, i: int, path: Path, image_root: Path, check_images: bool) -> ImageRecord:
    where = f"images[{i}]"
    image_id = require(img, "id", (int, str), path, where)
    file_name = require(img, "file_name", str, path, where)
    h, w = require_size(img, path, where)
    image_path = image_root / file_name
    if check_images:
        check_image_size(image_path, image_size(image_path), (h, w), f"{path} {where}")
    return ImageRecord(str(image_id), image_path, h, w, source=path)


def segmentation_rle(segm: Any, rec: ImageRecord, path: Path, where: str) -> rle_utils.Rle:
    """Checked RLE of a COCO-style ``segmentation`` (polygons or RLE) of record ``rec``'s image.

    Raises DataError naming ``path`` and ``where`` for malformed data, a size other than the
    image's, or an empty mask.
    """
    problem = rle_utils.check_polygons(segm) if isinstance(segm, list) else rle_utils.check_rle(segm)
    if problem:
        raise DataError(f"{path}: {where}: {problem}")
    if isinstance(segm, dict) and list(segm["size"]) != [rec.height, rec.width]:
        raise DataError(
            f"{path}: {where}: mask size {segm['size'][0]}x{segm['size'][1]} (HxW) differs from "
            f"the image size {rec.height}x{rec.width} of image {rec.image_id}"
        )
    rle = rle_utils.from_segmentation(segm, rec.height, rec.width)
    if rle_utils.area(rle) == 0:
        raise DataError(f"{path}: {where}: mask is empty (no foreground pixels)")
    return rle


def _ann_task(
    ann: dict[str, Any],
    path: Path,
    where: str,
    default_task: int,
    category_tasks: dict[int, int] | None,
    valid: frozenset[int],
) -> int:
    if "task" in ann:
        task = ann["task"]
    elif category_tasks is not None and ann.get("category_id") in category_tasks:
        task = category_tasks[ann["category_id"]]
    else:
        task = default_task
    return check_task(task, valid, path, where)


def read_coco(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    split: str | None = None,
    dataset: str | None = None,
    default_task: int = 0,
    category_tasks: dict[int, int] | None = None,
    crowd: Crowd = "ignore",
    check_images: bool = True,
    skip_bad: bool = False,
) -> Dataset:
    """Read a COCO instance JSON into records (one per image, images without masks kept).

    ``split`` defaults to the JSON's stem, or its folder's name for ``annotations.json``;
    ``dataset`` to the JSON's stem, or the name of the folder above for ``annotations.json``.
    ``check_images`` opens every image header to check it is readable and of the declared size.
    With ``skip_bad`` a bad image entry (with its annotations) or a bad annotation is skipped
    and listed in the returned :class:`SkipReport` instead of raising.
    """
    path = Path(json_path)
    root = Path(image_root) if image_root is not None else path.parent
    doc = load_json(path)
    if not isinstance(doc, dict):
        raise DataError(f"{path}: a COCO file must be a JSON object with 'images' and 'annotations'")
    images = require(doc, "images", list, path, "the top level")
    anns = require(doc, "annotations", list, path, "the top level")
    valid = declared_tasks(doc, path)
    check_task(default_task, valid, path, "the default task")
    per_split = path.name == "annotations.json"
    split = split or (path.parent.name if per_split else path.stem)
    dataset = dataset or (path.resolve().parent.parent.name if per_split else path.stem)
    report = SkipReport()
    records: dict[str, ImageRecord] = {}
    dropped: set[str] = set()
    for i, img in enumerate(images):
        with report.guard(path, skip_bad):
            rec = _image_record(img, i, path, root, check_images)
            if rec.image_id in records:
                raise DataError(f"{path}: images[{i}] has duplicate image id {rec.image_id!r}")
            rec.dataset, rec.split = dataset, split
            records[rec.image_id] = rec
        if isinstance(img, dict) and "id" in img and str(img["id"]) not in records:
            dropped.add(str(img["id"]))  # skipped (and reported) above: its annotations go with it
    crowds: dict[str, list[rle_utils.Rle]] = {}
    seen: set[Any] = set()
    for i, ann in enumerate(anns):
        where = f"annotations[{i}]"
        with report.guard(path, skip_bad):
            ann_id = require(ann, "id", (int, str), path, where)
            where = f"annotation id {ann_id!r} ({where})"
            image_id = str(require(ann, "image_id", (int, str), path, where))
            require(ann, "segmentation", (list, dict), path, where)
            if ann_id in seen:
                raise DataError(f"{path}: {where} has a duplicate annotation id")
            seen.add(ann_id)
            if image_id in dropped:
                continue  # its image was skipped (and reported) above
            if image_id not in records:
                raise DataError(f"{path}: {where} refers to image id {image_id!r}, which is not in 'images'")
            rec = records[image_id]
            rle = segmentation_rle(ann["segmentation"], rec, path, where)
            task = _ann_task(ann, path, where, default_task, category_tasks, valid)
            if not ann.get("iscrowd", 0) or crowd == "instance":
                rec.masks.append(MaskRecord(rle, task, ann_id))
            elif crowd == "ignore":
                crowds.setdefault(image_id, []).append(rle)
    for image_id, rles in crowds.items():
        records[image_id].ignore = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    return Dataset(list(records.values()), report, "coco", path)
