"""Where a step's masks come from, chosen from (seed, step, rank) alone — so a resumed run draws
exactly what an uninterrupted one would, with no iterator state to save.

Image order: the images of a source are visited epoch by epoch in a permutation drawn from
(seed, epoch); global position ``p = (step · world + rank) · per_step + j`` picks image
``perm[p mod n]`` of epoch ``p div n``. Ranks therefore see disjoint images within a step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Protocol

import numpy as np
import torch

from sumseg.data.records import Dataset, ImageRecord
from sumseg.errors import DataError
from sumseg.train.batch import MaskSample


def step_rng(seed: int, step: int, rank: int, stream: int) -> np.random.Generator:
    """The generator of one purpose (``stream``) of one step on one rank."""
    return np.random.default_rng([seed, step, rank, stream])


class MaskSource(Protocol):
    """A set of images that yields :class:`MaskSample` s."""

    def __len__(self) -> int: ...

    def sample(self, index: int, rng: np.random.Generator) -> MaskSample: ...


class LabelledSource:
    """Human-labelled images: up to ``max_masks`` of each image's masks per draw, uniformly, c ≡ 1.

    ``task``: replaces every mask's task id (None keeps the dataset's ids).
    """

    def __init__(self, dataset: Dataset | Sequence[ImageRecord], max_masks: int, task: int | None = None) -> None:
        records = dataset.records if isinstance(dataset, Dataset) else list(dataset)
        self.records = [r for r in records if r.masks]
        if not self.records:
            raise DataError("no labelled masks to train on (every image has 0 masks)")
        self.max_masks = max_masks
        self.task = task

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int, rng: np.random.Generator) -> MaskSample:
        rec = self.records[index]
        k = min(self.max_masks, len(rec.masks))
        picked = np.sort(rng.choice(len(rec.masks), size=k, replace=False))
        masks = np.stack([rec.mask(int(i)) for i in picked])
        tasks = np.array([rec.masks[int(i)].task if self.task is None else self.task for i in picked])
        return MaskSample(rec.load_image(), masks, tasks.astype(np.int64), rec.ignore_mask())


def image_at(seed: int, position: int, n: int) -> int:
    """The image (index into a source of ``n``) at global ``position`` of the seed's epoch-by-epoch order."""
    epoch, pos = divmod(position, n)
    return int(np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)[pos])


def image_indices(seed: int, step: int, rank: int, world: int, per_step: int, n: int) -> list[int]:
    """Indices (into a source of ``n`` images) of the ``per_step`` images of this step and rank."""
    return [image_at(seed, (step * world + rank) * per_step + j, n) for j in range(per_step)]


def draw_samples(source: MaskSource, seed: int, step: int, rank: int, world: int, per_step: int,
                 stream: int = 0) -> list[MaskSample]:
    """The samples of one step and rank from ``source`` (deterministic in its arguments)."""
    rng = step_rng(seed, step, rank, stream)
    return [source.sample(i, rng) for i in image_indices(seed + stream, step, rank, world, per_step, len(source))]


def slot_source(position: int, share: Fraction) -> tuple[int, int]:
    """Source (0 labelled, 1 pseudo-labelled) of global image slot ``position``, and the slot's
    position in that source's own order.

    Slot p is labelled when ⌊(p+1)·share⌋ > ⌊p·share⌋, so every run of consecutive slots holds
    labelled images in proportion ``share`` to within one (1:1 alternates pseudo, labelled, ...).
    """
    before = math.floor(position * share)  # labelled slots in [0, position)
    if math.floor((position + 1) * share) > before:
        return 0, before
    return 1, position - before


def draw_mixed(sources: Sequence[MaskSource | None], share: Fraction, seed: int, step: int, rank: int,
               world: int, per_step: int) -> list[MaskSample]:
    """The samples of one step and rank from a labelled and a pseudo-labelled source mixed at ``share``
    (the labelled fraction of images). Source ``s`` draws with stream ``s``: with ``share == 1`` this is
    exactly :func:`draw_samples` of the labelled source."""
    rngs = [step_rng(seed, step, rank, stream) for stream in (0, 1)]
    out = []
    for j in range(per_step):
        which, pos = slot_source((step * world + rank) * per_step + j, share)
        source = sources[which]
        assert source is not None, "share gives slots to a missing source"
        out.append(source.sample(image_at(seed + which, pos, len(source)), rngs[which]))
    return out


def step_generator(seed: int, step: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The prompt sampler's generator of one step and rank (on the device the masks live on)."""
    return torch.Generator(device=device).manual_seed(int(step_rng(seed, step, rank, 99).integers(2**62)))
