"""Checks shared by the readers and the checkpoint loader; each raises an error naming the file.

Every number read from a file passes one of these before a library or an allocation sees it:
ints are ints (a JSON ``true`` or ``"0"`` is not), ids fit 64 bits, task ids are below
:data:`~sumseg.tasks.TASK_ID_LIMIT`, flags are 0/1, image sizes are bounded by
:func:`max_image_pixels`. Coordinates and run lengths are checked in :mod:`sumseg.data.rle`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np

from sumseg.errors import ConfigError, DataError, SumsegError
from sumseg.tasks import TASK_ID_LIMIT

PIXEL_LIMIT_ENV = "SUMSEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000  # 10 000 x 10 000; decoded RGB ~300 MB
_PIXEL_CAP = 2**31 - 1  # pycocotools counts runs in 32-bit unsigned ints
_INT64 = 2**63


def max_image_pixels() -> int:
    """The most pixels (H·W) an image, mask or declared size may have: ``$SUMSEG_MAX_IMAGE_PIXELS``
    or 100 000 000. Checked from headers and annotation fields, before anything is decoded."""
    raw = os.environ.get(PIXEL_LIMIT_ENV)
    if raw is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 0 < limit <= _PIXEL_CAP:
        raise ConfigError(f"{PIXEL_LIMIT_ENV}={raw!r}: must be an int from 1 to {_PIXEL_CAP}")
    return limit


def check_pixels(height: int, width: int, path: Path, where: str) -> None:
    """An (H, W) of ``where`` in ``path`` must not exceed :func:`max_image_pixels`."""
    limit = max_image_pixels()
    if height * width > limit:
        raise DataError(
            f"{path}: {where} size {height}x{width} (HxW) is {height * width} pixels, above the limit of "
            f"{limit} pixels (set {PIXEL_LIMIT_ENV} to raise it)"
        )


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """True for an int or float that is not a bool (may be non-finite)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def shown(value: Any, width: int = 40) -> str:
    """``repr(value)`` cut to ``width`` characters, for messages about hostile values."""
    r = repr(value)
    return r if len(r) <= width else r[: width - 3] + "..."


def check_int(
    value: Any,
    path: Path,
    what: str,
    lo: int | None = None,
    hi: int | None = None,
    error: type[SumsegError] = DataError,
) -> int:
    """``value``, which must be an int (not a bool) with ``lo <= value <= hi``."""
    if is_int(value) and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    bounds = f" in [{lo}, {hi}]" if lo is not None and hi is not None else (f" >= {lo}" if lo is not None else "")
    raise error(f"{path}: {what} must be an int{bounds}, got {shown(value)}")


def check_flag(value: Any, path: Path, what: str) -> bool:
    """A 0/1 flag (JSON ``false``/``true`` too); a string ``"0"`` or a 2 is an error, not a truth value."""
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise DataError(f"{path}: {what} must be 0 or 1, got {shown(value)}")


def check_task_ids(ids: Any, path: Path, what: str, error: type[SumsegError] = DataError) -> list[int]:
    """A list of distinct task ids, each an int in [0, TASK_ID_LIMIT)."""
    if not (
        isinstance(ids, list)
        and all(is_int(t) and 0 <= t < TASK_ID_LIMIT for t in ids)
        and len(set(ids)) == len(ids)
    ):
        raise error(f"{path}: {what} must be distinct ints from 0 to {TASK_ID_LIMIT - 1}, got {shown(ids)}")
    return list(ids)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(path: Path) -> Any:
    """Parse a JSON file; malformed JSON raises DataError with the line and column.

    Strict JSON: ``NaN`` / ``Infinity`` are refused, as are nesting too deep to parse and ints of
    more than 4300 digits (Python's limits), each as a DataError naming the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_constant=_no_constant)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    except RecursionError as e:
        raise DataError(f"{path}: JSON nested too deeply to read") from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: unreadable JSON file ({e})") from e


def require(obj: Any, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    """``obj[key]``, which must exist and be of ``kind``; ``where`` locates obj in the file."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where} must be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{path}: {where} is missing the field '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path}: {where} field '{key}' must be {names}, got {type(value).__name__}")
    return value


def require_id(obj: Any, key: str, path: Path, where: str) -> int | str:
    """``obj[key]``: an id, a str or an int that fits 64 bits."""
    value = require(obj, key, (int, str), path, where)
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise DataError(f"{path}: {where} field '{key}' must be a str or fit a 64-bit int, got {shown(value)}")
    return value


def require_size(obj: Any, path: Path, where: str) -> tuple[int, int]:
    """(height, width) of ``obj``: its ``height`` and ``width`` fields, positive ints whose product is
    at most :func:`max_image_pixels`."""
    hw = require(obj, "height", int, path, where), require(obj, "width", int, path, where)
    for key, value in zip(("height", "width"), hw, strict=True):
        if value <= 0:
            raise DataError(f"{path}: {where} field '{key}' must be a positive int, got {shown(value)}")
    check_pixels(hw[0], hw[1], path, where)
    return hw


