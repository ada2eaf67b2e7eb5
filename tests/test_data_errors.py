"""Bad input: every error names the file and the problem; ``skip_bad`` counts and lists instead."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sumseg.data import rle as rle_utils
from sumseg.data.coco import read_coco
from sumseg.data.dataset import read_dataset
from sumseg.errors import DataError
from tests.test_data_readers import H, W, box_mask, coco_doc, sa1b_folder, save_gray, save_rgb, write_json

Edit = Callable[[dict[str, Any], Path], None]


def _set_ann(i: int, **fields: Any) -> Edit:
    return lambda doc, root: doc["annotations"][i].update(fields)


def _junk_image(doc: dict[str, Any], root: Path) -> None:
    (root / "imgs" / "a.png").write_bytes(b"\x89PNG but not really")


COCO_CASES: dict[str, tuple[Edit, str, str]] = {  # case → (edit, file named, problem)
    "unreadable image": (_junk_image, r"imgs/a\.png", "unreadable or corrupt image"),
    "image size": (lambda d, r: d["images"][0].update(height=H + 1), r"imgs/a\.png", "but .* says 21x30"),
    "missing field": (
        lambda d, r: d["images"][1].pop("width"),
        "ann.json",
        r"images\[1\] is missing the field 'width'",
    ),
    "duplicate image id": (lambda d, r: d["images"][1].update(id=1), "ann.json", "duplicate image id '1'"),
    "duplicate annotation id": (
        _set_ann(1, id=10),
        "ann.json",
        "annotation id 10 .* duplicate annotation id",
    ),
    "unknown image id": (_set_ann(0, image_id=99), "ann.json", "refers to image id '99'"),
    "unknown task": (_set_ann(0, task=9), "ann.json", r"unknown task id 9; valid ids: \[0, 1, 2, 3\]"),
    "empty mask": (
        _set_ann(1, segmentation=rle_utils.to_json(rle_utils.encode(np.zeros((H, W), bool)))),
        "ann.json",
        "annotation id 11 .*mask is empty",
    ),
    "mask size": (
        _set_ann(1, segmentation=rle_utils.to_json(rle_utils.encode(np.ones((H, W + 1), bool)))),
        "ann.json",
        "mask size 20x31 .* differs from the image size 20x30",
    ),
    "bad RLE runs": (
        _set_ann(2, segmentation={"size": [H, W], "counts": [5, 10]}),
        "ann.json",
        "RLE runs cover 15 pixels",
    ),
    "bad RLE string": (
        _set_ann(1, segmentation={"size": [H, W], "counts": "0a"}),
        "ann.json",
        "compressed RLE 'counts' is malformed",
    ),
    "bad polygon": (_set_ann(0, segmentation=[[1, 2, 3]]), "ann.json", "at least 3 .x, y. pairs"),
}


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_coco_errors_name_file_and_problem(tmp_path: Path, case: str) -> None:
    edit, file_re, problem = COCO_CASES[case]
    doc = coco_doc(tmp_path)
    edit(doc, tmp_path)
    path = write_json(tmp_path / "ann.json", doc)
    with pytest.raises(DataError, match=f"{file_re}.*{problem}"):
        read_coco(path)
    ds = read_coco(path, skip_bad=True)  # a duplicate image id also orphans image 2's annotations
    assert len(ds.skipped) == (3 if case == "duplicate image id" else 1)
    assert re.search(problem, ds.skipped.items[0][1])


@pytest.mark.parametrize(("field", "value"), [("height", -5), ("width", 0)])
def test_coco_declared_size_must_be_positive_without_image_checks(tmp_path: Path, field: str, value: int) -> None:
    doc = coco_doc(tmp_path)
    doc["images"][0][field] = value
    path = write_json(tmp_path / "ann.json", doc)
    problem = rf"ann\.json: images\[0\] field '{field}' must be a positive int, got {value}"
    with pytest.raises(DataError, match=problem):
        read_coco(path, check_images=False)
    ds = read_coco(path, check_images=False, skip_bad=True)
    assert [r.image_id for r in ds.records] == ["2"] and len(ds.skipped) == 1


def test_declared_size_mismatch_sa1b_and_load_image(tmp_path: Path) -> None:
    root = sa1b_folder(tmp_path / "sa")
    doc = json.loads((root / "sa_1.json").read_text())
    doc["image"]["width"] = W + 1
    write_json(root / "sa_1.json", doc)
    with pytest.raises(DataError, match=rf"sa_1\.jpg: image is 20x30 \(HxW\) but .*sa_1\.json says 20x{W + 1}"):
        read_dataset(root)
    doc["image"]["height"] = -1
    write_json(root / "sa_1.json", doc)
    with pytest.raises(DataError, match=r"sa_1\.json: 'image' field 'height' must be a positive int, got -1"):
        read_dataset(root, check_images=False)
    rec = read_dataset(sa1b_folder(tmp_path / "sa2")).records[0]
    rec.height += 1
    with pytest.raises(DataError, match=r"sa_0\.jpg: image is 20x30 \(HxW\) but .*sa_0\.json says 21x30"):
        rec.load_image()


def test_malformed_json_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"images": [],\n  "annotations": [1, }')
    with pytest.raises(DataError, match=r"bad\.json: malformed JSON at line 2, column 22"):
        read_dataset(path)


def test_coco_skip_bad_counts_every_problem(tmp_path: Path) -> None:
    doc = coco_doc(tmp_path)
    doc["annotations"][0]["task"] = 9
    doc["annotations"][2]["image_id"] = 42
    doc["images"].append({"id": 3, "file_name": "imgs/missing.png", "height": H, "width": W})
    doc["annotations"].append({"id": 14, "image_id": 3, "segmentation": [[0, 0, 5, 0, 5, 5]]})
    ds = read_coco(write_json(tmp_path / "ann.json", doc), skip_bad=True)
    assert len(ds.skipped) == 3  # bad task, unknown image, missing image file (its annotation goes with it)
    assert [len(r.masks) for r in ds.records] == [1, 0]
    assert "missing.png: image file not found" in ds.skipped.items[0][1]


def test_sa1b_errors(tmp_path: Path) -> None:
    root = sa1b_folder(tmp_path / "sa")
    write_json(root / "sa_1.json", {"annotations": []})
    with pytest.raises(DataError, match=r"sa_1\.json: the top level is missing the field 'image'"):
        read_dataset(root)
    assert len(read_dataset(root, skip_bad=True).skipped) == 1
    root = sa1b_folder(tmp_path / "sa2")
    doc = {
        "image": {"image_id": 5, "file_name": "sa_1.jpg", "height": H, "width": W},
        "annotations": [{"id": 2, "segmentation": rle_utils.to_json(rle_utils.encode(box_mask(0, 3, 0, 3)))}],
    }
    write_json(root / "sa_1.json", doc)
    with pytest.raises(DataError, match=r"sa_1\.json: annotation id 2 .* duplicate annotation id"):
        read_dataset(root)


def _mask_folder(root: Path, mask: np.ndarray) -> Path:
    save_rgb(root / "images" / "a.png")
    save_gray(root / "masks" / "a" / "1.png", box_mask(0, 5, 0, 5) * 255)
    save_gray(root / "masks" / "a" / "2.png", mask)
    save_rgb(root / "images" / "b.png")
    save_gray(root / "masks" / "b.png", box_mask(0, 5, 0, 5) * 3)
    return root


@pytest.mark.parametrize(
    ("mask", "problem"),
    [
        (
            np.zeros((H + 2, W), np.uint8),
            r"masks/a/2\.png: mask size 22x30 \(HxW\) differs from the image size 20x30",
        ),
        (
            box_mask(0, 3, 0, 3) * 7,
            r"masks/a/2\.png: binary instance mask has values 7; allowed values are \[0, 1, 255\]",
        ),
        (np.zeros((H, W), np.uint8), r"masks/a/2\.png: instance mask is empty"),
    ],
)
def test_mask_folder_errors(tmp_path: Path, mask: np.ndarray, problem: str) -> None:
    root = _mask_folder(tmp_path / "f", mask)
    with pytest.raises(DataError, match=problem):
        read_dataset(root)
    ds = read_dataset(root, skip_bad=True)
    assert len(ds.skipped) == 1 and [r.image_id for r in ds.records] == ["b"]


def test_grabcut_errors(tmp_path: Path) -> None:
    root = tmp_path / "GrabCut"
    for i, values in enumerate([(0, 255), (0, 77), (0, 0)]):
        save_rgb(root / "data_GT" / f"{i}.jpg")
        save_gray(root / "boundary_GT" / f"{i}.bmp", np.where(box_mask(0, 9, 0, 9), values[1], values[0]))
    save_gray(root / "boundary_GT" / "orphan.bmp", box_mask(0, 9, 0, 9) * 255)
    with pytest.raises(DataError, match=r"boundary_GT/1\.bmp: GrabCut mask has values 77"):
        read_dataset(root)
    ds = read_dataset(root, skip_bad=True)
    reasons = [reason for _, reason in ds.skipped]
    assert len(ds) == 1 and len(reasons) == 3
    assert "GrabCut object mask is empty" in reasons[1] and "orphan.bmp: no image for this mask" in reasons[2]


def test_unlabelled_skip_bad(tmp_path: Path) -> None:
    save_rgb(tmp_path / "u" / "a.png")
    (tmp_path / "u" / "b.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"b\.jpg: unreadable or corrupt image"):
        read_dataset(tmp_path / "u")
    ds = read_dataset(tmp_path / "u", skip_bad=True)
    assert len(ds) == 1 and len(ds.skipped) == 1 and ds.skipped.items[0][0].name == "b.jpg"


def test_nothing_readable(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match=r"e: no readable dataset found"):
        read_dataset(tmp_path / "e")
    with pytest.raises(DataError, match=r"nope: no such file or folder"):
        read_dataset(tmp_path / "nope")
