"""Interactive-segmentation benchmarks in the RITM layout: one object per image.

============  ===========  ===========  ==================================================
benchmark     images       masks        mask values
============  ===========  ===========  ==================================================
GrabCut       ``data_GT``  ``boundary_GT``  exactly 0 background, 255 (or 1) object, 128 ignore band
Berkeley      ``images``   ``masks``    0/255; object = value > 128 or 1 (RGB: channel maximum)
DAVIS         ``img``      ``gt``       any value > 0 is the object (palette PNG)
COCO_MVal     ``img``      ``gt``       0/255; object = value > 128 or 1
============  ===========  ===========  ==================================================

Values are on the 8-bit scale whatever the file's bit depth (:func:`~sumseg.data.images.mask_levels`:
a 1-bit mask's 1 is 255, a 16-bit 65535 is 255, a 16-bit 0/1 mask stays 0/1). The object is
RITM's: its reader sets values above 128 to 1 and takes the pixels equal to 1, so a 0/1 mask is
read as the 0/255 one. Berkeley and COCO_MVal threshold at 128 as RITM does, because the
distributed Berkeley masks carry a few stray pixels (values 197 and 243, magenta (255, 0, 255));
GrabCut's values are checked exactly, since its 128 band is meaningful.

Images and masks pair by file stem. :func:`benchmark_layout` alone decides whether a folder is a
benchmark and which (``read_dataset``'s detection uses it too): the benchmark is named by
``name`` or, when omitted, by the folder's name (case-insensitive, ``_``/``-`` ignored); an
unknown name falls back to the layout: ``data_GT``+``boundary_GT`` → GrabCut rules,
``img``+``gt`` → DAVIS rules, ``images``+``masks`` → Berkeley rules when the folder has the
Berkeley form (:func:`is_one_object_folder`), which tells it apart from an instance-mask folder
(:mod:`sumseg.data.folder`) with the same subfolder names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sumseg.checks import check_not_empty, check_same_size, check_task, check_values
from sumseg.data import rle as rle_utils
from sumseg.data.folder import files_by_stem
from sumseg.data.images import image_size, is_image_file, load_label, mask_levels
from sumseg.data.records import Dataset, ImageRecord, MaskRecord, SkipReport
from sumseg.errors import DataError
from sumseg.tasks import DEFAULT_TASKS


@dataclass(frozen=True)
class BenchmarkLayout:
    """Where a benchmark keeps its files and what its mask values mean."""

    name: str
    images: str
    masks: str
    threshold: int  # object = value > threshold
    values: frozenset[int] | None = None  # allowed values; None = any value
    ignore_value: int | None = None


BENCHMARKS: dict[str, BenchmarkLayout] = {
    "grabcut": BenchmarkLayout("GrabCut", "data_GT", "boundary_GT", 128, frozenset({0, 1, 128, 255}), 128),
    "berkeley": BenchmarkLayout("Berkeley", "images", "masks", 128),
    "davis": BenchmarkLayout("DAVIS", "img", "gt", 0),
    "cocomval": BenchmarkLayout("COCO_MVal", "img", "gt", 128),
}


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _is_object_mask(path: Path) -> bool:
    """True when ``path`` is a one-object mask: on the 8-bit scale (:func:`mask_levels`), 0
    background and every other value > 128. A 0/1 mask is not: it is also a one-instance id map."""
    try:
        label = mask_levels(load_label(path, colour="max"), path)
    except DataError:
        return False
    values = np.unique(label)
    return bool(values[-1] > 128 and np.all((values == 0) | (values > 128)))


def is_one_object_folder(root: Path, images: str = "images", masks: str = "masks") -> bool:
    """True when ``root/images`` + ``root/masks`` hold one object mask per image (Berkeley's form).

    The form: ``masks/`` has no subfolders; its mask files' stems are exactly the image files'
    stems (one mask per image); the first mask by name is an 8-bit one-object mask (0
    background, every other value above 128; colour files: the channel maximum). An
    instance-mask folder fails this: it has per-image mask subfolders, or instance-id maps
    numbering their instances 1, 2, ... Only the first mask is decoded, so detection stays cheap.
    """
    image_dir, mask_dir = root / images, root / masks
    if not (image_dir.is_dir() and mask_dir.is_dir()):
        return False
    entries = sorted(p for p in mask_dir.iterdir() if not p.name.startswith("."))
    if any(p.is_dir() for p in entries):
        return False
    mask_files = [p for p in entries if is_image_file(p)]
    image_stems = sorted(p.stem for p in image_dir.iterdir() if is_image_file(p))
    if not mask_files or image_stems != sorted(p.stem for p in mask_files):
        return False
    return _is_object_mask(mask_files[0])


def benchmark_layout(root: Path, name: str | None = None) -> BenchmarkLayout | None:
    """The RITM layout of ``root``, or None when ``root`` is not a benchmark folder.

    Decided, first match wins, by ``name``, by ``root``'s folder name, then by its subfolders:
    ``data_GT/``+``boundary_GT/`` → GrabCut, ``img/``+``gt/`` → DAVIS, ``images/``+``masks/`` in
    the one-object form of :func:`is_one_object_folder` → Berkeley. An unknown ``name`` raises.
    """
    if name is not None:
        if _key(name) not in BENCHMARKS:
            raise DataError(
                f"{root}: unknown benchmark {name!r}; known: {[b.name for b in BENCHMARKS.values()]}"
            )
        return BENCHMARKS[_key(name)]
    if _key(root.name) in BENCHMARKS:
        return BENCHMARKS[_key(root.name)]
    for fallback in ("grabcut", "davis"):
        b = BENCHMARKS[fallback]
        if (root / b.images).is_dir() and (root / b.masks).is_dir():
            return b
    berkeley = BENCHMARKS["berkeley"]
    return berkeley if is_one_object_folder(root, berkeley.images, berkeley.masks) else None


def _record(
    stem: str, image_path: Path, mask_path: Path, layout: BenchmarkLayout, task: int, root: Path
) -> ImageRecord:
    hw = image_size(image_path)
    label = mask_levels(load_label(mask_path, colour="max"), mask_path)
    check_same_size(label.shape, hw, mask_path, image_path)
    if layout.values is not None:
        check_values(label, set(layout.values), mask_path, f"{layout.name} mask")
    obj = (label > layout.threshold) | (label == 1)  # RITM: values > 128 become 1, and 1 is the object
    check_not_empty(obj, mask_path, f"{layout.name} object mask")
    ignore = rle_utils.encode(label == layout.ignore_value) if layout.ignore_value is not None else None
    return ImageRecord(
        stem,
        image_path,
        hw[0],
        hw[1],
        [MaskRecord(rle_utils.encode(obj), task, stem)],
        ignore,
        source=mask_path,
        dataset=layout.name,
        split=root.name,
    )


def read_benchmark(
    root: str | Path, name: str | None = None, *, default_task: int = 0, skip_bad: bool = False
) -> Dataset:
    """Read a RITM-layout benchmark folder: one record (one mask, GrabCut: an ignore map) per image.

    An image without a mask, or a mask without an image, is an error (or, with ``skip_bad``, a
    listed skip).
    """
    root = Path(root)
    layout = benchmark_layout(root, name)
    if layout is None:
        raise DataError(
            f"{root}: not a RITM benchmark folder (unknown name, no known image/mask subfolders); "
            "give the benchmark's name to read it as one"
        )
    task = check_task(default_task, DEFAULT_TASKS, root, "the default task")
    for sub in (layout.images, layout.masks):
        if not (root / sub).is_dir():
            raise DataError(f"{root}: {layout.name} layout needs the subfolder '{sub}/'")
    images = files_by_stem(root / layout.images, "image")
    masks = files_by_stem(root / layout.masks, "mask")
    report = SkipReport()
    records = []
    for stem in sorted(set(images) | set(masks)):
        with report.guard(images.get(stem) or masks[stem], skip_bad):
            if stem not in masks:
                raise DataError(f"{images[stem]}: no mask for this image in {root / layout.masks}")
            if stem not in images:
                raise DataError(f"{masks[stem]}: no image for this mask in {root / layout.images}")
            records.append(_record(stem, images[stem], masks[stem], layout, task, root))
    return Dataset(records, report, f"ritm:{layout.name}", root)
