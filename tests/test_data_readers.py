"""Every reader on small fixtures written by the tests, format detection, and the real benchmarks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sumseg.data import rle as rle_utils
from sumseg.data.dataset import detect_format, read_dataset
from sumseg.data.records import ImageRecord
from sumseg.evaluate.interactive import gt_box

H, W = 20, 30
BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def save_rgb(path: Path, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Write a random RGB image (PNG or JPEG by suffix) and return its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def save_gray(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


def box_mask(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major runs, background first) of a bool mask."""
    flat = mask.T.reshape(-1).astype(np.int64)
    edges = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    runs = np.diff(edges).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def coco_doc(root: Path) -> dict[str, Any]:
    """Two images; a polygon (task field), compressed RLE (category → task), uncompressed RLE, a crowd."""
    save_rgb(root / "imgs" / "a.png", seed=1)
    save_rgb(root / "imgs" / "b.png", seed=2)
    return {
        "images": [
            {"id": 1, "file_name": "imgs/a.png", "height": H, "width": W},
            {"id": 2, "file_name": "imgs/b.png", "height": H, "width": W},
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]],
                "task": 1,
                "category_id": 5,
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 7,
                "segmentation": rle_utils.to_json(rle_utils.encode(box_mask(5, 15, 10, 25))),
            },
            {"id": 12, "image_id": 2, "segmentation": uncompressed(box_mask(0, 4, 0, 30))},
            {"id": 13, "image_id": 2, "iscrowd": 1, "segmentation": uncompressed(box_mask(10, 20, 0, 5))},
        ],
        "categories": [{"id": 5, "name": "x"}, {"id": 7, "name": "y"}],
    }


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_coco_reader(tmp_path: Path) -> None:
    path = write_json(tmp_path / "annotations.json", coco_doc(tmp_path))
    from sumseg.data.coco import read_coco

    ds = read_coco(path, category_tasks={7: 3}, default_task=2)
    a, b = ds.records
    assert (a.image_id, b.image_id, a.split) == ("1", "2", tmp_path.name)
    assert a.tasks == [1, 3] and b.tasks == [2]
    np.testing.assert_array_equal(a.mask(1), box_mask(5, 15, 10, 25))
    np.testing.assert_array_equal(b.mask(0), box_mask(0, 4, 0, 30))
    assert a.mask(0)[3:10, 3:12].all() and not a.mask(0)[15:].any()
    np.testing.assert_array_equal(b.ignore_mask(), box_mask(10, 20, 0, 5))  # crowd → ignore
    assert a.ignore is None and a.load_image().shape == (H, W, 3)
    assert gt_box(a.mask(1)) == (10, 5, 24, 14)  # inclusive (x0, y0, x1, y1)
    assert read_coco(path, crowd="instance").records[1].tasks == [0, 0]
    assert len(read_coco(path, crowd="drop").records[1].masks) == 1


def test_coco_declared_tasks(tmp_path: Path) -> None:
    doc = coco_doc(tmp_path)
    doc["annotations"][0]["task"] = 7
    doc["tasks"] = [{"id": 7, "name": "mine"}]
    ds = read_dataset(write_json(tmp_path / "c.json", doc))
    assert ds.records[0].tasks == [7, 0] and ds.records[0].split == "c"


def sa1b_folder(root: Path) -> Path:
    for i in range(2):
        save_rgb(root / f"sa_{i}.jpg", seed=i)
        anns = [
            {
                "id": 100 * i + k,
                "segmentation": rle_utils.to_json(rle_utils.encode(box_mask(k, k + 5, 0, 9))),
                "area": 45,
                "predicted_iou": 0.9,
            }
            for k in range(3)
        ]
        write_json(
            root / f"sa_{i}.json",
            {
                "image": {"image_id": i, "file_name": f"sa_{i}.jpg", "height": H, "width": W},
                "annotations": anns,
            },
        )
    return root


def test_sa1b_reader(tmp_path: Path) -> None:
    root = sa1b_folder(tmp_path / "sa1b")
    assert detect_format(root) == "sa1b"
    ds = read_dataset(root)
    assert len(ds) == 2 and ds.num_masks == 6 and ds.format == "sa1b"
    np.testing.assert_array_equal(ds.records[1].mask(2), box_mask(2, 7, 0, 9))
    assert ds.records[0].tasks == [0, 0, 0]


