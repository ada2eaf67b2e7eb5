"""``read_dataset``: detect a dataset's format from its path and read it with the right reader.

Detection rules, first match wins:

1. a ``.json`` file → COCO instance JSON;
2. a folder holding ``annotations.json`` → COCO (one split; images relative to the folder);
3. a folder whose subfolders hold ``annotations.json`` → COCO, one split per subfolder
   (the synthetic world's layout);
4. a RITM benchmark, as :func:`sumseg.data.ritm.benchmark_layout` decides: a folder named after
   one (GrabCut, Berkeley, DAVIS, COCO_MVal; any case, ``_``/``-`` ignored), or holding
   ``data_GT/`` + ``boundary_GT/`` (GrabCut rules) or ``img/`` + ``gt/`` (DAVIS rules), or
   holding ``images/`` + ``masks/`` in Berkeley's one-object form (Berkeley rules);
5. a folder whose first ``*.json`` (by name) is an SA-1B per-image document → SA-1B;
6. a folder holding ``images/`` + ``masks/`` → instance-mask folder;
7. a folder holding image files (at any depth) → unlabelled images.

Anything else raises :class:`DataError`.

``images/`` + ``masks/`` is Berkeley's layout and the instance-mask folder's. It is a benchmark
(rule 4) when ``masks/`` has no subfolders, its mask files' stems are exactly the image files'
stems (``masks/<id>.png`` per ``images/<id>.jpg``), and the first mask by name is an 8-bit
one-object mask: 0 background, every other value above 128 (colour files: channel maximum).
Otherwise it is an instance-mask folder (rule 6): per-image mask subfolders, or instance-id maps,
which number their instances 1, 2, ... (a folder whose first map holds one instance numbered
above 128 would read as a benchmark). ``benchmark=`` forces a benchmark whatever the layout.
"""

from __future__ import annotations

from pathlib import Path

from sumseg.data.coco import read_coco
from sumseg.data.folder import read_mask_folder
from sumseg.data.images import is_image_file
from sumseg.data.records import Dataset, SkipReport
from sumseg.data.ritm import benchmark_layout, read_benchmark
from sumseg.data.sa1b import is_sa1b_json, read_sa1b
from sumseg.data.unlabelled import read_images
from sumseg.errors import DataError


def detect_format(path: str | Path) -> str:
    """The format :func:`read_dataset` would use for ``path``.

    One of ``coco``, ``coco-splits``, ``ritm``, ``sa1b``, ``mask-folder``, ``images``.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise DataError(f"{path}: not a dataset (a file must be a COCO .json; otherwise give a folder)")
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if (path / "annotations.json").is_file():
        return "coco"
    if any((d / "annotations.json").is_file() for d in path.iterdir() if d.is_dir()):
        return "coco-splits"
    if benchmark_layout(path) is not None:
        return "ritm"
    jsons = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
    if jsons and is_sa1b_json(jsons[0]):
        return "sa1b"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "mask-folder"
    if any(is_image_file(p) for p in path.rglob("*")):
        return "images"
    raise DataError(f"{path}: no readable dataset found (see the detection rules in docs/data.md)")


def _read_splits(root: Path, skip_bad: bool, check_images: bool, default_task: int) -> Dataset:
    records, report = [], SkipReport()
    for d in sorted(d for d in root.iterdir() if (d / "annotations.json").is_file()):
        part = read_coco(
            d / "annotations.json", default_task=default_task, check_images=check_images, skip_bad=skip_bad
        )
        records.extend(part.records)
        report.extend(part.skipped)
    return Dataset(records, report, "coco-splits", root)


def read_dataset(
    path: str | Path,
    *,
    skip_bad: bool = False,
    check_images: bool = True,
    default_task: int = 0,
    benchmark: str | None = None,
) -> Dataset:
    """Detect the format of ``path`` (rules in the module docstring) and read it.

    ``default_task`` is the task of masks whose file does not say one; ``benchmark`` forces a
    RITM benchmark name. ``check_images`` (COCO, SA-1B) opens each image header; the other
    readers always do. With ``skip_bad`` bad items are skipped and listed in ``.skipped``.
    """
    path = Path(path)
    fmt = detect_format(path)
    if benchmark is not None or fmt == "ritm":
        return read_benchmark(path, benchmark, default_task=default_task, skip_bad=skip_bad)
    if fmt == "coco":
        json_path = path if path.is_file() else path / "annotations.json"
        return read_coco(json_path, default_task=default_task, check_images=check_images, skip_bad=skip_bad)
    if fmt == "coco-splits":
        return _read_splits(path, skip_bad, check_images, default_task)
    if fmt == "sa1b":
        return read_sa1b(path, default_task=default_task, check_images=check_images, skip_bad=skip_bad)
    if fmt == "mask-folder":
        return read_mask_folder(path, default_task=default_task, skip_bad=skip_bad)
    return read_images(path, skip_bad=skip_bad)
