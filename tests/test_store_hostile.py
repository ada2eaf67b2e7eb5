"""A pseudo-label store's own files, damaged: every reader refuses by name, never a traceback.

A small store is written by the store's own writers (no model: two images of two masks, their U
maps, the index, ``meta.json``, ``uncertainty.json``). Each case damages a copy — a field set to
a wrong type, NaN, 1e12, a string for a number, a key removed, a file truncated anywhere or
replaced by random bytes, a tensor made non-finite or of another dtype — then reads everything
(``open_store``, ``load``, ``masks``, ``record``, ``uncertainty.json``). Each read must either give
finite, well-shaped values or raise DataError whose message starts with the damaged store's path
(and names the file and field where one is to blame). Hypothesis cases are derandomised.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sumseg.data import rle as rle_utils
from sumseg.errors import DataError
from sumseg.pipeline.store import (
    FORMAT,
    UNCERTAINTY_FORMAT,
    VERSION,
    ImageLabels,
    Shard,
    StoreEntry,
    image_stem,
    open_store,
    write_image,
    write_index,
)
from sumseg.pipeline.store_schema import read_uncertainty_meta
from sumseg.tensor_files import file_digest, read_tensors, save_tensors
from tests.test_hostile_data import suite

H, W, K, L = 24, 32, 2, 64
INDEX = "index/shard-00000-of-00001.json"
_case = count()


def _labels(seed: int) -> ImageLabels:
    g = torch.Generator().manual_seed(seed)
    masks = np.zeros((K, H, W), bool)
    masks[0, 2:10, 3:12], masks[1, 12:20, 15:30] = True, True
    return ImageLabels([rle_utils.encode(m) for m in masks], torch.randn(K, L, L, generator=g) * 5,
                       torch.tensor([[3.0, 2, 11, 9], [15, 12, 29, 19]]), torch.tensor([[7.0, 5], [20, 15]]),
                       torch.tensor([0.9, 0.8]), torch.tensor([0.95, 0.9]))


def _write_store(root: Path, complete: bool = True) -> Path:
    """A two-image store written by the store's writers, with U maps and uncertainty.json."""
    labels_dir = root / "labels"
    meta = {"format": FORMAT, "version": VERSION, "model": "tiny", "image_size": 256, "lowres_size": L,
            "model_fingerprint": "f" * 40, "input": "images", "input_digest": "d" * 32, "num_images": 2,
            "settings": {"points_per_side": 8}, "thresholds": {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.4},
            "calibration": {"images": ["img0"], "candidates": 12}}
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    entries = []
    for p in range(2):
        entry = StoreEntry(p, f"img{p}", image_stem(f"img{p}"), f"../img{p}.png", H, W, K, [0, 0, 2, 0, 0])
        write_image(labels_dir, entry, _labels(p))
        u8 = torch.randint(0, 256, (K, L, L), dtype=torch.uint8, generator=torch.Generator().manual_seed(p))
        save_tensors(labels_dir / f"img{p}.uncertainty.safetensors", {"uncertainty": u8},
                     {"format": UNCERTAINTY_FORMAT, "version": VERSION, "refiner_fingerprint": "r" * 40,
                      "labels_digest": file_digest(labels_dir / f"img{p}.safetensors")})
        entries.append(entry)
    write_index(root / "index", Shard(), entries, [{"position": None, "path": "bad.png", "reason": "unreadable"}],
                complete)
    (root / "uncertainty.json").write_text(json.dumps({"format": UNCERTAINTY_FORMAT, "version": VERSION,
                                                       "refiner": "tiny", "refiner_fingerprint": "r" * 40,
                                                       "quantisation": "uint8"}))
    return root


def read_everything(root: Path) -> None:
    """Every read a consumer makes; what comes back must be finite and of the index's shapes."""
    read_uncertainty_meta(root / "uncertainty.json")
    store = open_store(root)
    for i, e in enumerate(store.images):
        labels = store.load(i)
        for t in (labels.logits, labels.boxes, labels.points, labels.predicted_iou, labels.stability):
            assert t.shape[0] == e.num_masks and torch.isfinite(t).all()
        assert labels.confidence is not None and labels.confidence.shape == labels.logits.shape
        assert store.masks(i).shape == (e.num_masks, e.height, e.width)
        store.record(i)


