"""The settings of ``sumseg pretrain`` (docs/tiny-foundation.md): everything that determines the
pretrained checkpoint, saved in it as ``{"pretrain": asdict(cfg)}``.

A flat record, as the shipped ``tiny_foundation`` checkpoint stores it (its metadata must keep
equalling ``PretrainConfig()``'s). The training loop is not described twice: :attr:`optim` and
:attr:`run` give the shared sections (:mod:`sumseg.config.sections`) that this record sets, the
rest at their defaults, and ``sumseg.train.loop.loop_config(cfg.optim, cfg.run)`` translates them
as it does for ``sumseg train`` and ``sumseg refiner train``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sumseg.config.checker import Checker
from sumseg.config.defaults import P_BOX
from sumseg.config.sections import MAX_STEPS, OptimConfig, RunConfig

PRETRAIN_FLAGS = {"steps": "--steps", "seed": "--seed"}
"""The flag of each ``sumseg pretrain`` option (:func:`check_pretrain_options`)."""


@dataclass
class PretrainConfig:
    """Everything that determines the pretrained checkpoint (saved in it)."""

    world_seed: int = 0
    images: int = 2000
    seed: int = 0
    steps: int = 1400
    images_per_step: int = 4
    masks_per_image: int = 6
    corrections: int = 2
    final_round: bool = False
    p_box: float = P_BOX
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    save_every: int = 100

    @property
    def optim(self) -> OptimConfig:
        """The ``optim`` section of this run (cosine schedule, betas and accumulation at their defaults)."""
        return OptimConfig(lr=self.lr, weight_decay=self.weight_decay, warmup=self.warmup,
                           min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip, steps=self.steps)

    @property
    def run(self) -> RunConfig:
        """The ``run`` section of this run (device auto, fp32, a log row every 10 steps)."""
        return RunConfig(seed=self.seed, save_every=self.save_every)


def check_pretrain_options(c: Checker, steps: int | None, seed: int, keys: dict[str, str] = PRETRAIN_FLAGS) -> None:
    """``sumseg pretrain``'s numbers, with the bounds and wording of ``optim.steps`` and ``run.seed``
    (:func:`sumseg.config.sections.check_optim`, :func:`~sumseg.config.sections.check_run`); ``steps``
    None: the default."""
    if steps is not None:
        c.number(keys["steps"], steps, 1, MAX_STEPS)
    c.number(keys["seed"], seed, 0, 2**63 - 1)
