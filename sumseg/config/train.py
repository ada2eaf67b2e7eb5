"""The typed config tree of ``sumseg train``: dataclasses, YAML files and ``key=value`` overrides.

One tree (:class:`TrainConfig`), read through OmegaConf structured configs: a YAML file is merged
onto the dataclass defaults, then each ``key=value`` override (``optim.lr=1e-4``,
``data.labelled=[{path: data/duts, task: 1}]``). Unknown keys, wrong types and bad values raise
:class:`~sumseg.errors.ConfigError` naming the key's path (``optim.lr``, ``data.labelled[0].task``)
and the file or override it came from. The resolved tree is saved as YAML in the run folder
(``config.yaml``) and as a plain dict in every checkpoint. docs/training.md describes every field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING

from sumseg.config.checker import Checker
from sumseg.config.defaults import FOCAL_WEIGHT, P_BOX, THETA
from sumseg.config.sections import ModelConfig, OptimConfig, RunConfig, check_model, check_optim, check_run
from sumseg.config_io import load_structured, to_plain
from sumseg.tasks import TASK_ID_LIMIT


class Method(Enum):
    """What the pseudo-labelled images contribute (DESIGN §1; the paper's ablation rows)."""

    sum = "sum"  # confidence maps c = 1 - U weight the loss and the prompt sampling; task prompts
    vanilla = "vanilla"  # human labels only
    self_training = "self_training"  # pseudo-labels as targets with c ≡ 1
    refined_labels = "refined_labels"  # the refiner's masks (σ(r) > 0.5) as targets, c ≡ 1
    sum_no_task = "sum_no_task"  # sum without task prompts


class Mode(Enum):
    """Which weights train."""

    full = "full"  # every weight (layer-wise lr decay on the encoder)
    decoder = "decoder"  # prompt encoder + mask decoder + task prompts; encoder frozen, embeddings cached
    lora = "lora"  # LoRA adapters on the encoder's attention + prompt encoder + decoder + task prompts


class TaskPromptRounds(Enum):
    """Which interactive rounds get the task prompt."""

    every = "every"  # every prompt-encoder call, as the official code (and the stock model after export)
    first = "first"  # round 1 only (an ablation; sumseg's behaviour before the fidelity change)


class LossResolution(Enum):
    """Where the loss is taken (docs/method.md)."""

    input = "input"  # S×S input frame: low-res logits and U upsampled bilinearly (the official code, SAM 2)
    lowres = "lowres"  # the decoder's S/4 frame with area-fraction targets (faster, coarser boundaries)


@dataclass
class LabelledSet:
    """A human-labelled dataset: any path ``sumseg.data.read_dataset`` reads, and its task id."""

    path: str = MISSING
    task: int | None = None  # every mask gets this task id; null keeps the ids the file declares


@dataclass
class DataConfig:
    labelled: list[LabelledSet] = field(default_factory=list)
    pseudo_labels: str | None = None  # pseudo-label store (sumseg pseudo-label; U maps by sumseg uncertainty)
    refiner: str | None = None  # refiner checkpoint: method=refined_labels computes its targets with it
    ratio: list[float] = field(default_factory=lambda: [1.0, 1.0])  # labelled : pseudo-labelled images
    masks_per_image: int = 8  # K: up to K masks drawn from each image
    images_per_step: int = 4  # per process and step (before gradient accumulation)
    embedding_cache: str | None = None  # mode=decoder; null = <run.out>/embeddings
    max_mask_uncertainty: float | None = None  # methods with U maps: leave out pseudo-labels of a higher mean U


@dataclass
class RoundsConfig:
    corrections: int = 5  # correction rounds after round 1
    final_round: bool = True  # a last round with no new prompt
    p_box: float = P_BOX  # round 1 is a jittered box with this probability, else a point
    task_prompt: TaskPromptRounds = TaskPromptRounds.every  # rounds that get the task prompt


@dataclass
class LossConfig:
    """The uncertainty-aware loss (sumseg.losses.RoundLoss)."""

    resolution: LossResolution = LossResolution.input
    focal_weight: float = FOCAL_WEIGHT  # L = focal_weight · mean(c · focal) + dice + IoU MSE
    theta: float = THETA  # dice gate: pixels with c > theta (paper 0.6, published code 0.5)
    iou_head_on_pseudo: bool = False  # train the IoU head on pseudo-labels too (SAM: all masks; official SUM: no)


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: int = 16  # adapters scale by alpha / rank
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["qkv", "proj"])  # Linear names in encoder attention


