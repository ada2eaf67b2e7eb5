"""Image and label-image files: RGB loading with EXIF orientation, sizes, content keys.

Every image sumseg reads goes through :func:`load_rgb`, so all readers, the embedding cache and
the evaluation see the same pixels: EXIF orientation applied, any mode converted to RGB uint8.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from sumseg.checks import PIXEL_LIMIT_ENV, check_pixels, max_image_pixels
from sumseg.errors import DataError, SumsegError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Pillow decoders tried on a file: those of IMAGE_SUFFIXES (JPEG includes MPO, DIB is a BMP),
# whatever its name. No other decoder (EPS runs Ghostscript, many are rarely exercised) sees our input.
_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "WEBP")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # these rotate by 90°: height and width swap
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LABEL_DTYPES = {"1": bool, "L": np.uint8, "P": np.uint8, "I;16": np.uint16, "I;16L": np.uint16,
                 "I;16B": np.uint16, "I": np.int32}  # fmt: skip


def is_image_file(path: Path) -> bool:
    """True for a regular file whose suffix (any case) is a known image suffix."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@contextmanager
def _opened(path: Path, what: str) -> Iterator[Image.Image]:
    """``path`` opened by Pillow (header only) after its pixel count passed :func:`check_pixels`.

    Whatever Pillow raises while the block reads the file (OSError, SyntaxError, struct.error,
    ...: a corrupt file can make a decoder fail in any way) becomes a DataError naming the file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF, palette transparency, big images
            with Image.open(path, formats=_FORMATS) as im:
                check_pixels(im.height, im.width, path, "image")
                yield im
    except SumsegError:  # ours (the pixel limit, a bad limit setting): already say what is wrong
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: {what} file not found") from e
    except Image.DecompressionBombError as e:  # Pillow's own check ran first, at twice MAX_IMAGE_PIXELS
        raise DataError(_bomb_message(path)) from e
    except Exception as e:  # noqa: BLE001 - see the docstring: only Pillow's reading runs in here
        raise DataError(f"{path}: unreadable or corrupt {what} ({type(e).__name__}: {e})") from e


def _bomb_message(path: Path) -> str:
    pillow, limit = 2 * (Image.MAX_IMAGE_PIXELS or 0), max_image_pixels()
    if pillow > limit:
        return (
            f"{path}: image has more than {pillow} pixels, above the limit of {limit} pixels "
            f"(set {PIXEL_LIMIT_ENV} to raise it)"
        )
    return f"{path}: image has more than {pillow} pixels, Pillow's limit (raise PIL.Image.MAX_IMAGE_PIXELS too)"


def _png_exif(path: Path) -> bytes:
    """A PNG's eXIf chunk (with Pillow's ``Exif\\0\\0`` prefix) wherever it lies, else b"".

    Pillow finds an eXIf chunk placed after the pixel data only by decoding them; this walks
    the chunk headers instead, seeking over the data.
    """
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return b""
        while len(head := f.read(8)) == 8:
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"eXIf":
                data = f.read(length)
                return b"Exif\x00\x00" + data if len(data) == length else b""
            if kind == b"IEND":
                break
            f.seek(length + 4, 1)  # data + CRC
    return b""


def _orientation(im: Image.Image, path: Path) -> int:
    """EXIF orientation (1–8) of an opened image, from its header (PNG: its eXIf chunk, anywhere).

    Caches Pillow's EXIF on ``im``, so a later ``ImageOps.exif_transpose(im)`` uses the same value
    and the size :func:`image_size` reports is the size :func:`load_rgb` returns.
    """
    if im.format == "PNG" and "exif" not in im.info:
        im.info["exif"] = _png_exif(path)  # Pillow's getexif() would otherwise decode the whole image
    return int(im.getexif().get(_EXIF_ORIENTATION, 1))


def _to_rgb(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 from any PIL mode; 16/32-bit integer gray is scaled from the 16-bit range."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode == "F":
        a = np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, EXIF orientation applied.

    Gray, gray+alpha, palette, RGBA (alpha dropped), CMYK and 16-bit files are converted.
    Raises :class:`DataError` naming the file when it is missing, unreadable, truncated, or has
    more pixels than :func:`~sumseg.checks.max_image_pixels` (checked before decoding).
    """
    path = Path(path)
    with _opened(path, "image") as im:
        _orientation(im, path)
        im.load()
        return np.ascontiguousarray(_to_rgb(ImageOps.exif_transpose(im)))


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the file's headers only (nothing decoded).

    Raises DataError for an unreadable header or more pixels than the limit.
    """
    path = Path(path)
    with _opened(path, "image") as im:
        w, h = im.size
        orientation = _orientation(im, path)
    return (w, h) if orientation in _TRANSPOSED_ORIENTATIONS else (h, w)


def load_label(path: str | Path, colour: Literal["max", "equal"] = "max") -> np.ndarray:
    """Decode a mask / label image to (H, W) stored values, no colour conversion (no EXIF transpose).

    1-bit files give bool; 8-bit gray uint8 (2/4-bit gray as Pillow scales them to 8 bits);
    palette files their palette *indices* (uint8); 16-bit gray uint16; 32-bit gray int32.
    Colour files (alpha dropped) give the channel maximum with ``colour="max"`` (RITM's
    convention: an RGB mask pixel counts by its brightest channel); with ``colour="equal"``
    their channels must be equal (gray stored as RGB), else DataError. Other modes (float,
    CMYK, ...) raise DataError naming the mode. :func:`mask_levels` puts any of these on the
    8-bit scale.
    """
    path = Path(path)
    with _opened(path, "mask image") as im:
        if im.mode not in _LABEL_DTYPES and im.mode not in ("RGB", "RGBA", "LA", "PA"):
            raise DataError(
                f"{path}: mask image of mode {im.mode!r}; masks must be 1/8/16-bit gray, palette or RGB(A)"
            )
        im.load()
        if im.mode in _LABEL_DTYPES:
            return np.asarray(im).astype(_LABEL_DTYPES[im.mode])
        a = np.asarray(im)
    if a.shape[2] <= 2:  # LA / PA: the first channel carries the values
        return a[:, :, 0]
    rgb = a[:, :, :3]
    if colour == "equal" and not (
        (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all()
    ):
        raise DataError(f"{path}: colour mask with unequal channels; expected a gray or palette image")
    return rgb.max(axis=2)


def mask_levels(label: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) uint8: a mask from :func:`load_label` on the 8-bit scale, whatever its bit depth.

    1-bit: 0/1 → 0/255 (white is 255, as in the 8-bit file). 8-bit and palette: as stored.
    16/32-bit: 0 and 1 stay 0 and 1 (a 0/1 mask stored wide), multiples of 257 are 8-bit levels
    scaled to 16 bits (0, 32896 = 128·257, 65535) and are divided by 257; any other value raises
    DataError naming the values found.
    """
    if label.dtype == bool:
        return label.astype(np.uint8) * 255
    if label.dtype == np.uint8:
        return label
    values = np.unique(label)
    bad = values[(values > 1) & ((values % 257 != 0) | (values > 65535)) | (values < 0)]
    if bad.size:
        found = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if bad.size > 8 else "")
        raise DataError(
            f"{path}: {label.dtype.itemsize * 8}-bit mask has values {found}; expected 0/1 or 8-bit levels "
            "scaled to 16 bits (multiples of 257: 0, 32896, 65535 for 0, 128, 255); save it as 8-bit"
        )
    return np.where(label > 1, label // 257, label).astype(np.uint8)


def content_key(rgb: np.ndarray) -> str:
    """Hex key of a decoded image: blake2b-160 over its shape, dtype and pixel bytes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{rgb.shape}|{rgb.dtype}".encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()
