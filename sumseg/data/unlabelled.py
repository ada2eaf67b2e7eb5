"""Unlabelled images: every image file under a folder (recursively), records without masks."""

from __future__ import annotations

from pathlib import Path

from sumseg.data.images import image_size, is_image_file, load_rgb
from sumseg.data.records import Dataset, ImageRecord, SkipReport
from sumseg.errors import DataError


def read_images(folder: str | Path, *, decode: bool = False, skip_bad: bool = False) -> Dataset:
    """One mask-less record per image file under ``folder`` (sorted by relative path).

    The record id is the relative path without suffix (``a/b`` for ``folder/a/b.jpg``). Every
    image header is read (size, readability); ``decode`` decodes each image fully, which also
    catches truncated files. With ``skip_bad`` unreadable images are listed in the returned
    :class:`SkipReport` instead of raising.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    report = SkipReport()
    records: list[ImageRecord] = []
    seen: dict[str, Path] = {}
    for p in sorted(q for q in folder.rglob("*") if is_image_file(q)):
        image_id = p.relative_to(folder).with_suffix("").as_posix()
        with report.guard(p, skip_bad):
            if image_id in seen:
                raise DataError(f"{p}: duplicate image id {image_id!r} (also {seen[image_id].name})")
            h, w = load_rgb(p).shape[:2] if decode else image_size(p)
            seen[image_id] = p
            records.append(ImageRecord(image_id, p, h, w, source=p, dataset=folder.name, split=folder.name))
    return Dataset(records, report, "images", folder)
