"""Property-based bad input: random bytes and mutated valid files through every data reader.

Each case ends in a DataError whose message starts with a file's path, or in a correct result;
never another exception type. Correct means: consistent (sizes agree with the file's header,
masks decode to their image's size and are not empty, task ids valid) and, where the mutation
left an annotation untouched, the very mask the unmutated file gives. A crash in a C library
(a signal) would abort the run, which fails it. Derandomised, with a fixed example count.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sumseg.data import rle as rle_utils
from sumseg.data.coco import read_coco
from sumseg.data.dataset import read_dataset
from sumseg.data.images import image_size, load_label, load_rgb, mask_levels
from sumseg.data.records import Dataset
from sumseg.data.sa1b import read_sa1b
from sumseg.errors import DataError
from sumseg.tasks import TASK_ID_LIMIT
from tests.test_data_readers import H, W, box_mask, coco_doc, sa1b_folder, save_rgb, write_json


def suite(n: int) -> settings:
    """Fixed example count, derandomised, no example database: the same cases on every run."""
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(autouse=True, scope="module")
def _small_pixel_limit() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:  # a mutated header must not make a case allocate much
        mp.setenv("SUMSEG_MAX_IMAGE_PIXELS", "1000000")
        yield


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """One to three byte-level mutations: truncate, flip bytes, insert or overwrite a run."""
    for _ in range(draw(st.integers(1, 3))):
        n = len(data)
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "overwrite"]))
        at = draw(st.integers(0, max(n - 1, 0)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip" and n:
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=32)) + data[at:]
        else:
            blob = draw(st.binary(min_size=1, max_size=32))
            data = data[:at] + blob + data[at + len(blob) :]
    return data


HOSTILE = [0, 1, -1, 2, 255, 2**31, 2**32 + 1, 2**63, -(2**63) - 1, 10**30, 3_000_000_000, 1e7, 1e12, -1e12,
           1e308, 0.5, -0.0, float("nan"), float("inf"), "0", "1", "", True, False, None, [], {}]  # fmt: skip
json_values = st.recursive(
    st.sampled_from(HOSTILE) | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


def _at(doc: Any, path: tuple) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def mutate_doc(doc: Any, draw: st.DrawFn) -> Any:
    """One to three edits of a JSON document (a deep copy): a number replaced by a hostile value
    (sizes, ids, coordinates, runs, flags), or any value replaced, deleted or added."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))[1:]
        if not paths:
            break
        numbers = [p for p in paths if _is_number(_at(doc, p))]
        if numbers and draw(st.booleans()):
            path = draw(st.sampled_from(numbers))
            _at(doc, path[:-1])[path[-1]] = draw(st.sampled_from(HOSTILE))
            continue
        path = draw(st.sampled_from(paths))
        parent = _at(doc, path[:-1])
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, list):
            parent.append(draw(json_values))
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["iscrowd", "task", "category_id", "tasks", "id"]))] = draw(json_values)
        else:
            parent[path[-1]] = draw(json_values)
    return doc


def expect_named_error(call: Callable[[], Any], *roots: Path) -> Any:
    """``call()``'s result, or None when it raised a DataError whose message starts with a path."""
    try:
        return call()
    except DataError as e:
        assert str(e).startswith(tuple(str(r) for r in roots) + ("/",)), str(e)
        return None


# --- image and mask files -------------------------------------------------------------------


def _gradient() -> np.ndarray:
    y, x = np.mgrid[0:12, 0:16]
    return np.stack([x * 16, y * 20, (x + y) * 8], axis=2).astype(np.uint8)


@pytest.fixture(scope="module")
def originals(work: Path) -> dict[str, bytes]:
    """Small valid files of every kind the readers meet."""
    rgb = _gradient()
    files = {
        "rgb.png": Image.fromarray(rgb),
        "rgb.jpg": Image.fromarray(rgb),
        "rgb.bmp": Image.fromarray(rgb),
        "rgb.tif": Image.fromarray(rgb),
        "rgb.webp": Image.fromarray(rgb),
        "gray16.png": Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257),
        "bit1.png": Image.fromarray(rgb[:, :, 0] > 100),
        "palette.png": Image.fromarray(rgb).convert("P"),
    }
    out = {}
    for name, im in files.items():
        im.save(work / f"original_{name}")
        out[name] = (work / f"original_{name}").read_bytes()
    return out


