"""Checks shared by the readers; each raises DataError naming the file and the problem."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from sumseg.errors import DataError


def load_json(path: Path) -> Any:
    """Parse a JSON file; malformed JSON raises DataError with the line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
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


def require_size(obj: Any, path: Path, where: str) -> tuple[int, int]:
    """(height, width) of ``obj``: its ``height`` and ``width`` fields, which must be positive ints."""
    hw = require(obj, "height", int, path, where), require(obj, "width", int, path, where)
    for key, value in zip(("height", "width"), hw, strict=True):
        if value <= 0:
            raise DataError(f"{path}: {where} field '{key}' must be a positive int, got {value}")
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
    if not isinstance(task, int) or isinstance(task, bool) or task not in valid:
        raise DataError(
            f"{path}: {where} has unknown task id {task!r}; valid ids: {sorted(valid)} "
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
