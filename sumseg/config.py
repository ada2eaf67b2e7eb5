"""The typed config tree of ``sumseg train``: dataclasses, YAML files and ``key=value`` overrides.

One tree (:class:`TrainConfig`), read through OmegaConf structured configs: a YAML file is merged
onto the dataclass defaults, then each ``key=value`` override (``optim.lr=1e-4``,
``data.labelled=[{path: data/duts, task: 1}]``). Unknown keys, wrong types and bad values raise
:class:`~sumseg.errors.ConfigError` naming the key's path (``optim.lr``, ``data.labelled[0].task``)
and the file or override it came from. The resolved tree is saved as YAML in the run folder
(``config.yaml``) and as a plain dict in every checkpoint. docs/training.md describes every field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sumseg.errors import ConfigError
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


@dataclass
class RoundsConfig:
    corrections: int = 5  # correction rounds after round 1
    final_round: bool = True  # a last round with no new prompt
    p_box: float = 0.5  # round 1 is a jittered box with this probability, else a point
    theta: float = 0.6  # dice gate: pixels with c > theta


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
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


MAX_STEPS = 100_000_000
T = TypeVar("T")
NEEDS_PSEUDO = (Method.sum, Method.self_training, Method.refined_labels, Method.sum_no_task)


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _unknown_keys(raw: Any, cls: type, path: str) -> list[str]:
    """Paths of keys in ``raw`` (a plain dict/list tree) that the dataclass ``cls`` does not declare."""
    if not isinstance(raw, Mapping):
        return []
    names = {f.name for f in dataclasses.fields(cls)}
    out = []
    for key, value in raw.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in names:
            out.append(sub)
            continue
        kind = _field_type(cls, key)
        if dataclasses.is_dataclass(kind):
            out += _unknown_keys(value, kind, sub)  # type: ignore[arg-type]
        elif typing.get_origin(kind) is list and isinstance(value, list):
            (item,) = typing.get_args(kind)
            if dataclasses.is_dataclass(item):
                for i, v in enumerate(value):
                    out += _unknown_keys(v, item, f"{sub}[{i}]")  # type: ignore[arg-type]
    return out


def _merge(base: Any, raw: Any, origin: str, schema: type) -> Any:
    """``raw`` (a plain tree) merged onto ``base``; unknown keys and type errors name the key path."""
    bad = _unknown_keys(raw, schema, "")
    if bad:
        raise ConfigError(f"{origin}: unknown key {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    try:
        return OmegaConf.merge(base, raw)
    except OmegaConfBaseException as e:
        key = _item_key(raw, schema, "") or getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{origin}: {key}: {str(e).splitlines()[0]}") from None


def _item_key(raw: Any, cls: type, path: str) -> str | None:
    """Full path of the first bad key inside a list of dataclasses (OmegaConf reports only its tail)."""
    if not isinstance(raw, Mapping):
        return None
    for key, value in raw.items():
        kind = _field_type(cls, key)
        sub = f"{path}.{key}" if path else str(key)
        if dataclasses.is_dataclass(kind):
            found = _item_key(value, kind, sub)  # type: ignore[arg-type]
            if found:
                return found
        elif typing.get_origin(kind) is list and isinstance(value, list):
            (item,) = typing.get_args(kind)
            for i, v in enumerate(value if dataclasses.is_dataclass(item) else []):
                try:
                    OmegaConf.merge(OmegaConf.structured(item), v)
                except OmegaConfBaseException as e:
                    return f"{sub}[{i}].{getattr(e, 'full_key', '') or '?'}"
    return None


def _parse_override(text: str) -> dict[str, Any]:
    """``a.b=value`` → ``{"a": {"b": value}}`` with the value parsed as YAML (``[1, 2]``, ``null``, ``1e-4``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=1e-4")
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))
    except OmegaConfBaseException as e:
        raise ConfigError(f"override {text!r}: unreadable value: {str(e).splitlines()[0]}") from None
    tree: dict[str, Any] = {}
    node = tree
    *parents, leaf = key.strip().split(".")
    for p in parents:
        node = node.setdefault(p, {})
    assert isinstance(parsed, dict)
    node[leaf] = parsed["v"]
    return tree


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not readable YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections (model, data, ...), "
                          f"not a {type(raw).__name__}")
    return raw