def _check_image(path: Path) -> None:
    size = expect_named_error(lambda: image_size(path), path)
    rgb = expect_named_error(lambda: load_rgb(path), path)
    if rgb is not None:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert size == rgb.shape[:2]  # what the header says is what decoding gives
    label = expect_named_error(lambda: load_label(path), path)
    if label is not None:
        levels = expect_named_error(lambda: mask_levels(label, path), path)
        assert label.ndim == 2 and (levels is None or (levels.dtype == np.uint8 and levels.shape == label.shape))


@suite(120)
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".tif", ".webp"]))
def test_random_bytes_as_images(work: Path, data: bytes, suffix: str) -> None:
    path = work / f"random{suffix}"
    path.write_bytes(data)
    _check_image(path)


@suite(200)
@given(st.data())
def test_mutated_images_and_masks(work: Path, originals: dict[str, bytes], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(originals)))
    path = work / f"mutated_{name}"
    path.write_bytes(mutate(originals[name], data.draw))
    _check_image(path)


def _mask_dataset(root: Path, kind: str, mask: bytes) -> None:
    shutil.rmtree(root, ignore_errors=True)
    save_rgb(root / "images" / "a.png")
    target = root / "masks" / ("a.png" if kind != "instances" else "a/1.png")
    target.parent.mkdir(parents=True)
    target.write_bytes(mask)


def _check_records(ds: Dataset) -> None:
    for rec in ds.records:
        assert (rec.height, rec.width) == image_size(rec.image_path)
        for m in rec.masks:
            mask = m.decode()
            assert mask.shape == (rec.height, rec.width) and mask.any() and m.area == int(mask.sum())
            assert 0 <= m.task < TASK_ID_LIMIT
        if rec.ignore is not None:
            assert rec.ignore_mask().shape == (rec.height, rec.width)


@suite(120)
@given(st.data())
def test_mutated_mask_files_in_every_mask_layout(work: Path, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["Berkeley", "GrabCut", "instances", "maps"]))
    depth = data.draw(st.sampled_from(["8", "1", "16"]))
    obj = box_mask(3, 12, 4, 20)
    a = {"8": obj.astype(np.uint8) * 255, "1": obj, "16": obj.astype(np.uint16) * 65535}[depth]
    probe = work / "probe.png"
    Image.fromarray(a).save(probe)
    root = work / "masks_case" / kind
    if kind == "GrabCut":
        shutil.rmtree(root, ignore_errors=True)
        save_rgb(root / "data_GT" / "a.png")
        (root / "boundary_GT").mkdir()
        (root / "boundary_GT" / "a.png").write_bytes(mutate(probe.read_bytes(), data.draw))
    else:
        _mask_dataset(root, kind, mutate(probe.read_bytes(), data.draw))
    ds = expect_named_error(lambda: read_dataset(root), root)
    if ds is not None:
        _check_records(ds)
        assert all((r.height, r.width) == (H, W) for r in ds.records)


# --- RLE and polygons: the pycocotools boundary ------------------------------------------


def _runs_mask(runs: list[int], h: int, w: int) -> np.ndarray:
    """Independent decoder: alternate 0/1 runs, column-major, background first."""
    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    return flat.reshape(w, h).T


SIZES = st.tuples(st.integers(1, 12), st.integers(1, 12))


@suite(200)
@given(hw=SIZES, runs=st.lists(st.sampled_from(HOSTILE[:12]) | st.integers(0, 40), max_size=8))
def test_uncompressed_rle_decodes_to_what_was_checked(hw: tuple[int, int], runs: list[Any]) -> None:
    segm = {"size": list(hw), "counts": runs}
    if rle_utils.check_rle(segm, *hw) is None:
        mask = rle_utils.decode(rle_utils.from_segmentation(segm, *hw))
        np.testing.assert_array_equal(mask, _runs_mask(runs, *hw))


