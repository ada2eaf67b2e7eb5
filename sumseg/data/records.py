"""The record every reader returns: one image, its instance masks (lazy RLE), their task ids.

Memory stays small: a record holds paths and compressed RLE bytes; pixels are decoded on demand
(:meth:`ImageRecord.load_image`, :meth:`ImageRecord.mask`). Task ids: 0 general, 1 salient object,
2 entity, 3 part (:data:`TASK_NAMES`); a dataset may declare more.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sumseg.checks import check_image_size
from sumseg.data import rle as rle_utils
from sumseg.data.images import load_rgb
from sumseg.data.rle import Rle
from sumseg.errors import DataError


@dataclass(frozen=True)
class MaskRecord:
    """One instance mask: compressed RLE of size (H, W), task id, and its id in the source file."""

    rle: Rle
    task: int
    ann_id: int | str

    @property
    def area(self) -> int:
        """Foreground pixel count."""
        return rle_utils.area(self.rle)

    def decode(self) -> np.ndarray:
        """(H, W) bool mask."""
        return rle_utils.decode(self.rle)


@dataclass
class ImageRecord:
    """One image with its instance masks.

    ``height``/``width`` are those of the decoded image (EXIF orientation applied); every mask
    and the ignore map have that size. ``ignore`` marks pixels excluded from IoU and from click
    sampling (GrabCut's unlabelled band, COCO crowd regions). ``source`` is the file the masks
    came from (annotation JSON, mask PNG), for error messages.
    """

    image_id: str
    image_path: Path
    height: int
    width: int
    masks: list[MaskRecord] = field(default_factory=list)
    ignore: Rle | None = None
    source: Path | None = None
    dataset: str = ""
    split: str = ""

    def load_image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB; raises DataError when unreadable or of another size than recorded."""
        rgb = load_rgb(self.image_path)
        source = str(self.source or "its record")
        check_image_size(self.image_path, rgb.shape[:2], (self.height, self.width), source)
        return rgb

    def mask(self, i: int) -> np.ndarray:
        """(H, W) bool mask of instance ``i``."""
        return self.masks[i].decode()

    def mask_stack(self) -> np.ndarray:
        """(N, H, W) bool masks of every instance (N may be 0)."""
        if not self.masks:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return np.stack([m.decode() for m in self.masks])

    def ignore_mask(self) -> np.ndarray | None:
        """(H, W) bool ignore map, or None when the record has none."""
        return None if self.ignore is None else rle_utils.decode(self.ignore)

    @property
    def tasks(self) -> list[int]:
        """Task id of every mask, in mask order."""
        return [m.task for m in self.masks]


@dataclass
class SkipReport:
    """Items a reader skipped under ``skip_bad=True``: (file, reason) pairs, in reading order."""

    items: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, path: Path, reason: str) -> None:
        self.items.append((Path(path), reason))

    @contextmanager
    def guard(self, path: Path, skip_bad: bool) -> Iterator[None]:
        """Run the block; a DataError it raises propagates, or with ``skip_bad`` is listed under ``path``.

        The rest of the block is skipped either way, so a reader puts the item's whole handling
        (checks and appending the result) inside ``with report.guard(path, skip_bad):``.
        """
        try:
            yield
        except DataError as e:
            if not skip_bad:
                raise
            self.add(path, str(e))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[Path, str]]:
        return iter(self.items)

    def extend(self, other: SkipReport) -> None:
        self.items.extend(other.items)


@dataclass
class Dataset:
    """What a reader returns: the records, what was skipped, and the detected format."""

    records: list[ImageRecord]
    skipped: SkipReport
    format: str
    root: Path

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_masks(self) -> int:
        return sum(len(r.masks) for r in self.records)
