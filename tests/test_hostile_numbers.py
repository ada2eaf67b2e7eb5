"""Hostile numbers in annotation and checkpoint files: refused with the file named, before a
library (pycocotools, torch) or an allocation sees them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sumseg import build_model, load_checkpoint, save_checkpoint
from sumseg.data import rle as rle_utils
from sumseg.data.coco import read_coco
from sumseg.data.dataset import read_dataset
from sumseg.errors import CheckpointError, DataError
from tests.test_data_readers import H, W, box_mask, coco_doc, sa1b_folder, save_gray, save_rgb, write_json


def _ann(doc: dict[str, Any], i: int, **fields: Any) -> dict[str, Any]:
    doc["annotations"][i].update(fields)
    return doc


def _star(n: int, r: float, cx: float = W / 2, cy: float = H / 2) -> list[float]:
    """A polygon of n vertices zig-zagging across a circle of radius r: its outline is ~2rn pixels."""
    pts = []
    for k in range(n):
        angle = np.pi * k * (n // 2 - 1) * 2 / n
        pts += [cx + r * np.cos(angle), cy + r * np.sin(angle)]
    return pts


def _compressed(cnts: list[int]) -> str:
    """pycocotools' counts string (rleToString) of run lengths of any size."""
    out = []
    for i, c in enumerate(cnts):
        x = c - cnts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            out.append(chr((ch | 0x20 if more else ch) + 48))
    return "".join(out)


def _int64_wrapping_runs(total: int) -> list[int]:
    """Runs, each in [0, 2**63) and each step within a 12-character value, summing to 2**64 + total.

    Summed in int64 they wrap around to exactly ``total``; pycocotools reads them truncated to 32 bits.
    """
    d = (1 << 59) - 1
    odd = [d * k for k in range(1, 7)] + [6 * d, 5 * d + total + 32]
    return [r for v in odd for r in (0, v)]


COCO_CASES: dict[str, tuple[Any, str]] = {  # case → (edit of the document, problem)
    "polygon coordinate 1e12 (segfaulted pycocotools)": (
        lambda d: _ann(d, 0, segmentation=[[2, 2, 1e12, 2, 12, 10]]),
        r"polygon coordinate 1e\+12 .*outside",
    ),
    "polygon coordinate 1e7 (cost a gigabyte)": (
        lambda d: _ann(d, 0, segmentation=[[2, 2, 1e7, 2, 12, 10]]),
        "outside",
    ),
    "polygon outline of 100 000 pixels": (
        lambda d: _ann(d, 0, segmentation=[_star(2001, 25)]),
        "polygon outline .* pixels long",
    ),
    "polygon coordinate of 401 digits (was an OverflowError)": (
        lambda d: _ann(d, 0, segmentation=[[2, 2, 10**400, 2, 12, 10]]),
        "too large for a float",
    ),
    "boolean polygon coordinate": (
        lambda d: _ann(d, 0, segmentation=[[2, 2, True, 2, 12, 10]]),
        "coordinates must be finite numbers",
    ),
    "uncompressed count 1e30": (
        lambda d: _ann(d, 2, segmentation={"size": [H, W], "counts": [10**30, 0]}),
        "run length",
    ),
    "compressed counts whose sum wraps int64": (
        lambda d: _ann(d, 1, segmentation={"size": [H, W], "counts": _compressed(_int64_wrapping_runs(H * W))}),
        "run length",
    ),
    "boolean RLE size": (
        lambda d: _ann(d, 1, segmentation={"size": [True, True], "counts": [1]}),
        "RLE 'size' must be",
    ),
    "iscrowd string '0'": (lambda d: _ann(d, 1, iscrowd="0"), "'iscrowd' must be 0 or 1"),
    "iscrowd 2": (lambda d: _ann(d, 1, iscrowd=2), "'iscrowd' must be 0 or 1"),
    "category id a list": (lambda d: _ann(d, 1, category_id=[7]), "'category_id' must be"),
    "declared task id 3e9": (
        lambda d: d.update(tasks=[3_000_000_000]),
        r"tasks\[0\] \(a task id\) must be an int in \[0, 1023\]",
    ),
    "annotation task id 3e9": (lambda d: _ann(d, 0, task=3_000_000_000), "unknown task id 3000000000"),
    "image id 1e30": (
        lambda d: d["images"][1].update(id=10**30),
        r"images\[1\] field 'id' must be a str or fit a 64-bit int",
    ),
    "annotation id 1 and '1'": (lambda d: _ann(d, 1, id="10"), "duplicate annotation id"),
    "float image size": (lambda d: d["images"][1].update(height=20.0), "'height' must be int"),
}


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_hostile_coco_numbers_are_refused(tmp_path: Path, case: str) -> None:
    edit, problem = COCO_CASES[case]
    doc = coco_doc(tmp_path)
    edit(doc)
    path = write_json(tmp_path / "ann.json", doc)
    with pytest.raises(DataError, match=rf"ann\.json: .*{problem}"):
        read_coco(path, category_tasks={7: 3})


