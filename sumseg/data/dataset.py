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
5. a folder holding ``*.json`` files: the first of them (by name) that parses decides: an SA-1B
   per-image document → SA-1B (the reader then reports any broken file before it); a COCO
   document (``images`` + ``annotations``) → COCO, when it is the folder's only JSON file.
   A folder holding JSON files is never read as a weaker format: several JSON files beside a
   COCO file, a JSON file of neither kind, or no JSON file that parses raise DataError naming
   the file;
6. a folder holding ``images/`` + ``masks/`` → instance-mask folder;
7. a folder holding image files (at any depth) → unlabelled images.

Anything else raises :class:`DataError`.

``images/`` + ``masks/`` is Berkeley's layout and the instance-mask folder's. It is a benchmark
(rule 4) when ``masks/`` has no subfolders, its mask files' stems are exactly the image files'
stems (``masks/<id>.png`` per ``images/<id>.jpg``), and the first mask by name is a
one-object mask: 0 background, every other value above 128 on the 8-bit scale (any bit depth,
see :func:`sumseg.data.images.mask_levels`; colour files: channel maximum).
Otherwise it is an instance-mask folder (rule 6): per-image mask subfolders, or instance-id maps,
which number their instances 1, 2, ... (a folder whose first map holds one instance numbered
above 128 would read as a benchmark). ``benchmark=`` forces a benchmark whatever the layout.
"""

from __future__ import annotations

from pathlib import Path

from sumseg.checks import load_json
from sumseg.data.coco import is_coco_doc, read_coco
from sumseg.data.folder import read_mask_folder
from sumseg.data.images import is_image_file
from sumseg.data.records import Dataset, SkipReport
from sumseg.data.ritm import benchmark_layout, read_benchmark
from sumseg.data.sa1b import is_sa1b_doc, read_sa1b
from sumseg.data.unlabelled import read_images
from sumseg.errors import DataError


def _json_format(folder: Path) -> tuple[str, Path] | None:
    """("sa1b" or "coco", the file that decided) for a folder holding ``*.json`` files (rule 5)."""
    jsons = sorted(p for p in folder.glob("*.json") if not p.name.startswith(".") and p.is_file())
    first_error: DataError | None = None
    for p in jsons:
        try:
            doc = load_json(p)
        except DataError as e:
            first_error = first_error or e
            continue
        if is_sa1b_doc(doc):
            return "sa1b", folder
        if is_coco_doc(doc) and len(jsons) == 1:
            return "coco", p
        if is_coco_doc(doc):
            others = ", ".join(q.name for q in jsons if q != p)
            raise DataError(
                f"{folder}: holds the COCO file {p.name} and other JSON files ({others}); give the path "
                "of the COCO file to read"
            )
        raise DataError(
            f"{p}: neither a COCO instance file (an object with 'images' and 'annotations') nor an SA-1B "
            "per-image file (an object with 'image' and 'annotations'); a folder holding JSON files is not "
            "read as plain images (move the JSON files out, or use sumseg.data.read_images)"
        )
    if first_error is not None:
        raise first_error
    return None


def _detect(path: Path) -> tuple[str, Path]:
    """The format of ``path`` and the file or folder its reader reads."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco", path
        raise DataError(f"{path}: not a dataset (a file must be a COCO .json; otherwise give a folder)")
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if (path / "annotations.json").is_file():
        return "coco", path / "annotations.json"
    if any((d / "annotations.json").is_file() for d in path.iterdir() if d.is_dir()):
        return "coco-splits", path
    if benchmark_layout(path) is not None:
        return "ritm", path
    found = _json_format(path)
    if found is not None:
        return found
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "mask-folder", path
    if any(is_image_file(p) for p in path.rglob("*")):
        return "images", path
    raise DataError(f"{path}: no readable dataset found (see the detection rules in docs/data.md)")


def detect_format(path: str | Path) -> str:
    """The format :func:`read_dataset` would use for ``path``.

    One of ``coco``, ``coco-splits``, ``ritm``, ``sa1b``, ``mask-folder``, ``images``. Raises
    DataError naming the file when a JSON file in the folder is broken or of no known kind.
    """
    return _detect(Path(path))[0]


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
    if benchmark is not None:
        return read_benchmark(path, benchmark, default_task=default_task, skip_bad=skip_bad)
    fmt, source = _detect(path)
    if fmt == "ritm":
        return read_benchmark(path, default_task=default_task, skip_bad=skip_bad)
    if fmt == "coco":
        return read_coco(source, default_task=default_task, check_images=check_images, skip_bad=skip_bad)
    if fmt == "coco-splits":
        return _read_splits(path, skip_bad, check_images, default_task)
    if fmt == "sa1b":
        return read_sa1b(path, default_task=default_task, check_images=check_images, skip_bad=skip_bad)
    if fmt == "mask-folder":
        return read_mask_folder(path, default_task=default_task, skip_bad=skip_bad)
    return read_images(path, skip_bad=skip_bad)