def load_structured(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Instance of the dataclass ``schema``: its defaults, then the YAML file ``path`` (if any), then
    ``key=value`` overrides. Unknown keys and wrong types raise ConfigError naming the key's path and
    the file or override; values are not range-checked here."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        cfg = _merge(cfg, _read_yaml(Path(path)), str(path), schema)
    for text in overrides:
        cfg = _merge(cfg, _parse_override(text), f"override {text!r}", schema)
    return _to_object(cfg, schema)


def _to_object(cfg: Any, schema: type[T]) -> T:
    try:
        out = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{key}: {str(e).splitlines()[0]} (set it in the config file or as {key}=...)") from None
    assert isinstance(out, schema)
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """``sumseg train``'s config: defaults, YAML ``path``, ``key=value`` overrides; checked (ConfigError)."""
    cfg = load_structured(TrainConfig, path, overrides)
    check_config(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain data (enums as their names): what checkpoints and config.yaml store."""
    def plain(v: Any) -> Any:
        if isinstance(v, Enum):
            return v.value
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, list | tuple) else v

    return plain(dataclasses.asdict(cfg))


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(data: Mapping[str, Any], origin: str = "config") -> TrainConfig:
    """A checked :class:`TrainConfig` from plain data (e.g. a run folder's config.yaml)."""
    cfg = _to_object(_merge(OmegaConf.structured(TrainConfig), dict(data), origin, TrainConfig), TrainConfig)
    check_config(cfg)
    return cfg


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


class _Checker:
    """Value checks with the key path in every message."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def number(self, key: str, value: float, lo: float, hi: float, lo_open: bool = False,
               hi_open: bool = False) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            self.errors.append(f"{key} must be a finite number, got {value}")
            return
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            self.errors.append(f"{key} must lie in {span}, got {value}")

    def require(self, ok: bool, message: str) -> None:
        if not ok:
            self.errors.append(message)


def _check_values(cfg: TrainConfig, c: _Checker) -> None:
    from sumseg.models.registry import MODEL_NAMES  # noqa: PLC0415 - `import sumseg.config` imports no torch
    from sumseg.train.distributed import DEVICES  # noqa: PLC0415

    m, d, r, lo, o, run = cfg.model, cfg.data, cfg.rounds, cfg.lora, cfg.optim, cfg.run
    c.require(m.name is None or m.name in MODEL_NAMES, f"model.name must be one of {', '.join(MODEL_NAMES)}, "
              f"got {m.name!r}")
    c.require(m.name is not None or m.checkpoint is not None, "model.name: null needs a model.checkpoint")
    c.require(len(set(m.tasks)) == len(m.tasks) and all(0 <= t < TASK_ID_LIMIT for t in m.tasks),
              f"model.tasks must be distinct ids in [0, {TASK_ID_LIMIT}), got {m.tasks}")
    for i, s in enumerate(d.labelled):
        if s.task is not None:
            c.number(f"data.labelled[{i}].task", s.task, 0, TASK_ID_LIMIT - 1)
    c.require(len(d.ratio) == 2, f"data.ratio must be [labelled, pseudo], got {d.ratio}")
    for i, v in enumerate(d.ratio):
        c.number(f"data.ratio[{i}]", v, 0, 1e6)
    c.require(sum(d.ratio) > 0, "data.ratio: at least one of labelled and pseudo must be > 0")
    c.number("data.masks_per_image", d.masks_per_image, 1, 4096)
    c.number("data.images_per_step", d.images_per_step, 1, 4096)
    c.number("rounds.corrections", r.corrections, 0, 100)
    c.number("rounds.p_box", r.p_box, 0, 1)
    c.number("rounds.theta", r.theta, 0, 1, hi_open=True)
    c.number("lora.rank", lo.rank, 1, 4096)
    c.number("lora.alpha", lo.alpha, 1, 1e6)
    c.number("lora.dropout", lo.dropout, 0, 1, hi_open=True)
    c.require(bool(lo.targets) and all(t.isidentifier() for t in lo.targets),
              f"lora.targets must be module names such as qkv, proj; got {lo.targets}")
    c.number("optim.lr", o.lr, 0, 1, lo_open=True)
    c.number("optim.layer_decay", o.layer_decay, 0, 1, lo_open=True)
    c.number("optim.weight_decay", o.weight_decay, 0, 10)
    c.require(len(o.betas) == 2, f"optim.betas must be [beta1, beta2], got {o.betas}")
    for i, b in enumerate(o.betas):
        c.number(f"optim.betas[{i}]", b, 0, 1, hi_open=True)
    c.number("optim.steps", o.steps, 1, MAX_STEPS)
    c.number("optim.warmup", o.warmup, 0, o.steps)
    c.number("optim.min_lr_ratio", o.min_lr_ratio, 0, 1)
    c.number("optim.grad_clip", o.grad_clip, 0, 1e12, lo_open=True)
    c.number("optim.task_lr_mult", o.task_lr_mult, 0, 1e6)
    c.number("optim.accumulate", o.accumulate, 1, 4096)
    c.number("run.seed", run.seed, 0, 2**63 - 1)
    c.number("run.save_every", run.save_every, 1, MAX_STEPS)
    c.number("run.log_every", run.log_every, 1, MAX_STEPS)
    c.require(bool(run.out.strip()), "run.out must name a folder")
    c.require(run.device in DEVICES, f"run.device must be one of {', '.join(DEVICES)}, got {run.device!r}")


def check_config(cfg: TrainConfig) -> None:
    """Refuse bad values and combinations; one ConfigError lists every problem with its key."""
    c = _Checker()
    _check_values(cfg, c)
    if c.errors:
        raise ConfigError("; ".join(c.errors))
    labelled_share, pseudo_share = cfg.data.ratio
    uses_pseudo = cfg.method in NEEDS_PSEUDO and pseudo_share > 0
    uses_labelled = cfg.method is Method.vanilla or labelled_share > 0
    c.require(not uses_pseudo or cfg.data.pseudo_labels is not None,
              f"data.pseudo_labels: method {cfg.method.value} needs a pseudo-label store "
              "(or set data.ratio=[1,0] to train on the labelled sets alone)")
    c.require(not uses_labelled or bool(cfg.data.labelled),
              f"data.labelled: method {cfg.method.value} with data.ratio {cfg.data.ratio} needs at least one "
              "labelled set ({path: ..., task: ...})")
    c.require(cfg.method is not Method.refined_labels or cfg.data.refiner is not None,
              "data.refiner: method refined_labels needs the refiner checkpoint (sumseg refiner train)")
    if c.errors:
        raise ConfigError("; ".join(c.errors))


__all__ = [
    "DataConfig", "LabelledSet", "LoraConfig", "Method", "Mode", "ModelConfig", "OptimConfig", "Precision",
    "RoundsConfig", "RunConfig", "Schedule", "TrainConfig", "check_config", "config_changes", "from_dict",
    "load_config", "load_structured", "to_dict", "to_yaml",
]
