"""The typed config tree of ``sumseg train``: dataclasses, YAML files and ``key=value`` overrides.

One tree (:class:`TrainConfig`), read through OmegaConf structured configs: a YAML file is merged
onto the dataclass defaults, then each ``key=value`` override (``optim.lr=1e-4``,
``data.labelled=[{path: data/duts, task: 1}]``). Unknown keys, wrong types and bad values raise
:class:`~sumseg.errors.ConfigError` naming the key's path (``optim.lr``, ``data.labelled[0].task``)
and the file or override it came from. The resolved tree is saved as YAML in the run folder
(``config.yaml``) and as a plain dict in every checkpoint. docs/training.md describes every field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING

from sumseg.config_io import load_structured, to_plain
from sumseg.errors import ConfigError
from sumseg.model_names import model_problems
from sumseg.tasks import DEFAULT_TASKS, TASK_ID_LIMIT


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


class Schedule(Enum):
    cosine = "cosine"  # linear warm-up, then cosine from lr to min_lr_ratio · lr
    constant = "constant"  # linear warm-up, then constant


class TaskPromptRounds(Enum):
    """Which interactive rounds get the task prompt."""

    every = "every"  # every prompt-encoder call, as the official code (and the stock model after export)
    first = "first"  # round 1 only (an ablation; sumseg's behaviour before the fidelity change)


class LossResolution(Enum):
    """Where the loss is taken (docs/method.md)."""

    input = "input"  # S×S input frame: low-res logits and U upsampled bilinearly (the official code, SAM 2)
    lowres = "lowres"  # the decoder's S/4 frame with area-fraction targets (faster, coarser boundaries)


class Precision(Enum):
    """Autocast of the step (sumseg.train.precision); weights and optimiser state stay float32."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class ModelConfig:
    """The foundation model: registry name and/or checkpoint, and the task ids it knows."""

    name: str | None = None  # registry name (vit_b, tiny, ...); null for a sumseg checkpoint (it names its model)
    checkpoint: str | None = None  # official .pth, export, or sumseg checkpoint; null = random weights
    tasks: list[int] = field(default_factory=lambda: list(DEFAULT_TASKS))  # ignored for sumseg checkpoints


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
    p_box: float = 0.5  # round 1 is a jittered box with this probability, else a point
    task_prompt: TaskPromptRounds = TaskPromptRounds.every  # rounds that get the task prompt


@dataclass
class LossConfig:
    """The uncertainty-aware loss (sumseg.losses.RoundLoss)."""

    resolution: LossResolution = LossResolution.input
    focal_weight: float = 20.0  # L = focal_weight · mean(c · focal) + dice + IoU MSE
    theta: float = 0.6  # dice gate: pixels with c > theta (paper 0.6, published code 0.5)
    iou_head_on_pseudo: bool = False  # train the IoU head on pseudo-labels too (SAM: all masks; official SUM: no)


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: int = 16  # adapters scale by alpha / rank
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["qkv", "proj"])  # Linear names in encoder attention


@dataclass
class OptimConfig:
    lr: float = 1e-5
    layer_decay: float = 0.8  # encoder: block i of D gets lr · decay^(D − i); patch embedding decay^(D+1)
    weight_decay: float = 0.1  # not on biases, norms, position embeddings or task prompts
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup: int = 0  # steps
    schedule: Schedule = Schedule.cosine
    min_lr_ratio: float = 0.1  # cosine's end, as a fraction of each group's lr
    grad_clip: float = 1.0  # max global gradient norm
    steps: int = 1000
    task_lr_mult: float = 1.0  # task prompts train at lr · task_lr_mult
    train_task0: bool = False  # task 0 (general) stays fixed (zero: the foundation's prompt path), as published
    accumulate: int = 1  # step calls (of data.images_per_step images each) per optimiser step


@dataclass
class RunConfig:
    out: str = "runs/sum"
    seed: int = 0
    save_every: int = 200
    log_every: int = 10
    device: str = "auto"  # auto (cuda:LOCAL_RANK if there is a GPU, else cpu) | cpu | cuda
    precision: Precision = Precision.fp32
    progress: bool = True


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


MAX_STEPS = 100_000_000
DEVICES = ("auto", "cpu", "cuda")
"""What ``run.device`` and ``--device`` accept."""
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


