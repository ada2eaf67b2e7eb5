"""Masks of every bit depth mean what the 8-bit file means, or raise naming what was found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sumseg.data.dataset import detect_format, read_dataset
from sumseg.data.images import load_label, mask_levels
from sumseg.errors import DataError
from tests.test_data_readers import H, W, box_mask, save_rgb

OBJECT = box_mask(3, 12, 4, 20)
BAND = box_mask(12, 14, 4, 20)  # GrabCut's 128 band, just below the object

Saver = Callable[[Path, np.ndarray], None]


def _one_bit(path: Path, obj: np.ndarray) -> None:
    Image.fromarray(obj.astype(bool)).save(path)  # mode "1": stored values 0/1


def _sixteen(scale: int) -> Saver:
    return lambda path, obj: Image.fromarray(obj.astype(np.uint16) * scale).save(path)


def _eight(scale: int) -> Saver:
    return lambda path, obj: Image.fromarray(obj.astype(np.uint8) * scale).save(path)


DEPTHS: dict[str, Saver] = {  # an object mask saved in each form a user might have
    "8-bit 0/255": _eight(255),
    "8-bit 0/1": _eight(1),
    "1-bit": _one_bit,
    "16-bit 0/1": _sixteen(1),
    "16-bit 0/65535": _sixteen(65535),
}


def _benchmark(root: Path, save: Saver, n: int = 2) -> Path:
    for i in range(n):
        save_rgb(root / "images" / f"{i}.jpg", seed=i)
        (root / "masks").mkdir(exist_ok=True)
        save(root / "masks" / f"{i}.png", OBJECT)
    return root


@pytest.mark.parametrize("depth", list(DEPTHS))
def test_berkeley_masks_of_every_depth(tmp_path: Path, depth: str) -> None:
    ds = read_dataset(_benchmark(tmp_path / "Berkeley", DEPTHS[depth]))
    assert ds.format == "ritm:Berkeley" and len(ds) == 2
    np.testing.assert_array_equal(ds.records[0].mask(0), OBJECT)


@pytest.mark.parametrize("depth", ["8-bit 0/255", "1-bit", "16-bit 0/65535"])
def test_berkeley_form_detected_at_every_depth(tmp_path: Path, depth: str) -> None:
    root = _benchmark(tmp_path / "copy", DEPTHS[depth])  # detected by its form, not its name
    assert detect_format(root) == "ritm"
    np.testing.assert_array_equal(read_dataset(root).records[1].mask(0), OBJECT)


def test_grabcut_sixteen_bit_levels(tmp_path: Path) -> None:
    root = tmp_path / "GrabCut"
    save_rgb(root / "data_GT" / "0.jpg")
    (root / "boundary_GT").mkdir()
    levels = OBJECT * 255 + BAND * 128
    Image.fromarray(levels.astype(np.uint16) * 257).save(root / "boundary_GT" / "0.png")
    rec = read_dataset(root).records[0]
    np.testing.assert_array_equal(rec.mask(0), OBJECT)
    np.testing.assert_array_equal(rec.ignore_mask(), BAND)


@pytest.mark.parametrize("depth", list(DEPTHS))
def test_mask_folder_binary_masks_of_every_depth(tmp_path: Path, depth: str) -> None:
    root = tmp_path / "f"
    save_rgb(root / "images" / "a.png")
    (root / "masks" / "a").mkdir(parents=True)
    DEPTHS[depth](root / "masks" / "a" / "1.png", OBJECT)
    np.testing.assert_array_equal(read_dataset(root).records[0].mask(0), OBJECT)


def test_sixteen_bit_values_that_are_no_eight_bit_level(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray((OBJECT * 1000).astype(np.uint16)).save(path)
    with pytest.raises(DataError, match=r"m\.png: 16-bit mask has values 1000; expected 0/1 or 8-bit levels"):
        mask_levels(load_label(path), path)
    root = _benchmark(tmp_path / "Berkeley", lambda p, obj: Image.fromarray((obj * 1000).astype(np.uint16)).save(p))
    with pytest.raises(DataError, match=r"masks/0\.png: 16-bit mask has values 1000"):
        read_dataset(root)


def test_float_and_other_modes_are_named(tmp_path: Path) -> None:
    Image.fromarray(OBJECT.astype(np.float32) * 0.5).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: mask image of mode 'F'"):
        load_label(tmp_path / "f.tif")


def test_instance_id_maps_keep_their_ids_at_every_depth(tmp_path: Path) -> None:
    root = tmp_path / "maps"
    label = np.zeros((H, W), np.uint16)
    label[:4], label[10:] = 300, 1000
    save_rgb(root / "images" / "a.png")
    (root / "masks").mkdir()
    Image.fromarray(label).save(root / "masks" / "a.png")
    save_rgb(root / "images" / "b.png")
    _one_bit(root / "masks" / "b.png", OBJECT)
    a, b = read_dataset(root).records
    assert [m.ann_id for m in a.masks] == [300, 1000] and [m.ann_id for m in b.masks] == [1]
    np.testing.assert_array_equal(b.mask(0), OBJECT)