def test_declared_image_size_is_bounded_before_any_allocation(tmp_path: Path, monkeypatch) -> None:
    doc = coco_doc(tmp_path)
    doc["images"][1].update(height=10**6, width=10**6)
    doc["annotations"][2]["segmentation"] = {"size": [10**6, 10**6], "counts": [10**12]}
    path = write_json(tmp_path / "ann.json", doc)
    with pytest.raises(DataError, match=r"ann\.json: images\[1\] size 1000000x1000000 .*above the limit"):
        read_coco(path, check_images=False)
    monkeypatch.setenv("SUMSEG_MAX_IMAGE_PIXELS", "500")  # the limit is configurable; 20x30 is above it
    problem = r"images\[0\] size 20x30 \(HxW\) is 600 pixels, above the limit of 500 .*SUMSEG_MAX_IMAGE_PIXELS"
    with pytest.raises(DataError, match=problem):
        read_coco(write_json(tmp_path / "ok.json", coco_doc(tmp_path)), check_images=False)


def test_rle_run_longer_than_the_image_is_refused_directly() -> None:
    runs = _int64_wrapping_runs(H * W)
    assert np.asarray(runs, dtype=np.uint64).sum() == H * W  # the trap: wraps to the right total
    assert "run length" in (rle_utils.check_rle({"size": [H, W], "counts": _compressed(runs)}, H, W) or "")
    assert rle_utils.check_rle({"size": [H, W], "counts": _compressed([H * W])}, H, W) is None


def test_string_zero_is_not_a_crowd_and_json_booleans_are(tmp_path: Path) -> None:
    doc = coco_doc(tmp_path)
    doc["annotations"][3]["iscrowd"] = True
    doc["annotations"][2]["iscrowd"] = False
    ds = read_coco(write_json(tmp_path / "ann.json", doc))
    assert len(ds.records[1].masks) == 1 and ds.records[1].ignore is not None


@pytest.mark.parametrize(
    ("image_id", "problem"), [([1], "'image_id' must be int or str, got list"), (1.5, "must be int or str")]
)
def test_sa1b_image_id_type(tmp_path: Path, image_id: Any, problem: str) -> None:
    root = sa1b_folder(tmp_path / "sa")
    doc = json.loads((root / "sa_1.json").read_text())
    doc["image"]["image_id"] = image_id
    write_json(root / "sa_1.json", doc)
    with pytest.raises(DataError, match=rf"sa_1\.json: .*{re.escape(problem)}"):
        read_dataset(root)


# --- checkpoints ---------------------------------------------------------------------------


def _rewrite(path: Path, edit_meta: Any = None, edit_tensors: Any = None) -> Path:
    """Rewrite a sumseg checkpoint with its JSON metadata or tensors edited."""
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
    tensors = load_file(str(path))
    if edit_meta is not None:
        packed = json.loads(header["sumseg"])  # {"format", "format_version", "meta"}
        edit_meta(packed["meta"])
        header["sumseg"] = json.dumps(packed)
    if edit_tensors is not None:
        edit_tensors(tensors)
    save_file(tensors, str(path), metadata=header)
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "m.ckpt", build_model("tiny"))