@dataclass
class TrainConfig:
    """Everything ``sumseg train`` needs (docs/training.md)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: Method = Method.sum
    mode: Mode = Mode.full
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


MOVED_KEYS = {"rounds.theta": "loss.theta"}
"""Keys of earlier versions and where they live now (a config that sets one is refused, naming the new key)."""
NEEDS_PSEUDO = (Method.sum, Method.self_training, Method.refined_labels, Method.sum_no_task)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """``sumseg train``'s config: defaults, YAML ``path``, ``key=value`` overrides; checked (ConfigError
    naming each bad key and the file or override that set it)."""
    cfg, sources = load_structured(TrainConfig, path, overrides, moved=MOVED_KEYS)
    check_config(cfg, sources.origin)
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain data (enums as their values): what checkpoints and config.yaml store."""
    return to_plain(cfg)


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


RESUME_FREE = ("run.progress", "run.device", "run.log_every", "run.save_every")
"""Keys a resumed run may change: they do not change what is computed (on the same device kind)."""


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for each value that differs between two plain config trees (RESUME_FREE left out)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_changes(a, b, f"{path}.")
        elif a != b and path not in RESUME_FREE:
            out.append(f"{path}: {a!r} -> {b!r}")
    return out


def _check_values(cfg: TrainConfig, c: Checker) -> None:
    m, d, r, lo, o, run = cfg.model, cfg.data, cfg.rounds, cfg.lora, cfg.optim, cfg.run
    check_model(m, c)
    for i, s in enumerate(d.labelled):
        if s.task is not None:
            c.number(f"data.labelled[{i}].task", s.task, 0, TASK_ID_LIMIT - 1)
    c.require("data.ratio", len(d.ratio) == 2, f"must be [labelled, pseudo], got {d.ratio}")
    for i, v in enumerate(d.ratio):
        c.number(f"data.ratio[{i}]", v, 0, 1e6)
    c.require("data.ratio", sum(d.ratio) > 0, "must give labelled or pseudo-labelled images a share > 0")
    c.number("data.masks_per_image", d.masks_per_image, 1, 4096)
    c.number("data.images_per_step", d.images_per_step, 1, 4096)
    if d.max_mask_uncertainty is not None:
        c.number("data.max_mask_uncertainty", d.max_mask_uncertainty, 0, 1)
    c.number("rounds.corrections", r.corrections, 0, 100)
    c.number("rounds.p_box", r.p_box, 0, 1)
    c.number("loss.theta", cfg.loss.theta, 0, 1, hi_open=True)
    c.number("loss.focal_weight", cfg.loss.focal_weight, 0, 1e6)
    c.number("lora.rank", lo.rank, 1, 4096)
    c.number("lora.alpha", lo.alpha, 1, 1e6)
    c.number("lora.dropout", lo.dropout, 0, 1, hi_open=True)
    c.require("lora.targets", bool(lo.targets) and all(t.isidentifier() for t in lo.targets),
              f"must be module names such as qkv, proj; got {lo.targets}")
    c.number("optim.layer_decay", o.layer_decay, 0, 1, lo_open=True)
    c.number("optim.task_lr_mult", o.task_lr_mult, 0, 1e6)
    check_optim(o, c)
    check_run(run, c)


def _check_sources(cfg: TrainConfig, c: Checker) -> None:
    """What the method and the ratio need: a store, labelled sets, a refiner."""
    labelled_share, pseudo_share = cfg.data.ratio
    method = cfg.method.value
    c.require("data.pseudo_labels", not (cfg.method in NEEDS_PSEUDO and pseudo_share > 0)
              or cfg.data.pseudo_labels is not None,
              f"is needed by method {method} (a pseudo-label store), or set data.ratio=[1, 0] to train on "
              "the labelled sets alone")
    c.require("data.labelled", not (cfg.method is Method.vanilla or labelled_share > 0) or bool(cfg.data.labelled),
              f"is needed by method {method} with data.ratio {cfg.data.ratio}: at least one {{path: ..., task: ...}}")
    c.require("data.refiner", cfg.method is not Method.refined_labels or cfg.data.refiner is not None,
              "is needed by method refined_labels (the refiner checkpoint of sumseg refiner train)")


def check_config(cfg: TrainConfig, origin: Callable[[str], str | None] = lambda key: None) -> None:
    """Refuse bad values and combinations: one ConfigError lists every problem, each with its key's
    path and (through ``origin``) the file or override that set it."""
    c = Checker()
    _check_values(cfg, c)
    c.raise_if_any(origin)
    _check_sources(cfg, c)
    c.raise_if_any(origin)