class Built:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = _write_store(root / "template")
        read_everything(self.template)  # the undamaged store reads

    def damaged(self, damage: Callable[[Path], None]) -> Path:
        folder = self.root / f"case{next(_case)}"
        shutil.copytree(self.template, folder)
        damage(folder)
        return folder

    def refused(self, damage: Callable[[Path], None]) -> str | None:
        """The DataError message of reading the damaged copy (None: it read, and its values were sound)."""
        folder = self.damaged(damage)
        try:
            read_everything(folder)
            return None
        except DataError as e:
            assert str(e).startswith(str(folder)), e
            return str(e).replace(str(folder) + "/", "")
        finally:
            shutil.rmtree(folder)


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    with tempfile.TemporaryDirectory() as d:
        yield Built(Path(d))


JSON_FILES = ["meta.json", INDEX, "labels/img0.json", "uncertainty.json"]
HOSTILE = (st.none() | st.booleans() | st.sampled_from([1e12, 10**12, -1, 0, 2**64, "12", "", [], {}, 0.5])
           | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12))


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON document (containers too)."""
    items = list(doc.items()) if isinstance(doc, dict) else list(enumerate(doc)) if isinstance(doc, list) else []
    out = []
    for k, v in items:
        out += [at + (k,), *_paths(v, at + (k,))]
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> None:
    for k in path[:-1]:
        doc = doc[k]
    if delete and isinstance(doc, dict):
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


@suite(150)
@given(data=st.data(), name=st.sampled_from(JSON_FILES))
def test_json_fields_set_to_hostile_values(built: Built, data: st.DataObject, name: str) -> None:
    doc = json.loads((built.template / name).read_text())
    paths = sorted(_paths(doc), key=repr)
    path = data.draw(st.sampled_from(paths))
    value, delete = data.draw(HOSTILE), data.draw(st.booleans())

    def damage(folder: Path) -> None:
        _set(doc, path, value, delete)
        (folder / name).write_text(json.dumps(doc))  # NaN / Infinity written as the tokens strict JSON refuses

    message = built.refused(damage)
    assert message is None or message.startswith(name) or "unfinished" in message or "index/" in message, message


FIELDS = [  # (file, field path, the name the message gives)
    ("meta.json", ("num_images",), "num_images"), ("meta.json", ("image_size",), "image_size"),
    ("meta.json", ("lowres_size",), "lowres_size"), ("meta.json", ("thresholds", "pred_iou_thresh"),
                                                     "thresholds.pred_iou_thresh"),
    ("meta.json", ("model",), "model"), ("meta.json", ("settings",), "settings"),
    (INDEX, ("shard",), "shard"), (INDEX, ("complete",), "complete"), (INDEX, ("images", 0, "num_masks"),
                                                                       "images[0].num_masks"),
    (INDEX, ("images", 1, "height"), "images[1].height"), (INDEX, ("images", 0, "area_hist"), "images[0].area_hist"),
    (INDEX, ("images", 0, "stem"), "images[0].stem"), (INDEX, ("skipped", 0, "path"), "skipped[0].path"),
    ("labels/img0.json", ("sumseg", "position"), "sumseg.position"),
    ("labels/img0.json", ("image", "width"), "image.width"), ("labels/img0.json", ("annotations",), "annotations"),
    ("labels/img0.json", ("sumseg", "area_hist"), "sumseg.area_hist"),
    ("uncertainty.json", ("refiner_fingerprint",), "refiner_fingerprint"),
]


@pytest.mark.parametrize("name, path, field", FIELDS, ids=[f"{n}:{f}" for n, _, f in FIELDS])
@pytest.mark.parametrize("value", ["12", None, 1e12, 10**12, -1, True, [1], {"a": 1}, "missing"])
def test_a_wrong_field_is_named_with_its_file(built: Built, name: str, path: tuple[Any, ...], field: str,
                                              value: Any) -> None:
    doc = json.loads((built.template / name).read_text())
    original = doc
    for k in path:
        original = original[k]
    same_kind = isinstance(original, str) and isinstance(value, str) and field != "images[0].stem"
    any_number = field == "thresholds.pred_iou_thresh" and isinstance(value, int | float) and value is not True
    if value != "missing" and (value == original or same_kind or any_number):
        pytest.skip("not a damage for this field (a str for a str; a threshold may be any finite number)")

    def damage(folder: Path) -> None:
        _set(doc, path, value, delete=value == "missing")
        (folder / name).write_text(json.dumps(doc))

    message = built.refused(damage)
    if field == "settings" and isinstance(value, dict):
        assert message is None  # any object: the settings are compared on resume, not read
        return
    assert message is not None and message.startswith(name) and f"'{field}" in message, message


@suite(60)
@given(cut=st.floats(0.0, 0.9999), name=st.sampled_from(
    [*JSON_FILES, "labels/img1.json", "labels/img0.safetensors", "labels/img1.uncertainty.safetensors"]))
def test_a_file_truncated_anywhere_is_named(built: Built, cut: float, name: str) -> None:
    def damage(folder: Path) -> None:
        raw = (folder / name).read_bytes()
        (folder / name).write_bytes(raw[: int(cut * len(raw))])

    message = built.refused(damage)
    assert message is not None and message.startswith(name), message  # the truncated file, not another


@suite(30)
@given(raw=st.binary(max_size=300), name=st.sampled_from(JSON_FILES))
def test_a_json_file_replaced_by_random_bytes_is_named(built: Built, raw: bytes, name: str) -> None:
    message = built.refused(lambda folder: (folder / name).write_bytes(raw))
    assert message is not None and message.startswith(name), message


def _rewrite_arrays(folder: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    path = folder / "labels" / "img0.safetensors"
    tensors, meta = read_tensors(path, "sumseg-pseudo-label-image")
    change(tensors)
    save_tensors(path, tensors, meta)


TENSOR_DAMAGE: dict[str, tuple[Callable[[dict[str, torch.Tensor]], None], str]] = {
    "nan logits": (lambda t: t["logits"].__setitem__((0, 3, 3), float("nan")), "'logits' has 1 non-finite"),
    "inf box": (lambda t: t["boxes"].__setitem__((1, 2), float("inf")), "'boxes' has 1 non-finite"),
    "box outside": (lambda t: t["boxes"].__setitem__((1, 2), 1e12), "'boxes' has coordinates outside"),
    "negative point": (lambda t: t["points"].__setitem__((0, 0), -5.0), "'points' has coordinates outside"),
    "stability 2": (lambda t: t["stability_score"].__setitem__(0, 2.0), "'stability_score' has values outside"),
    "nan iou": (lambda t: t["predicted_iou"].__setitem__(0, float("nan")), "'predicted_iou' has 1 non-finite"),
    "float32 logits": (lambda t: t.__setitem__("logits", t["logits"].float()), "'logits' must be torch.float16"),
    "one mask short": (lambda t: t.__setitem__("boxes", t["boxes"][:1]), "'boxes' must have shape (2, 4)"),
}


@pytest.mark.parametrize("case", sorted(TENSOR_DAMAGE))
def test_stored_tensors_are_checked(built: Built, case: str) -> None:
    change, expected = TENSOR_DAMAGE[case]
    message = built.refused(lambda folder: _rewrite_arrays(folder, change))
    assert message is not None and message.startswith("labels/img0.safetensors: tensor ") and expected in message


def test_non_finite_outputs_are_not_written(tmp_path: Path) -> None:
    labels = _labels(0)
    labels.logits[1, 5, 5] = float("nan")
    entry = StoreEntry(0, "img0", "img0", "../img0.png", H, W, K, [0, 0, 2, 0, 0])
    with pytest.raises(DataError, match=r"img0.safetensors: refusing to write tensor 'logits' with 1 non-finite"):
        write_image(tmp_path, entry, labels)
    assert not list(tmp_path.iterdir())  # neither the arrays nor the JSON (the completion marker)
