"""Image loading: EXIF orientation, mode conversions, corrupt files, label images, content keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sumseg.data.images import content_key, image_size, load_label, load_rgb
from sumseg.errors import DataError


def _gradient(h: int = 20, w: int = 30) -> np.ndarray:
    """(h, w, 3) uint8 with distinct rows and columns, so orientation mistakes show."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 8, y * 12, (x + y) * 4], axis=2).astype(np.uint8)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    rgb = _gradient()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored pixels must be rotated 90° clockwise for display
    Image.fromarray(rgb).save(tmp_path / "r.png", exif=exif)
    out = load_rgb(tmp_path / "r.png")
    assert out.shape == (30, 20, 3)
    np.testing.assert_array_equal(out, np.rot90(rgb, k=-1))
    assert image_size(tmp_path / "r.png") == (30, 20)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_modes_become_rgb_uint8(tmp_path: Path, mode: str) -> None:
    im = Image.fromarray(_gradient()).convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    im.save(path)
    out = load_rgb(path)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    if mode == "L":
        assert (out[:, :, 0] == np.asarray(im)).all() and (out[:, :, 0] == out[:, :, 2]).all()
    if mode == "RGBA":
        np.testing.assert_array_equal(out, _gradient())


def test_sixteen_bit_gray_is_scaled(tmp_path: Path) -> None:
    a = np.array([[0, 257 * 10, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    out = load_rgb(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out[0, :, 0].tolist() == [0, 10, 255]


def test_corrupt_and_truncated_images_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"junk\.jpg: unreadable or corrupt image"):
        load_rgb(tmp_path / "junk.jpg")
    Image.fromarray(_gradient(200, 200)).save(tmp_path / "t.jpg", quality=95)
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.jpg: unreadable or corrupt image"):
        load_rgb(tmp_path / "t.jpg")
    with pytest.raises(DataError, match=r"missing\.png: image file not found"):
        load_rgb(tmp_path / "missing.png")


def test_label_images(tmp_path: Path) -> None:
    pal = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * 759)
    pal.save(tmp_path / "p.png")
    assert load_label(tmp_path / "p.png").tolist() == [[0, 1], [2, 0]]  # indices, not colours
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert load_label(tmp_path / "c.png").tolist() == [[255, 0], [0, 0]]
    with pytest.raises(DataError, match=r"c\.png: colour mask with unequal channels"):
        load_label(tmp_path / "c.png", colour="equal")


def test_content_key_depends_on_pixels_and_shape() -> None:
    a = _gradient()
    assert content_key(a) == content_key(a.copy())
    b = a.copy()
    b[0, 0, 0] += 1
    assert content_key(a) != content_key(b)
    assert content_key(np.zeros((2, 6, 3), np.uint8)) != content_key(np.zeros((6, 2, 3), np.uint8))
