"""Image and label-image files: RGB loading with EXIF orientation, sizes, content keys.

Every image sumseg reads goes through :func:`load_rgb`, so all readers, the embedding cache and
the evaluation see the same pixels: EXIF orientation applied, any mode converted to RGB uint8.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from sumseg.errors import DataError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # these rotate by 90°: height and width swap
_OPEN_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


def is_image_file(path: Path) -> bool:
    """True for a regular file whose suffix (any case) is a known image suffix."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


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
    Raises :class:`DataError` naming the file when it is missing, unreadable or truncated.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF / palette transparency
            with Image.open(path) as im:
                im.load()
                return np.ascontiguousarray(_to_rgb(ImageOps.exif_transpose(im)))
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except _OPEN_ERRORS as e:
        raise DataError(f"{path}: unreadable or corrupt image ({e})") from e


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the file header only (no full decode)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except _OPEN_ERRORS as e:
        raise DataError(f"{path}: unreadable or corrupt image ({e})") from e
    return (w, h) if orientation in _TRANSPOSED_ORIENTATIONS else (h, w)


def load_label(path: str | Path, colour: Literal["max", "equal"] = "max") -> np.ndarray:
    """Decode a mask / label image to (H, W) without colour conversion (no EXIF transpose).

    Gray files give their values (uint8, or uint16/int32 for 16-bit), palette files their
    palette *indices*. Colour files (alpha dropped) give the channel maximum with
    ``colour="max"`` (RITM's convention: an RGB mask pixel counts by its brightest channel);
    with ``colour="equal"`` their channels must be equal (gray stored as RGB), else DataError.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("1", "L", "P"):
                return np.asarray(im).astype(np.uint8)
            if im.mode not in ("RGB", "RGBA", "LA", "PA"):
                return np.asarray(im)
            a = np.asarray(im)
    except FileNotFoundError as e:
        raise DataError(f"{path}: mask file not found") from e
    except _OPEN_ERRORS as e:
        raise DataError(f"{path}: unreadable or corrupt mask image ({e})") from e
    if a.shape[2] <= 2:  # LA / PA: the first channel carries the values
        return a[:, :, 0]
    rgb = a[:, :, :3]
    if colour == "equal" and not (
        (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all()
    ):
        raise DataError(f"{path}: colour mask with unequal channels; expected a gray or palette image")
    return rgb.max(axis=2)


def content_key(rgb: np.ndarray) -> str:
    """Hex key of a decoded image: blake2b-160 over its shape, dtype and pixel bytes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{rgb.shape}|{rgb.dtype}".encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()