def check_image_size(
    image_path: Path, real_hw: tuple[int, ...], declared_hw: tuple[int, int], source: str
) -> None:
    """An image's real (H, W) must be the (H, W) that ``source`` (a file, with a location) declares."""
    if tuple(real_hw) != tuple(declared_hw):
        raise DataError(
            f"{image_path}: image is {real_hw[0]}x{real_hw[1]} (HxW) but {source} says "
            f"{declared_hw[0]}x{declared_hw[1]}"
        )


def check_task(task: Any, valid: Collection[int], path: Path, where: str) -> int:
    """A task id that is one of ``valid``."""
    if not is_int(task) or task not in valid:
        raise DataError(
            f"{path}: {where} has unknown task id {shown(task)}; valid ids: {sorted(valid)} "
            "(declare more in the dataset's 'tasks' list)"
        )
    return task


def check_same_size(
    mask_hw: tuple[int, int], image_hw: tuple[int, int], mask_path: Path, image_path: Path
) -> None:
    """A mask must have its image's (H, W)."""
    if tuple(mask_hw) != tuple(image_hw):
        raise DataError(
            f"{mask_path}: mask size {mask_hw[0]}x{mask_hw[1]} (HxW) differs from the image size "
            f"{image_hw[0]}x{image_hw[1]} of {image_path}"
        )


def check_values(label: np.ndarray, allowed: set[int], path: Path, what: str) -> None:
    """Every pixel value of a (H, W) label image must be in ``allowed``."""
    values = np.unique(label)
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
        raise DataError(f"{path}: {what} has values {shown}; allowed values are {sorted(allowed)}")


def check_not_empty(mask: np.ndarray | int, path: Path, what: str) -> None:
    """A mask (or its area) must have at least one foreground pixel."""
    n = mask if isinstance(mask, int) else int(np.count_nonzero(mask))
    if n == 0:
        raise DataError(f"{path}: {what} is empty (no foreground pixels)")


# --- schemas of sumseg's own files (a store's meta.json, indexes, per-image JSONs, uncertainty.json) ---------

Spec = Callable[[Any, str], Any]
"""A schema node: ``spec(value, where)`` returns ``value`` or raises ValueError saying what it must be."""


class _Bad(ValueError):
    """A value that does not fit its schema node: ``where`` (e.g. ``images[3].height``) and what it must be."""

    def __init__(self, where: str, must: str, value: Any) -> None:
        super().__init__(f"field '{where}' must be {must}, got {shown(value)}" if where else
                         f"must be {must}, got {shown(value)}")


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}" if lo != hi else f" equal to {lo}"
    return f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else ""


def integer(lo: int | None = None, hi: int | None = None) -> Spec:
    """An int (not a bool) in [lo, hi]."""
    def check(v: Any, where: str) -> Any:
        if is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi):
            return v
        raise _Bad(where, "an int" + _bounds(lo, hi), v)
    return check


def real(lo: float | None = None, hi: float | None = None) -> Spec:
    """A finite int or float (not a bool) in [lo, hi] (an int too big for a float is compared exactly)."""
    def check(v: Any, where: str) -> Any:
        if is_real(v) and (is_int(v) or math.isfinite(v)) and (lo is None or v >= lo) and (hi is None or v <= hi):
            return v
        raise _Bad(where, "a finite number" + _bounds(lo, hi), v)
    return check


def text(*choices: str) -> Spec:
    """A str (one of ``choices`` when given)."""
    def check(v: Any, where: str) -> Any:
        if isinstance(v, str) and (not choices or v in choices):
            return v
        raise _Bad(where, "a str" if not choices else " or ".join(map(repr, choices)), v)
    return check


def flag() -> Spec:
    """A JSON ``true`` / ``false``."""
    def check(v: Any, where: str) -> Any:
        if isinstance(v, bool):
            return v
        raise _Bad(where, "true or false", v)
    return check


def optional(spec: Spec) -> Spec:
    """None (JSON ``null``) or ``spec``."""
    return lambda v, where: None if v is None else spec(v, where)


def list_of(item: Spec, length: int | None = None, max_len: int | None = None) -> Spec:
    """A list of ``item`` (of exactly ``length`` / at most ``max_len`` items)."""
    def check(v: Any, where: str) -> Any:
        if not isinstance(v, list) or (length is not None and len(v) != length) or (
                max_len is not None and len(v) > max_len):
            n = f" of {length} items" if length is not None else \
                f" of at most {max_len} items" if max_len is not None else ""
            raise _Bad(where, f"a list{n}", v)
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")
        return v
    return check


def obj(fields: dict[str, Spec]) -> Spec:
    """A JSON object holding every key of ``fields`` (more keys are allowed and not read)."""
    def check(v: Any, where: str) -> Any:
        if not isinstance(v, dict):
            raise _Bad(where, "a JSON object", v)
        for key, spec in fields.items():
            at = f"{where}.{key}" if where else key
            if key not in v:
                raise ValueError(f"field '{at}' is missing")
            spec(v[key], at)
        return v
    return check


def check_schema(value: Any, spec: Spec, path: Path, what: str = "", error: type[SumsegError] = DataError) -> Any:
    """``value`` (parsed from ``path``) checked against ``spec``; else ``error`` naming the file and the field."""
    try:
        return spec(value, what)
    except ValueError as e:
        raise error(f"{path}: {e}") from None
