"""Image sizes come from headers alone; a pixel limit stops oversized images before decoding."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sumseg.data.dataset import read_dataset
from sumseg.data.images import image_size, load_label, load_rgb
from sumseg.errors import ConfigError, DataError


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR (8-bit gray) with no pixel data behind it yet."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def test_size_is_read_without_decoding_the_pixels(tmp_path: Path) -> None:
    # the pixel data is cut short: only a full decode could notice, so a header-only size succeeds
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 3])
    assert image_size(tmp_path / "t.png") == (300, 400)
    with pytest.raises(DataError, match=r"t\.png: unreadable or corrupt image"):
        load_rgb(tmp_path / "t.png")


def test_exif_chunk_after_the_pixels_is_found_without_decoding(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :5] = 255
    Image.fromarray(rgb).save(tmp_path / "a.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: height and width swap
    data = (tmp_path / "a.png").read_bytes()
    iend = data.rindex(b"IEND") - 4
    (tmp_path / "a.png").write_bytes(data[:iend] + _chunk(b"eXIf", exif.tobytes()) + data[iend:])
    assert image_size(tmp_path / "a.png") == (30, 20)
    out = load_rgb(tmp_path / "a.png")
    assert out.shape == (30, 20, 3)
    np.testing.assert_array_equal(out, np.rot90(rgb, k=-1))


def test_pixel_limit_is_configurable_and_checked_before_decoding(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv("SUMSEG_MAX_IMAGE_PIXELS", "1000")
    problem = r"a\.png: image size 40x30 \(HxW\) is 1200 pixels, above the limit of 1000 pixels \(set SUMSEG_MAX"
    for read in (image_size, load_rgb, load_label):
        with pytest.raises(DataError, match=problem):
            read(tmp_path / "a.png")
    monkeypatch.setenv("SUMSEG_MAX_IMAGE_PIXELS", "1200")
    assert image_size(tmp_path / "a.png") == (40, 30)


def test_huge_header_gives_our_message_not_pillows(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_header(100_000, 100_000) + _chunk(b"IEND", b""))
    for read in (image_size, load_rgb):  # Pillow's check (at 2 x 89 M pixels) runs before ours
        with pytest.raises(DataError, match=r"bomb\.png: image has more than 178956970 pixels, above the limit of "):
            read(tmp_path / "bomb.png")
    (tmp_path / "b.png").write_bytes(_png_header(12_000, 12_000) + _chunk(b"IEND", b""))
    with pytest.raises(DataError, match=r"b\.png: image size 12000x12000 \(HxW\) is 144000000 pixels, above the li"):
        image_size(tmp_path / "b.png")
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "bomb.png").write_bytes((tmp_path / "bomb.png").read_bytes())
    ds = read_dataset(tmp_path / "u", skip_bad=True)
    assert len(ds) == 0 and "above the limit" in ds.skipped.items[0][1]


def test_only_the_image_formats_of_our_suffixes_are_opened(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "x.gif")
    (tmp_path / "x.png").write_bytes((tmp_path / "x.gif").read_bytes())
    with pytest.raises(DataError, match=r"x\.png: unreadable or corrupt image"):
        image_size(tmp_path / "x.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "j.png", format="JPEG")
    assert image_size(tmp_path / "j.png") == (4, 6)  # a JPEG under a .png name is still an image


def test_a_bad_limit_setting_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv("SUMSEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match=r"SUMSEG_MAX_IMAGE_PIXELS='lots': must be an int from 1 to 2147483647"):
        image_size(tmp_path / "a.png")
