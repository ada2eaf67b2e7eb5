"""The image → input-frame geometry of a model: how an (H, W) image becomes its S×S input, and where an
image pixel lands in that input.

Each model gives its frame (``PromptableModel.frame``); everything that maps image pixels into the input
frame (evaluation clicks and boxes, the predictor) asks it, never a fixed transform:

- :class:`LongestSideFrame` (SAM 1, HQ-SAM): ``segment_anything``'s ``ResizeLongestSide`` — the long side
  resized to S, the aspect ratio kept, the short side padded by the model (the input holds the image in its
  top-left (h, w));
- :class:`SquashFrame` (SAM 2.1): the image resized to S×S without keeping its aspect ratio (Meta's
  ``SAM2Transforms``, ``Sam2Processor``): x scales by S/W and y by S/H. The model's ``preprocess`` does the
  resize itself, so :meth:`SquashFrame.apply_image` leaves the image as it is.

The two agree on square images only.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Protocol, runtime_checkable

import numpy as np
from segment_anything.utils.transforms import ResizeLongestSide

__all__ = ["InputFrame", "LongestSideFrame", "SquashFrame"]


@runtime_checkable
class InputFrame(Protocol):
    """Image pixels → a model's S×S input frame (module docstring). Sizes are (H, W)."""

    target_length: int

    def input_size(self, original_size: tuple[int, ...]) -> tuple[int, int]:
        """(h, w) of the image inside the S×S input (no padding)."""
        ...

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """An (H, W, 3) uint8 image → what the model's ``preprocess`` takes."""
        ...

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(..., 2) (x, y) image pixels → the input frame (float64)."""
        ...

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(N, 4) (x0, y0, x1, y1) image pixels → the input frame (float64)."""
        ...

    def takes(self, shape: tuple[int, ...]) -> bool:
        """Whether an (h, w) image is a valid input to the model's ``preprocess``."""
        ...

    def describe(self) -> str:
        """What :meth:`takes` accepts, for an error message."""
        ...


class LongestSideFrame(ResizeLongestSide):
    """SAM 1's frame: ``ResizeLongestSide(S)`` itself (bit for bit), plus :meth:`input_size` and :meth:`takes`."""

    def input_size(self, original_size: tuple[int, ...]) -> tuple[int, int]:
        return self.get_preprocess_shape(int(original_size[0]), int(original_size[1]), self.target_length)

    def takes(self, shape: tuple[int, ...]) -> bool:
        return max(shape) == self.target_length

    def describe(self) -> str:
        return f"long side {self.target_length}"


class SquashFrame:
    """SAM 2's frame: the whole image resized to S×S (x by S/W, y by S/H); ``apply_image`` is the identity
    (the model's ``preprocess`` resizes)."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    def input_size(self, original_size: tuple[int, ...]) -> tuple[int, int]:
        return self.target_length, self.target_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return np.array(image)  # a writable contiguous copy (a BGR flip is a view)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        h, w = int(original_size[0]), int(original_size[1])
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * (self.target_length / w)
        coords[..., 1] = coords[..., 1] * (self.target_length / h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def takes(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 2 and min(shape) > 0

    def describe(self) -> str:
        return "any size (resized to the input by the model)"
