"""The config tree of ``sumseg refiner train`` (docs/refiner.md): sections named as in ``sumseg train``'s.

``model`` and ``run`` are the shared sections (:mod:`sumseg.config.sections`); ``optim`` has the
same key names as ``sumseg train``'s (the keys that apply to a decoder-only run). Read by the one
loader (:func:`sumseg.config_io.load_structured`) and checked by the one
:class:`~sumseg.config.checker.Checker`, with ``sumseg train``'s checks and wording for the shared
sections. The run saves :func:`config_dict` in its ``config.json`` and every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING, OmegaConf

from sumseg.config.checker import Checker
from sumseg.config.defaults import JITTER_RATIO, MAX_JITTER, REFINER_MIN_IOU
from sumseg.config.sections import ModelConfig, RunConfig, check_model, check_optim, check_run
from sumseg.config_io import load_structured
from sumseg.model_names import refiner_problem


@dataclass
class RefinerData:
    """The human-labelled masks (``data.*``)."""

    labelled: list[str] = MISSING  # datasets read_dataset reads (COCO, SA-1B, folders), concatenated
    masks_per_image: int = 8  # up to K masks drawn from each image per step
    images_per_step: int = 4  # per process and call
    embedding_cache: str | None = None  # cache folder of the (frozen) encoder; null = encode every call


@dataclass
class RefinerInputsConfig:
    """How a training input is made (``inputs.*``; sumseg.train.refiner_run's docstring)."""

    min_iou: float = REFINER_MIN_IOU  # the gate: IoU of the frozen best-of-3 output with the GT
    jitter_ratio: float = JITTER_RATIO  # box jitter: std = ratio · side, clamped to ±max_jitter px
    max_jitter: float = MAX_JITTER


@dataclass
class RefinerOptim:
    """``optim.*``: the keys of ``sumseg train``'s ``optim`` section that apply to a decoder-only run."""

    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    steps: int = 400
    accumulate: int = 1  # step calls (of data.images_per_step images each) per optimiser step


@dataclass
class RefinerConfig:
    """``sumseg refiner train`` settings: sections named as in ``sumseg train``'s config (docs/refiner.md)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: RefinerData = field(default_factory=RefinerData)
    inputs: RefinerInputsConfig = field(default_factory=RefinerInputsConfig)
    optim: RefinerOptim = field(default_factory=RefinerOptim)
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/refiner"))


def check_refiner_config(cfg: RefinerConfig, origin: Callable[[str], str | None] = lambda key: None) -> None:
    """Refuse bad values: one ConfigError lists every problem, each with its key's path and (through
    ``origin``) the file or override that set it — ``sumseg train``'s checker and wording for the
    sections the two share (``model``, ``optim``, ``run``)."""
    c = Checker()
    check_model(cfg.model, c)
    c.add([("model.name", p) for p in [refiner_problem(cfg.model.name, "model.name")] if p])
    d, i = cfg.data, cfg.inputs
    c.require("data.labelled", len(d.labelled) > 0, "must name at least one dataset")
    c.number("data.masks_per_image", d.masks_per_image, 1, 4096)
    c.number("data.images_per_step", d.images_per_step, 1, 4096)
    c.number("inputs.min_iou", i.min_iou, 0, 1)
    c.number("inputs.jitter_ratio", i.jitter_ratio, 0, 1e6)
    c.number("inputs.max_jitter", i.max_jitter, 0, 1e6)
    check_optim(cfg.optim, c)
    check_run(cfg.run, c)
    c.raise_if_any(origin)


def load_refiner_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RefinerConfig:
    """YAML ``path`` (optional) over the defaults, then ``key=value`` overrides (``optim.lr=1e-4``); checked.

    Read as ``sumseg train``'s config is (:func:`sumseg.config_io.load_structured`): unknown keys,
    values of the wrong type and missing required keys raise :class:`ConfigError` naming the key
    and the file or override it came from; then every out-of-range value is listed at once.
    """
    cfg, sources = load_structured(RefinerConfig, path, overrides)
    check_refiner_config(cfg, sources.origin)
    return cfg


def config_dict(cfg: RefinerConfig) -> dict:
    """The resolved config as saved in the run folder and the checkpoint: ``{"refiner": {...}}``."""
    return {"refiner": OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)}
