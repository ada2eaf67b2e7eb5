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

from sumseg.checks import (
    check_flag,
    check_image_size,
    check_int,
    check_task,
    load_json,
    require,
    require_id,
    require_size,
    shown,
)
from sumseg.data import rle as rle_utils
from sumseg.data.images import image_size
from sumseg.data.records import Dataset, ImageRecord, MaskRecord, SkipReport
from sumseg.errors import DataError
from sumseg.tasks import DEFAULT_TASKS, TASK_ID_LIMIT

Crowd = Literal["ignore", "instance", "drop"]


def is_coco_doc(doc: Any) -> bool:
    """True for a parsed COCO instance document: an object with 'images' and 'annotations'."""
    return isinstance(doc, dict) and "images" in doc and "annotations" in doc


def declared_tasks(doc: dict[str, Any], path: Path) -> frozenset[int]:
    """0–3 plus the ids a dataset declares in its optional top-level ``tasks`` list."""
    tasks = doc.get("tasks", [])
    if not isinstance(tasks, list):
        raise DataError(f"{path}: top-level 'tasks' must be a list of task ids or {{'id': int}} objects")
    ids = set(DEFAULT_TASKS)
    for i, t in enumerate(tasks):
        tid = t.get("id") if isinstance(t, dict) else t
        ids.add(check_int(tid, path, f"tasks[{i}] (a task id)", 0, TASK_ID_LIMIT - 1))
    return frozenset(ids)


def _image_record(img: Any, i: int, path: Path, image_root: Path, check_images: bool) -> ImageRecord:
    where = f"images[{i}]"
    image_id = require_id(img, "id", path, where)
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
    check = rle_utils.check_polygons if isinstance(segm, list) else rle_utils.check_rle
    problem = check(segm, rec.height, rec.width)
    if problem:
        raise DataError(f"{path}: {where}: {problem} (image {rec.image_id})")
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
    category = ann.get("category_id")
    if category is not None and (isinstance(category, bool) or not isinstance(category, int | str)):
        raise DataError(f"{path}: {where} field 'category_id' must be int or str, got {shown(category)}")
    if "task" in ann:
        task = ann["task"]
    elif category_tasks is not None and category in category_tasks:
        task = category_tasks[category]
    else:
        task = default_task
    return check_task(task, valid, path, where)


def _image_records(images: list, path: Path, root: Path, check_images: bool, dataset_split: tuple[str, str],
                   report: SkipReport, skip_bad: bool) -> tuple[dict[str, ImageRecord], set[str]]:
    """The records of the ``images`` entries by image id, and the ids of the entries skipped as bad."""
    records: dict[str, ImageRecord] = {}
    dropped: set[str] = set()
    for i, img in enumerate(images):
        with report.guard(path, skip_bad):
            rec = _image_record(img, i, path, root, check_images)
            if rec.image_id in records:
                raise DataError(f"{path}: images[{i}] has duplicate image id {rec.image_id!r}")
            rec.dataset, rec.split = dataset_split
            records[rec.image_id] = rec
        if isinstance(img, dict) and "id" in img and str(img["id"]) not in records:
            dropped.add(str(img["id"]))  # skipped (and reported) above: its annotations go with it
    return records, dropped


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
    records, dropped = _image_records(images, path, root, check_images, (dataset, split), report, skip_bad)
    crowds: dict[str, list[rle_utils.Rle]] = {}
    seen: set[str] = set()
    for i, ann in enumerate(anns):
        where = f"annotations[{i}]"
        with report.guard(path, skip_bad):
            ann_id = require_id(ann, "id", path, where)
            where = f"annotation id {shown(ann_id)} ({where})"
            image_id = str(require_id(ann, "image_id", path, where))
            require(ann, "segmentation", (list, dict), path, where)
            if str(ann_id) in seen:  # ids compare as strings, like image ids: 1 and "1" are one id
                raise DataError(f"{path}: {where} has a duplicate annotation id")
            seen.add(str(ann_id))
            if image_id in dropped:
                continue  # its image was skipped (and reported) above
            if image_id not in records:
                raise DataError(f"{path}: {where} refers to image id {image_id!r}, which is not in 'images'")
            rec = records[image_id]
            rle = segmentation_rle(ann["segmentation"], rec, path, where)
            task = _ann_task(ann, path, where, default_task, category_tasks, valid)
            if not check_flag(ann.get("iscrowd", 0), path, f"{where} field 'iscrowd'") or crowd == "instance":
                rec.masks.append(MaskRecord(rle, task, ann_id))
            elif crowd == "ignore":
                crowds.setdefault(image_id, []).append(rle)
    for image_id, rles in crowds.items():
        records[image_id].ignore = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    return Dataset(list(records.values()), report, "coco", path)