class Checker:
    """Value checks of a config tree (``sumseg train``'s and ``sumseg refiner train``'s): every problem
    is collected, its key's path leading its message, and reported at once by :meth:`raise_if_any`."""

    def __init__(self) -> None:
        self.errors: list[tuple[tuple[str, ...], str]] = []  # (keys involved, the first one's; message)

    def number(self, key: str, value: float, lo: float, hi: float, lo_open: bool = False,
               hi_open: bool = False) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            self.errors.append(((key,), f"{key} must be a finite number, got {value}"))
            return
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            self.errors.append(((key,), f"{key} must lie in {span}, got {value}"))

    def at_most(self, key: str, value: float, lo: float, bound_key: str, bound: float) -> None:
        """``lo <= value <= bound``, where ``bound`` is the value of another key (the message names both)."""
        if not lo <= value <= bound:
            self.errors.append(((key, bound_key), f"{key} must lie in [{lo:g}, {bound_key}], got {value} "
                                                  f"with {bound_key} = {bound}"))

    def require(self, key: str, ok: bool, message: str) -> None:
        if not ok:
            self.errors.append(((key,), f"{key} {message}"))

    def add(self, problems: Sequence[tuple[str, str]]) -> None:
        """Problems found elsewhere, as (key, message) pairs."""
        self.errors += [((key,), message) for key, message in problems]

    def raise_if_any(self, origin: Callable[[str], str | None]) -> None:
        """One ConfigError listing every problem, each led by the file or override that set its key;
        a problem between two keys set in different places names both places."""
        if self.errors:
            raise ConfigError("; ".join(_placed(keys, m, origin) for keys, m in self.errors))


def _placed(keys: tuple[str, ...], message: str, origin: Callable[[str], str | None]) -> str:
    """``"<source>: <message>"`` when one source set every key involved (or none did: the defaults);
    else ``"<message> (<key> from <source>, ...)"`` naming each key's source."""
    sources = [origin(k) for k in keys]
    if len(set(sources)) == 1:
        return f"{sources[0]}: {message}" if sources[0] else message
    where = [f"{k} from {s or 'the defaults'}" for k, s in zip(keys, sources, strict=True)]
    return f"{message} ({', '.join(where)})"


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


def check_model(m: ModelConfig, c: Checker) -> None:
    """The ``model`` section (``sumseg train`` and ``sumseg refiner train``): the rule every command
    follows (``sumseg.model_names.model_problems``: a registry or shipped name, or a checkpoint)."""
    c.add(model_problems(m.name, m.checkpoint))
    c.require("model.tasks", len(set(m.tasks)) == len(m.tasks) and all(0 <= t < TASK_ID_LIMIT for t in m.tasks),
              f"must be distinct ids in [0, {TASK_ID_LIMIT}), got {m.tasks}")


def check_optim(o: Any, c: Checker) -> None:
    """The ``optim`` keys ``sumseg train`` and ``sumseg refiner train`` share (``OptimConfig`` or ``RefinerOptim``)."""
    c.number("optim.lr", o.lr, 0, 1, lo_open=True)
    c.number("optim.weight_decay", o.weight_decay, 0, 10)
    c.require("optim.betas", len(o.betas) == 2, f"must be [beta1, beta2], got {o.betas}")
    for i, b in enumerate(o.betas):
        c.number(f"optim.betas[{i}]", b, 0, 1, hi_open=True)
    c.number("optim.steps", o.steps, 1, MAX_STEPS)
    c.at_most("optim.warmup", o.warmup, 0, "optim.steps", o.steps)
    c.number("optim.min_lr_ratio", o.min_lr_ratio, 0, 1)
    c.number("optim.grad_clip", o.grad_clip, 0, 1e12, lo_open=True)
    c.number("optim.accumulate", o.accumulate, 1, 4096)


def check_run(run: RunConfig, c: Checker) -> None:
    """The ``run`` section (both commands)."""
    c.number("run.seed", run.seed, 0, 2**63 - 1)
    c.number("run.save_every", run.save_every, 1, MAX_STEPS)
    c.number("run.log_every", run.log_every, 1, MAX_STEPS)
    c.require("run.out", bool(run.out.strip()), "must name a folder")
    c.require("run.device", run.device in DEVICES, f"must be one of {', '.join(DEVICES)}, got {run.device!r}")


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


__all__ = [
    "DataConfig", "LabelledSet", "LossConfig", "LossResolution", "LoraConfig", "Method", "Mode", "ModelConfig",
    "OptimConfig", "Precision", "RoundsConfig", "RunConfig", "Schedule", "TaskPromptRounds", "TrainConfig",
    "check_config", "config_changes", "load_config", "to_dict", "to_yaml",
]
