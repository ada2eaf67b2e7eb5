"""The trainer's image sources: human-labelled sets and the pseudo-label store.

A source yields :class:`~sumseg.train.batch.MaskSample` s (one image, up to K masks) for
:func:`~sumseg.train.schedule.draw_mixed`. Human labels have c ≡ 1 (no confidence map). A
pseudo-labelled image gives task 0 (general) masks and, by method:

- ``uncertainty=True`` (sum): c = 1 − U from the store's U maps (the low-res (L, L) frame
  :class:`~sumseg.train.batch.MaskBatch` uses: L = S/4 over the padded S×S input); with
  ``max_mask_u``, pseudo-labels whose mean U over their own pixels (``s > 0``, low-res frame)
  exceeds it are never drawn — a whole wrong mask, which the pixel weights cannot undo, shows as a
  mask with high mean U;
- ``uncertainty=False`` (self-training, refined labels): c ≡ 1;
- with a ``refiner`` (refined labels): the targets are the refiner's masks σ(r) > 0.5, r computed
  on the fly by :func:`sumseg.pipeline.uncertainty.refine` (the very computation ``sumseg uncertainty``
  compares s against), upsampled to the image as SAM's ``postprocess_masks`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from sumseg.config import LabelledSet
from sumseg.data.dataset import read_dataset
from sumseg.data.records import ImageRecord
from sumseg.errors import ConfigError, DataError
from sumseg.models.backbones import Backbone
from sumseg.models.interface import frame_kind, lowres_to_image_in
from sumseg.pipeline.pseudo_label_run import image_features
from sumseg.pipeline.store import ImageLabels, PseudoLabelStore
from sumseg.pipeline.uncertainty import refine
from sumseg.tasks import GENERAL
from sumseg.train.batch import MaskSample


def labelled_records(sets: Sequence[LabelledSet], known_tasks: Sequence[int]) -> list[ImageRecord]:
    """The records of every labelled set (``set.task`` replacing the file's task ids when given).

    Raises DataError for a set without masks and ConfigError for a task id the model does not know,
    naming the set (``data.labelled[i]``) and its path.
    """
    out: list[ImageRecord] = []
    for i, s in enumerate(sets):
        ds = read_dataset(s.path)
        records = [r for r in ds.records if r.masks]
        if not records:
            raise DataError(f"{s.path}: no masks to train on (data.labelled[{i}], read as {ds.format})")
        if s.task is not None:
            records = [replace(r, masks=[replace(m, task=s.task) for m in r.masks]) for r in records]
        unknown = sorted({m.task for r in records for m in r.masks} - set(known_tasks))
        if unknown:
            key = f"data.labelled[{i}].task" if s.task is not None else f"data.labelled[{i}] ({s.path})"
            raise ConfigError(f"{key}: task id(s) {unknown} unknown to the model, which knows {list(known_tasks)} "
                              "(a plain SAM checkpoint takes model.tasks; a sumseg checkpoint keeps its own ids)")
        out.extend(records)
    return out


def _subset(labels: ImageLabels, picked: np.ndarray) -> ImageLabels:
    sel = list(picked)
    return ImageLabels([labels.rles[j] for j in sel], labels.logits[sel], labels.boxes[sel], labels.points[sel],
                       labels.predicted_iou[sel], labels.stability[sel])


class PseudoLabelSource:
    """The images of a pseudo-label store that hold at least one pseudo-label (see the module docstring).

    Args:
        store: an opened, finished store; its model input size must be the trained model's.
        max_masks: K, the most masks drawn per image.
        image_size: S of the trained model.
        uncertainty: c = 1 − U from the store's U maps (every image needs its U maps); False: c ≡ 1.
        refiner: when given, targets are the refiner's masks instead of the pseudo-labels.
        max_mask_u: with ``uncertainty``, leave out pseudo-labels of a higher mean U (None: keep all).
    """

    def __init__(self, store: PseudoLabelStore, max_masks: int, image_size: int, uncertainty: bool,
                 refiner: Backbone | None = None, max_mask_u: float | None = None) -> None:
        if store.image_size != image_size:
            raise ConfigError(f"{store.root / 'meta.json'}: pseudo-labels made for {store.image_size}-px model input "
                              f"({store.model}); the trained model takes {image_size} px")
        if refiner is not None and refiner.image_size != image_size:
            raise ConfigError(f"data.refiner: a {refiner.image_size}-px model; the store is {image_size} px")
        if refiner is not None and frame_kind(refiner) != store.frame:
            raise ConfigError(f"data.refiner: low-res frame {frame_kind(refiner)}; the store {store.root} is "
                              f"{store.frame} ({store.model}): a refiner of the family that made the pseudo-labels")
        self.store, self.max_masks, self.uncertainty, self.refiner = store, max_masks, uncertainty, refiner
        self.index = [i for i, e in enumerate(store.images) if e.num_masks > 0]
        if not self.index:
            raise DataError(f"{store.root}: the pseudo-label store holds no pseudo-labels to train on")
        self.eligible: dict[int, np.ndarray] = {}  # store image → the pseudo-labels it may draw (all if absent)
        self.filtered: tuple[int, int] | None = None  # (kept, total) pseudo-labels under max_mask_u
        if uncertainty:
            missing = [store.uncertainty_path(i) for i in self.index if not store.uncertainty_path(i).is_file()]
            if missing:
                raise DataError(f"{missing[0]}: U map missing ({len(missing)} of {len(self.index)} images have "
                                f"none): run `sumseg uncertainty --pseudo-labels {store.root}` first")
            if max_mask_u is not None:
                self._filter(max_mask_u)

    def _filter(self, max_mask_u: float) -> None:
        """Keep the pseudo-labels whose mean U over their own low-res pixels is at most ``max_mask_u``."""
        total = kept = 0
        for i in list(self.index):
            u = 1.0 - self.store.confidence(i)  # type: ignore[operator]  # checked: every image has its maps
            inside = self.store.logits(i) > 0
            mean_u = (u * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp(min=1)
            ok = (mean_u <= max_mask_u).nonzero().squeeze(1).numpy()
            total, kept = total + len(mean_u), kept + len(ok)
            self.eligible[i] = ok
        self.index = [i for i in self.index if len(self.eligible[i])]
        self.filtered = (kept, total)
        if not self.index:
            raise DataError(f"{self.store.root}: no pseudo-label has a mean U <= {max_mask_u} "
                            f"(data.max_mask_uncertainty); raise it or leave it out")

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, index: int, rng: np.random.Generator) -> MaskSample:
        i = self.index[index]
        rec = self.store.record(i)
        pool = self.eligible.get(i, np.arange(len(rec.masks)))
        k = min(self.max_masks, len(pool))
        picked = np.sort(pool[rng.choice(len(pool), size=k, replace=False)])  # all masks: the same draw as without
        image = rec.load_image()
        if self.refiner is None:
            masks = np.stack([rec.mask(int(j)) for j in picked])
        else:
            masks = self._refined(rec, i, picked)
        conf = None
        if self.uncertainty:
            c = self.store.confidence(i)
            assert c is not None, "checked in __init__"
            conf = c[torch.as_tensor(picked)]
        return MaskSample(image, masks, np.full(k, GENERAL, dtype=np.int64), None, conf, pseudo=True,
                          confidence_frame=self.store.frame)

    def _refined(self, rec: ImageRecord, i: int, picked: np.ndarray) -> np.ndarray:
        """(k, H, W) bool: σ(r) > 0.5 of the refiner's output for the picked pseudo-labels of store image i."""
        assert self.refiner is not None
        hw = (rec.height, rec.width)
        labels = _subset(self.store.load(i, confidence=False), picked)
        r = refine(self.refiner, image_features(self.refiner, rec, None), labels, hw)
        return (lowres_to_image_in(frame_kind(self.refiner), r, self.refiner.image_size, hw) > 0).cpu().numpy()

