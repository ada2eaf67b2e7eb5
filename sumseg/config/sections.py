"""The sections the config trees share: ``model``, ``optim`` and ``run`` (and their checks).

``sumseg train`` uses all three; ``sumseg refiner train`` uses ``model`` and ``run`` as they are and
an ``optim`` section with the same key names (:class:`~sumseg.config.refiner.RefinerOptim`);
``sumseg pretrain`` derives its ``optim`` and ``run`` sections from its flat record
(:class:`~sumseg.config.pretrain.PretrainConfig`). ``sumseg.train.loop.loop_config(optim, run)``
is the one translation of the two into the training loop's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sumseg.config.checker import Checker
from sumseg.model_names import model_problems
from sumseg.tasks import DEFAULT_TASKS, TASK_ID_LIMIT


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


MAX_STEPS = 100_000_000
DEVICES = ("auto", "cpu", "cuda")
"""What ``run.device`` and ``--device`` accept."""


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
