"""Folder reader: images with instance masks as PNG files.

Layout (``<id>`` is the image file's stem; each image has exactly one of the two mask forms)::

    root/images/<id>.<jpg|png|...>
    root/masks/<id>/<k>.png     one binary mask per instance: 0 background, 255 (or 1) object
                                (any bit depth: 1-bit, or 16-bit 0/1 or 0/65535, see images.mask_levels)
    root/masks/<id>.png         or one instance-id map: 0 background, k > 0 instance k
                                (1/8/16-bit gray, or palette indices; colour only if gray)

Instances are ordered by ``k`` (numerically when the names are numbers); a mask's ``ann_id`` is
``k``. Every mask gets ``default_task``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sumseg.checks import check_not_empty, check_same_size, check_task, check_values
from sumseg.data import rle as rle_utils
from sumseg.data.images import image_size, is_image_file, load_label, mask_levels
from sumseg.data.records import Dataset, ImageRecord, MaskRecord, SkipReport
from sumseg.errors import DataError
from sumseg.tasks import DEFAULT_TASKS

BINARY_VALUES = {0, 1, 255}


def files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    """Image files of ``folder`` (not recursive) by stem; two files with one stem raise DataError."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not is_image_file(p):
            continue
        if p.stem in out:
            raise DataError(f"{p}: duplicate {what} id {p.stem!r} (also {out[p.stem].name})")
        out[p.stem] = p
    return out


def _number(stem: str) -> int | None:
    """The int a file stem spells in ASCII digits ("²" or "١" are not), else None."""
    return int(stem) if stem.isascii() and stem.isdigit() else None


def _natural(p: Path) -> tuple[int, int | str]:
    k = _number(p.stem)
    return (1, p.stem) if k is None else (0, k)


def _instance_files(image_path: Path, folder: Path, hw: tuple[int, int], task: int) -> list[MaskRecord]:
    files = sorted((p for p in folder.iterdir() if is_image_file(p)), key=_natural)
    if not files:
        raise DataError(f"{folder}: no mask files for image {image_path}")
    masks = []
    for p in files:
        label = mask_levels(load_label(p, colour="equal"), p)
        check_same_size(label.shape, hw, p, image_path)
        check_values(label, BINARY_VALUES, p, "binary instance mask")
        check_not_empty(label, p, "instance mask")
        k = _number(p.stem)
        masks.append(MaskRecord(rle_utils.encode(label > 0), task, p.stem if k is None else k))
    return masks


def _instance_map(image_path: Path, path: Path, hw: tuple[int, int], task: int) -> list[MaskRecord]:
    label = load_label(path, colour="equal")
    check_same_size(label.shape, hw, path, image_path)
    if label.dtype.kind == "i" and label.min() < 0:
        raise DataError(f"{path}: instance-id map must hold non-negative integers, got {label.min()}")
    ids = [int(k) for k in np.unique(label) if k > 0]
    if not ids:
        raise DataError(f"{path}: instance-id map is empty (no pixel > 0)")
    return [MaskRecord(rle_utils.encode(label == k), task, k) for k in ids]


def _record(
    stem: str, image_path: Path, mask_root: Path, mask_files: list[Path], task: int, root: Path
) -> ImageRecord:
    hw = image_size(image_path)
    mask_dir = mask_root / stem
    if mask_dir.is_dir() and mask_files:
        raise DataError(
            f"{mask_dir}: image {stem!r} has both a mask folder and an instance-id map {mask_files[0]}"
        )
    if len(mask_files) > 1:
        raise DataError(
            f"{mask_root}: image {stem!r} has several instance-id maps: {[p.name for p in mask_files]}"
        )
    if mask_dir.is_dir():
        masks, source = _instance_files(image_path, mask_dir, hw, task), mask_dir
    elif mask_files:
        masks, source = _instance_map(image_path, mask_files[0], hw, task), mask_files[0]
    else:
        raise DataError(f"{image_path}: no masks for this image (expected {mask_dir}/ or {mask_dir}.png)")
    return ImageRecord(
        stem, image_path, hw[0], hw[1], masks, source=source, dataset=root.name, split=root.name
    )


def read_mask_folder(root: str | Path, *, default_task: int = 0, skip_bad: bool = False) -> Dataset:
    """Read ``root/images`` + ``root/masks`` (layout in the module docstring), sorted by id.

    Masks are decoded to check size, values and emptiness, then kept as RLE. With ``skip_bad``
    an image whose masks are bad is skipped and listed in the returned :class:`SkipReport`.
    """
    root = Path(root)
    task = check_task(default_task, DEFAULT_TASKS, root, "the default task")
    mask_root = root / "masks"
    if not (root / "images").is_dir() or not mask_root.is_dir():
        raise DataError(f"{root}: a mask folder needs 'images/' and 'masks/' subfolders")
    images = files_by_stem(root / "images", "image")
    maps: dict[str, list[Path]] = {}
    for p in sorted(mask_root.iterdir()):
        if is_image_file(p):
            maps.setdefault(p.stem, []).append(p)
    report = SkipReport()
    records = []
    for stem, image_path in images.items():
        with report.guard(image_path, skip_bad):
            records.append(_record(stem, image_path, mask_root, maps.get(stem, []), task, root))
    orphans = sorted({p.stem for p in mask_root.iterdir() if p.is_dir() or is_image_file(p)} - set(images))
    for stem in orphans:
        with report.guard(mask_root / stem, skip_bad):
            raise DataError(
                f"{mask_root / stem}: masks for image id {stem!r}, which has no file in {root / 'images'}"
            )
    return Dataset(records, report, "mask-folder", root)
