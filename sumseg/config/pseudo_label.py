"""The settings of ``sumseg pseudo-label`` (docs/pseudo-labels.md): the section a YAML file (``--config``)
and the flags set, and the automatic mask generator's knobs inside it.

:class:`PseudoLabelSettings` (the section's ``amg`` keys) is what determines the labels: a store
saves it in ``meta.json`` as ``settings``. :class:`PseudoLabelConfig` adds what the command reads
and writes (input, store, model, shard, cache, device). Defaults are SAM's generator's; each is
written here once (the flags take theirs from here). Checked by the one
:class:`~sumseg.config.checker.Checker`, each problem named by its flag or its key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sumseg.config.checker import Checker, load_checked
from sumseg.errors import ConfigError

Threshold = float | str  # a number, or "q<quantile>" (e.g. "q0.7")
MAX_GRID_SIDE = 128  # 16,384 grid points, each decoded to 3 masks: beyond this an image's candidates outgrow memory


@dataclass
class PseudoLabelSettings:
    """Every knob of the automatic mask generator (``sumseg pseudo-label``'s ``amg`` section; defaults = SAM's)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    # a number or "q<quantile>" (typed Any for the YAML reader: 0, 1 and "q0.6" alike; parsed below)
    pred_iou_thresh: Any = 0.88
    stability_score_thresh: Any = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    max_area_ratio: float = 0.95
    min_area_ratio: float = 0.0005
    max_per_image: int | None = None
    calibration_images: int = 32

    def __post_init__(self) -> None:
        for name in ("pred_iou_thresh", "stability_score_thresh"):  # unreadable text is left for the check
            try:
                setattr(self, name, parse_threshold(getattr(self, name), name))
            except ConfigError:
                pass

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PseudoLabelConfig:
    """``sumseg pseudo-label``: what it reads and writes, and the generator's settings (``amg``)."""

    images: str | None = None  # unlabelled images: an image folder or any readable dataset (needed)
    out: str | None = None  # the pseudo-label store folder (needed)
    model: str | None = None  # registry name or tiny_foundation; optional for a sumseg checkpoint
    checkpoint: str | None = None  # foundation model weights
    amg: PseudoLabelSettings = field(default_factory=PseudoLabelSettings)
    shard: str | None = None  # "i/N": label every N-th image from the i-th
    cache: str | None = None  # embedding cache folder (float16 embeddings)
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    progress: bool = True


PSEUDO_LABEL_FLAGS = {
    "points_per_side": "--points-per-side", "points_per_batch": "--points-per-batch",
    "pred_iou_thresh": "--iou-thresh", "stability_score_thresh": "--stability-thresh",
    "stability_score_offset": "--stability-offset", "box_nms_thresh": "--nms-thresh",
    "max_area_ratio": "--max-area-ratio", "min_area_ratio": "--min-area-ratio", "max_per_image": "--max-per-image",
    "calibration_images": "--calibration-images",
}
"""``sumseg pseudo-label``'s flag of each :class:`PseudoLabelSettings` field."""
PSEUDO_LABEL_KEYS = {
    "images": "images", "out": "out", "model": "model", "checkpoint": "checkpoint", "shard": "shard",
    "cache": "cache", "device": "device", "progress": "progress",
    **{flag[2:].replace("-", "_"): f"amg.{name}" for name, flag in PSEUDO_LABEL_FLAGS.items()},
}
"""Each flag of ``sumseg pseudo-label`` (its parameter name) → the key of :class:`PseudoLabelConfig` it sets."""


def check_pseudo_label_settings(settings: PseudoLabelSettings, c: Checker,
                                keys: Mapping[str, str] | None = None) -> None:
    """The ranges of every setting (NaN, inf and absurd values refused), each problem named by ``keys[field]``
    (the CLI's flags, :data:`PSEUDO_LABEL_FLAGS`) or by the field's name."""
    k, s = (lambda f: (keys or {}).get(f, f)), settings
    c.number(k("points_per_side"), s.points_per_side, 1, MAX_GRID_SIDE)
    c.number(k("points_per_batch"), s.points_per_batch, 1, 65536)
    for name in ("pred_iou_thresh", "stability_score_thresh"):
        value = getattr(s, name)
        if isinstance(value, float):
            c.number(k(name), value, -1, 1)
        else:
            c.require(k(name), _is_quantile(value),
                      f"must be a number or a quantile q<0..1> (e.g. q0.7), got {value!r}")
    c.number(k("stability_score_offset"), s.stability_score_offset, 0, 100)
    c.number(k("box_nms_thresh"), s.box_nms_thresh, 0, 1)
    c.number(k("max_area_ratio"), s.max_area_ratio, 0, 1000, lo_open=True)
    c.number(k("min_area_ratio"), s.min_area_ratio, 0, 1, hi_open=True)
    if s.max_per_image is not None:
        c.number(k("max_per_image"), s.max_per_image, 1, 1_000_000)
    c.number(k("calibration_images"), s.calibration_images, 0, 10_000_000)


def check_pseudo_label_config(cfg: PseudoLabelConfig, c: Checker, name: Callable[[str], str] = lambda k: k) -> None:
    """The whole section: the input and the store named, and :func:`check_pseudo_label_settings` on ``amg``;
    ``name(key)`` names each problem (the flag that set the key, or the key)."""
    c.require(name("images"), cfg.images is not None, "is needed: the unlabelled images (--images or images:)")
    c.require(name("out"), cfg.out is not None, "is needed: the pseudo-label store folder (--out or out:)")
    check_pseudo_label_settings(cfg.amg, c, {f.name: name(f"amg.{f.name}") for f in fields(PseudoLabelSettings)})


def load_pseudo_label_config(path: str | Path | None = None,
                             flags: Mapping[str, tuple[str, Any]] | None = None) -> PseudoLabelConfig:
    """The section from the YAML ``path`` (optional), then the flags given (key → (flag, value)); checked:
    one ConfigError lists every problem, each led by its flag, or by its key and the file that set it."""
    return load_checked(PseudoLabelConfig, check_pseudo_label_config, path, flags or {})


def _is_quantile(value: object) -> bool:
    try:
        return isinstance(value, str) and isinstance(parse_threshold(value, ""), str)
    except ConfigError:
        return False


def parse_threshold(value: Threshold, name: str) -> Threshold:
    """A float, or ``"q<x>"`` with 0 ≤ x ≤ 1 kept as text (a number given as text becomes a float)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        if text.startswith("q"):
            q = float(text[1:])
            if not 0.0 <= q <= 1.0:
                raise ValueError
            return f"q{q:g}"
        return float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number or a quantile q<0..1> (e.g. q0.7), not {value!r}") from None