@suite(200)
@given(hw=SIZES, counts=st.text(alphabet=[chr(c) for c in range(40, 100)], max_size=30))
def test_compressed_rle_decodes_to_what_was_checked(hw: tuple[int, int], counts: str) -> None:
    segm = {"size": list(hw), "counts": counts}
    if rle_utils.check_rle(segm, *hw) is None:
        mask = rle_utils.decode(rle_utils.from_segmentation(segm, *hw))
        runs = rle_utils._compressed_counts(counts.encode("ascii")).tolist()
        np.testing.assert_array_equal(mask, _runs_mask(runs, *hw))


coordinates = st.sampled_from([v for v in HOSTILE if not isinstance(v, str | list | dict)]) | st.floats(-40, 40)


@suite(200)
@given(hw=SIZES, polys=st.lists(st.lists(coordinates, min_size=5, max_size=12), min_size=0, max_size=3))
def test_polygons_rasterise_only_after_the_check(hw: tuple[int, int], polys: list[list[Any]]) -> None:
    if rle_utils.check_polygons(polys, *hw) is None:
        assert all(math.isfinite(v) and not isinstance(v, bool) for p in polys for v in p)
        mask = rle_utils.decode(rle_utils.from_segmentation(polys, *hw))
        assert mask.shape == hw


# --- annotation files ------------------------------------------------------------------------


def _masks_by_id(ds: Dataset) -> dict[tuple[str, str], np.ndarray]:
    return {(r.image_id, str(m.ann_id)): m.decode() for r in ds.records for m in r.masks}


def _untouched(doc: Any, original: dict[str, Any]) -> set[tuple[str, str]]:
    """(image id, annotation id) of annotations and images the mutation left as they were."""
    if not isinstance(doc, dict) or doc.get("tasks") != original.get("tasks"):
        return set()
    images, anns = doc.get("images"), doc.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        return set()
    same_images = {str(i["id"]) for i in images if i in original["images"]}
    return {
        (str(a["image_id"]), str(a["id"]))
        for a in anns
        if a in original["annotations"] and str(a["image_id"]) in same_images
    }


@pytest.fixture(scope="module")
def coco_case(work: Path) -> tuple[Path, dict[str, Any], dict[tuple[str, str], np.ndarray]]:
    """A folder with a valid COCO document's images, the document, and the masks it gives."""
    root = work / "coco_case"
    doc = coco_doc(root)
    return root, doc, _masks_by_id(read_coco(write_json(root / "ok.json", doc)))


@suite(150)
@given(st.data())
def test_mutated_coco_files(coco_case: tuple[Path, dict[str, Any], dict], data: st.DataObject) -> None:
    root, original, expected = coco_case
    path = root / "ann.json"
    if data.draw(st.booleans()):
        doc = mutate_doc(original, data.draw)
        path.write_text(json.dumps(doc))
    else:
        path.write_bytes(mutate(json.dumps(original).encode(), data.draw))
        try:
            doc = json.loads(path.read_bytes())
        except ValueError:
            doc = None
    ds = expect_named_error(lambda: read_coco(path, skip_bad=data.draw(st.booleans())), root)
    if ds is None:
        return
    assert doc is not None  # a file Python cannot parse was read
    _check_records(ds)
    got = _masks_by_id(ds)
    for key in _untouched(doc, original) & got.keys():
        np.testing.assert_array_equal(got[key], expected[key])


@pytest.fixture(scope="module")
def sa1b_good(work: Path) -> Path:
    return sa1b_folder(work / "sa1b_good")


@suite(80)
@given(st.data())
def test_mutated_sa1b_files(work: Path, sa1b_good: Path, data: st.DataObject) -> None:
    root = work / "sa1b_case"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(sa1b_good, root)
    source = json.loads((sa1b_good / "sa_0.json").read_text())
    if data.draw(st.booleans()):
        (root / "sa_0.json").write_text(json.dumps(mutate_doc(source, data.draw)))
    else:
        (root / "sa_0.json").write_bytes(mutate(json.dumps(source).encode(), data.draw))
    ds = expect_named_error(lambda: read_sa1b(root, skip_bad=data.draw(st.booleans())), root)
    if ds is None:
        return
    _check_records(ds)
    good = {str(m.ann_id): m.decode() for r in read_sa1b(sa1b_good).records for m in r.masks}
    for rec in ds.records:
        if rec.source is not None and rec.source.name == "sa_1.json":  # the untouched file reads as before
            for m in rec.masks:
                np.testing.assert_array_equal(m.decode(), good[str(m.ann_id)])