def test_mask_folder_both_layouts(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    save_rgb(root / "images" / "x.jpg")
    save_gray(root / "masks" / "x" / "1.png", box_mask(0, 5, 0, 5) * 255)
    save_gray(root / "masks" / "x" / "2.png", box_mask(5, 9, 5, 9) * 1)
    save_rgb(root / "images" / "y.png")
    label = np.zeros((H, W), np.uint8)
    label[:4], label[10:], label[5:8, 5:8] = 3, 7, 0
    save_gray(root / "masks" / "y.png", label)
    assert detect_format(root) == "mask-folder"
    x, y = read_dataset(root, default_task=3).records
    assert [m.ann_id for m in x.masks] == [1, 2] and [m.ann_id for m in y.masks] == [3, 7]
    np.testing.assert_array_equal(x.mask(1), box_mask(5, 9, 5, 9))
    np.testing.assert_array_equal(y.mask(1), label == 7)
    assert x.tasks == [3, 3]


RITM_CASES = {  # folder name → (image dir, mask dir, mask values, object, ignore)
    "GrabCut": ("data_GT", "boundary_GT", (0, 128, 255), 255, 128),
    "Berkeley": ("images", "masks", (0, 255, 255), 255, None),
    "DAVIS": ("img", "gt", (0, 1, 2), None, None),
    "COCO_MVal": ("img", "gt", (0, 255, 255), 255, None),
}


@pytest.mark.parametrize("name", list(RITM_CASES))
def test_ritm_layouts(tmp_path: Path, name: str) -> None:
    img_dir, mask_dir, values, obj, ignore = RITM_CASES[name]
    root = tmp_path / name.lower()
    label = np.zeros((H, W), np.uint8)
    label[2:8, 2:8], label[10:14, 10:20] = values[1], values[2]
    for i in range(3):
        save_rgb(root / img_dir / f"{i}.jpg", seed=i)
        if name == "DAVIS":
            im = Image.fromarray(label, mode="P")
            im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
            (root / mask_dir).mkdir(exist_ok=True)
            im.save(root / mask_dir / f"{i}.png")
        else:
            save_gray(root / mask_dir / f"{i}.{'bmp' if name == 'GrabCut' else 'png'}", label)
    assert detect_format(root) == "ritm"
    ds = read_dataset(root)
    assert len(ds) == 3 and ds.num_masks == 3 and ds.format == f"ritm:{name}"
    expected = label > 0 if obj is None else label == obj
    np.testing.assert_array_equal(ds.records[0].mask(0), expected)
    if ignore is None:
        assert ds.records[0].ignore is None
    else:
        np.testing.assert_array_equal(ds.records[0].ignore_mask(), label == ignore)


def test_berkeley_layout_under_another_name_is_the_benchmark(tmp_path: Path) -> None:
    root = tmp_path / "copy"  # not named Berkeley: detected by its one-object images/ + masks/ form
    label = np.zeros((H, W, 3), np.uint8)
    label[2:8, 2:8] = 255
    stray = label.copy()
    stray[0, 0], stray[1, 1] = (255, 0, 255), (197, 197, 197)  # Berkeley's stray pixels
    for i, mask in enumerate([label, stray, label[:, :, 0]]):
        save_rgb(root / "images" / f"{i}.jpg", seed=i)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    assert detect_format(root) == "ritm"
    ds = read_dataset(root)
    assert ds.format == "ritm:Berkeley" and len(ds) == 3 and not ds.skipped
    np.testing.assert_array_equal(ds.records[0].mask(0), label[:, :, 0] > 0)
    assert ds.records[1].mask(0)[0, 0] and ds.records[1].mask(0)[1, 1]


@pytest.mark.parametrize("values", [(3, 7), (1, 1)])
def test_instance_id_maps_alone_are_a_mask_folder(tmp_path: Path, values: tuple[int, int]) -> None:
    root = tmp_path / "maps"  # images/ + masks/<id>.png, no subfolders, but ids 1, 2, ... are not one object
    label = np.zeros((H, W), np.uint8)
    label[:4], label[10:] = values
    for i in range(2):
        save_rgb(root / "images" / f"{i}.jpg", seed=i)
        save_gray(root / "masks" / f"{i}.png", label)
    assert detect_format(root) == "mask-folder"
    assert [m.ann_id for m in read_dataset(root).records[0].masks] == sorted(set(values))


@pytest.mark.skipif(not (BENCHMARKS / "Berkeley").is_dir(), reason=f"benchmarks not found at {BENCHMARKS}")
def test_real_berkeley_copy_under_another_name(tmp_path: Path) -> None:
    copy = tmp_path / "x"
    shutil.copytree(BENCHMARKS / "Berkeley", copy)
    assert detect_format(copy) == "ritm"
    ds = read_dataset(copy)
    assert ds.format == "ritm:Berkeley" and len(ds) == 100 and not ds.skipped


def test_unlabelled_folder(tmp_path: Path) -> None:
    save_rgb(tmp_path / "u" / "a.jpg")
    save_rgb(tmp_path / "u" / "sub" / "b.png", 40, 10)
    (tmp_path / "u" / "notes.txt").write_text("ignored")
    assert detect_format(tmp_path / "u") == "images"
    ds = read_dataset(tmp_path / "u")
    assert [r.image_id for r in ds.records] == ["a", "sub/b"] and ds.num_masks == 0
    assert (ds.records[1].height, ds.records[1].width) == (40, 10)


def test_coco_splits_folder(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_json(tmp_path / "w" / split / "annotations.json", coco_doc(tmp_path / "w" / split))
    assert detect_format(tmp_path / "w") == "coco-splits"
    ds = read_dataset(tmp_path / "w")
    assert sorted({r.split for r in ds.records}) == ["test", "train"] and len(ds) == 4


def _check_benchmark(records: list[ImageRecord], n: int, ignore: bool) -> None:
    assert len(records) == n and all(len(r.masks) == 1 and r.masks[0].area > 0 for r in records)
    assert all((r.ignore is not None) == ignore for r in records)


@pytest.mark.skipif(not (BENCHMARKS / "GrabCut").is_dir(), reason=f"benchmarks not found at {BENCHMARKS}")
def test_real_grabcut_and_berkeley() -> None:
    grabcut = read_dataset(BENCHMARKS / "GrabCut")
    _check_benchmark(grabcut.records, 50, ignore=True)
    assert sum(r.ignore_mask().any() for r in grabcut.records) == 42  # 8 masks have no 128 band
    berkeley = read_dataset(BENCHMARKS / "Berkeley")
    _check_benchmark(berkeley.records, 100, ignore=False)
    r = berkeley.records[0]
    assert r.load_image().shape == (r.height, r.width, 3)