META_CASES: dict[str, tuple[Any, str]] = {
    "task id 3e9 (sized a 24 GB lookup table)": (
        lambda m: m.update(task_ids=[0, 3_000_000_000]),
        "task ids must be distinct ints from 0 to 1023",
    ),
    "task id True": (lambda m: m.update(task_ids=[0, True]), "task ids must be"),
    "task id '1'": (lambda m: m.update(task_ids=[0, "1"]), "task ids must be"),
    "duplicate task ids": (lambda m: m.update(task_ids=[0, 0]), "task ids must be distinct"),
    "model name a list": (lambda m: m.update(model=["tiny"]), "'model' must be str"),
    "negative step": (lambda m: m.update(step=-1), "'step' must be an int >= 0"),
    "float step": (lambda m: m.update(step=1.5), "'step' must be an int >= 0"),
    "config a list": (lambda m: m.update(config=[1]), "'config' must be"),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_hostile_checkpoint_metadata_is_refused(tmp_path: Path, tiny_ckpt: Path, case: str) -> None:
    edit, problem = META_CASES[case]
    path = tmp_path / "m.ckpt"
    path.write_bytes(tiny_ckpt.read_bytes())
    _rewrite(path, edit_meta=edit)
    with pytest.raises(CheckpointError, match=rf"m\.ckpt: .*{problem}"):
        load_checkpoint(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path: Path, tiny_ckpt: Path, bad: float) -> None:
    key = "sam.mask_decoder.iou_token.weight"

    def poison(t: dict[str, torch.Tensor]) -> None:
        t[key][0, 3] = bad

    path = tmp_path / "m.ckpt"
    path.write_bytes(tiny_ckpt.read_bytes())
    _rewrite(path, edit_tensors=poison)
    with pytest.raises(CheckpointError, match=rf"m\.ckpt: tensor '{re.escape(key)}' has 1 non-finite value"):
        load_checkpoint(path)
    state = {k.removeprefix("sam."): v for k, v in load_file(str(path)).items() if k.startswith("sam.")}
    torch.save(state, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match=r"plain\.pth: tensor 'mask_decoder\.iou_token\.weight' has 1 non-fin"):
        load_checkpoint(tmp_path / "plain.pth", "tiny")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 100_000, "JSON nested too deeply to read"),  # was a RecursionError
        ('{"images": [], "annotations": [], "x": NaN}', r"unreadable JSON file \(NaN is not"),  # was accepted
        ('{"images": [{"id": ' + "9" * 5000 + "}]}", r"unreadable JSON file \(Exceeds the limit"),  # ValueError
    ],
)
def test_json_beyond_what_python_parses_is_a_data_error(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "a.json").write_text(text)
    with pytest.raises(DataError, match=rf"a\.json: {problem}"):
        read_dataset(tmp_path / "a.json")


def test_unicode_digit_file_names_are_names_not_numbers(tmp_path: Path) -> None:
    save_rgb(tmp_path / "f" / "images" / "a.png")
    save_gray(tmp_path / "f" / "masks" / "a" / "².png", box_mask(0, 5, 0, 5) * 255)  # "²".isdigit() is True
    save_gray(tmp_path / "f" / "masks" / "a" / "10.png", box_mask(5, 9, 0, 5) * 255)
    assert [m.ann_id for m in read_dataset(tmp_path / "f").records[0].masks] == [10, "²"]


def test_float_weight_stored_as_int_and_another_format_version(tmp_path: Path, tiny_ckpt: Path) -> None:
    state = {k.removeprefix("sam."): v for k, v in load_file(str(tiny_ckpt)).items() if k.startswith("sam.")}
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"].long()  # was silently cast
    torch.save(state, tmp_path / "int.pth")
    with pytest.raises(CheckpointError, match=r"int\.pth: .*1 dtype mismatches: mask_decoder\.iou_token\.weight: "):
        load_checkpoint(tmp_path / "int.pth", "tiny")
    path = tmp_path / "v2.ckpt"
    path.write_bytes(tiny_ckpt.read_bytes())
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
    packed = json.loads(header["sumseg"])
    save_file(load_file(str(path)), str(path), metadata={"sumseg": json.dumps({**packed, "format_version": 3})})
    with pytest.raises(CheckpointError, match=r"v2\.ckpt: sumseg checkpoint format version '3'; this sumseg reads"):
        load_checkpoint(path)
    # the three-key layout of version 1 says version 1; another number there is refused too
    old = {"format": "sumseg-checkpoint", "format_version": "2", "sumseg": json.dumps(packed["meta"])}
    save_file(load_file(str(path)), str(path), metadata=old)
    with pytest.raises(CheckpointError, match=r"format version '2'; this sumseg reads versions 1 and 2"):
        load_checkpoint(path)
