"""The training loop: optimiser, schedule, AMP, DDP, accumulation, clipping, NaN guard, checkpoints, logs.

The loop knows nothing about SAM or prompts. It is handed a *step module* (an ``nn.Module``
whose ``forward`` is one whole step and returns a dict of named scalar losses; ``loss`` is
minimised) and an *inputs* function that builds the arguments of that ``forward`` for one call;
it runs the calls (under ``torchrun``, in DDP), the backward passes and the updates.

Every call's randomness is a function of (seed, draw, rank) (see :mod:`sumseg.train.schedule`; the
global torch generator is re-seeded from the same triple before each call), so resuming needs
only the weights, the optimiser, the schedule and the loss scale — and a resumed run equals an
uninterrupted one bit for bit (on CPU; on a GPU as far as its kernels are deterministic).

Run folder: ``last.ckpt`` (a sumseg checkpoint: loadable by ``build_model``, ``sumseg eval`` and
``sumseg export``; written atomically; the commit point), ``state/step_<n>.pt`` (everything a resume
needs: the trained tensors, optimiser, schedule, loss scaler; ``torch.load(weights_only=True)``;
written before ``last.ckpt``, older ones removed after), ``metrics.jsonl`` (one JSON object per
logged step), ``tensorboard/`` (the same scalars as TensorBoard events), ``config.json`` and
``train.lock`` (held by rank 0 while a run trains).
"""

from __future__ import annotations

import fcntl
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sumseg.atomic import atomic_path
from sumseg.config import OptimConfig, RefinerOptim, RunConfig, Schedule
from sumseg.errors import CheckpointError, ConfigError, TrainingError
from sumseg.models.backbones import Backbone
from sumseg.models.checkpoint import read_checkpoint, save_checkpoint
from sumseg.train.distributed import Replica, all_agree, all_mean, barrier, no_sync, replicas_agree, setup, wrap
from sumseg.train.precision import autocast, check_precision, grad_scaler
from sumseg.train.progress import RunLog
from sumseg.train.run_state import check_module_state, check_optimizer_state, check_settings_state, read_state

InputFn = Callable[[int, Replica], tuple[Any, ...]]
"""``inputs(draw, replica)``: the positional arguments of the step module's ``forward`` for call
number ``draw`` (= step · accumulate + micro-step) on ``replica``, tensors on ``replica.device``.
Draw the data with ``draw_samples(source, seed, draw, replica.rank, replica.world, ...)`` so each
rank sees its own images."""

SaveFn = Callable[[Path, int], None]
"""``save_model(path, step)``: write ``last.ckpt`` (atomically) for ``step``, e.g. with LoRA
adapters merged into a copy; the default is ``save_checkpoint(path, model, step, config)``."""


@dataclass
class LoopConfig:
    """Optimisation and bookkeeping of one run.

    ``accumulate``: step-module calls per optimiser step on each rank (their gradients add up;
    each call's loss is divided by ``accumulate``). ``precision``: fp32 | bf16 | fp16 (see
    :mod:`sumseg.train.precision`). ``device``: auto | cpu | cuda. ``seed``: the global torch
    generator is re-seeded from (seed, draw, rank) before each call (dropout and the like).
    """

    steps: int
    lr: float = 1e-5
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    save_every: int = 200
    log_every: int = 10
    accumulate: int = 1
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 0
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "save_every", "log_every", "accumulate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LoopConfig.{name} must be >= 1, got {getattr(self, name)}")


def loop_config(optim: OptimConfig | RefinerOptim, run: RunConfig) -> LoopConfig:
    """The loop's settings from a config tree's ``optim`` and ``run`` sections: the one translation, used by
    ``sumseg train``, ``sumseg refiner train`` and ``sumseg pretrain`` (``PretrainConfig.optim`` / ``.run``).
    A constant schedule (``optim.schedule``, ``sumseg train`` only) is the cosine's end at 1."""
    constant = isinstance(optim, OptimConfig) and optim.schedule is Schedule.constant
    return LoopConfig(
        steps=optim.steps, lr=optim.lr, weight_decay=optim.weight_decay, betas=(optim.betas[0], optim.betas[1]),
        warmup=optim.warmup, min_lr_ratio=1.0 if constant else optim.min_lr_ratio, grad_clip=optim.grad_clip,
        save_every=run.save_every, log_every=run.log_every, accumulate=optim.accumulate,
        precision=run.precision.value, device=run.device, seed=run.seed)


def lr_factor(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def build_optimizer(
    groups: list[dict], cfg: LoopConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over parameter ``groups`` (each may carry its own ``lr``) and the warm-up + cosine schedule."""
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    return opt, sched


@contextmanager
def run_lock(run_dir: Path, replica: Replica | None = None) -> Iterator[None]:
    """Hold ``train.lock`` in ``run_dir`` (rank 0 only); a second run into the same folder is refused
    on every rank of the job that asked."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        refused = 0
        if replica is None or replica.is_main:
            f = stack.enter_context(open(run_dir / "train.lock", "a+"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stack.callback(fcntl.flock, f, fcntl.LOCK_UN)
            except BlockingIOError:
                refused = 1
        if replica is not None:
            refused = all_agree(refused, replica)[1]
        if refused:
            raise ConfigError(f"{run_dir} is in use by another training run (train.lock is held)")
        yield


def _state_path(run_dir: Path, step: int) -> Path:
    return run_dir / "state" / f"step_{step:08d}.pt"


def _trained_state(module: nn.Module) -> dict[str, Tensor]:
    """``module``'s state without its frozen parameters (those come back from how it was built)."""
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k not in frozen}


def save_run(run_dir: Path, module: nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LambdaLR, scaler: torch.amp.GradScaler, step: int,
             save_model: SaveFn) -> None:
    """State of ``step`` first, then ``last.ckpt`` (the commit point), then older states removed."""
    state = _state_path(run_dir, step)
    state.parent.mkdir(exist_ok=True)
    with atomic_path(state) as tmp:
        torch.save({"step": step, "module": _trained_state(module), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict()}, tmp)
    save_model(run_dir / "last.ckpt", step)
    for old in state.parent.glob("step_*.pt"):
        if old != state:
            old.unlink()


def _load_module(module: nn.Module, state: dict, ckpt: Path) -> None:
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    missing, unexpected = module.load_state_dict(state["module"], strict=False)
    if set(missing) != frozen or unexpected:
        raise TrainingError(f"{ckpt.parent}: the run was trained with another set of trainable parameters "
                            f"({len(unexpected)} unexpected, {len(set(missing) ^ frozen)} differ): was the "
                            "mode changed? Use a new run folder")


def resume_run(run_dir: Path, module: nn.Module, model: Backbone, opt: torch.optim.Optimizer,
               sched: torch.optim.lr_scheduler.LambdaLR, scaler: torch.amp.GradScaler) -> int:
    """Load the state of ``last.ckpt``'s step into module/optimiser/schedule/scaler; return the next step (0 if new)."""
    ckpt = run_dir / "last.ckpt"
    if not ckpt.exists():
        return 0
    _, meta = read_checkpoint(ckpt)
    step = 0 if meta is None else meta.step
    state_file = _state_path(run_dir, step)
    if not state_file.is_file():
        raise TrainingError(f"{ckpt} holds {step + 1} steps but {state_file} is missing: cannot resume exactly")
    state = read_state(state_file, step)
    check_module_state(module, state["module"], state_file)
    check_settings_state(opt, sched, state, state_file)
    _load_module(module, state, ckpt)
    try:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{state_file}: its optimiser / schedule state does not fit this run "
                              f"({type(e).__name__}: {_first_line(e)}); use a new run folder") from e
    check_optimizer_state(opt, state_file)
    return step + 1


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def _seed_global(seed: int, draw: int, rank: int) -> None:
    """Re-seed torch's global generators (all devices) from (seed, draw, rank)."""
    torch.manual_seed(int(np.random.default_rng([seed, draw, rank, 0x6C6F6F70]).integers(2**62)))


@dataclass
class _StepRunner:
    """What one optimiser step needs (built once per run by :func:`run_loop`)."""

    net: nn.Module  # the step module, in DDP when distributed
    inputs: InputFn
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    trainable: list[nn.Parameter]
    cfg: LoopConfig
    replica: Replica

    def step(self, step: int) -> tuple[dict[str, float], float]:
        """Forward + backward of ``accumulate`` calls, then clip and update. Returns the losses (mean
        over calls and ranks) and the gradient norm; raises :class:`TrainingError` before updating
        when a loss (on any rank) or the gradient is not finite."""
        cfg, rep = self.cfg, self.replica
        self.opt.zero_grad(set_to_none=True)
        names: list[str] = []
        total = torch.zeros((), device=rep.device)
        for micro in range(cfg.accumulate):
            draw = step * cfg.accumulate + micro
            _seed_global(cfg.seed, draw, rep.rank)
            args = self.inputs(draw, rep)
            with no_sync(self.net, skip=micro + 1 < cfg.accumulate):
                with autocast(cfg.precision, rep.device):
                    losses = self.net(*args)
                self.scaler.scale(losses["loss"] / cfg.accumulate).backward()
            names = list(losses)
            total = total + torch.stack([losses[k].detach().float() for k in names])
        means = all_mean(total / cfg.accumulate, rep).tolist()  # one collective, also spreads a NaN
        self.scaler.unscale_(self.opt)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip))
        bad = [k for k, v in zip(names, means, strict=True) if not math.isfinite(v)]
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():  # fp16: the scaler skips the step
            bad.append("gradient norm")
        if bad:
            raise TrainingError(f"non-finite {', '.join(bad)} in step {step + 1} of {cfg.steps} "
                                "(lower the lr or check the data)")
        self.scaler.step(self.opt)
        self.scaler.update()
        return dict(zip(names, means, strict=True)), grad_norm


def _check_weights(trainable: list[nn.Parameter], step: int, replica: Replica) -> None:
    """Before a save: finite weights, the same on every replica."""
    if not all(bool(torch.isfinite(p).all()) for p in trainable):
        raise TrainingError(f"non-finite weights after step {step + 1} (the update overflowed: lower the lr)")
    if not replicas_agree(trainable, replica):
        raise TrainingError(f"the {replica.world} replicas hold different weights after step {step + 1}: a gradient "
                            "bypassed DDP (the step module must compute every loss inside its forward)")


def run_loop(step_module: nn.Module, inputs: InputFn, model: Backbone, params: list[dict], cfg: LoopConfig,
             run_dir: Path, config: Mapping, images_per_call: int, progress: bool = True,
             save_model: SaveFn | None = None) -> dict[str, float]:
    """Train for ``cfg.steps`` optimiser steps into ``run_dir``, resuming from ``last.ckpt`` if there.

    Same call alone or under ``torchrun`` (then every rank calls it; see :mod:`.distributed`).
    step_module: an ``nn.Module`` whose ``forward(*inputs(draw, replica))`` returns named scalar
    losses with ``loss`` the one minimised (e.g. :class:`~sumseg.train.step.InteractiveStep`);
    it is moved to the device, put in train mode and wrapped in DDP here.
    inputs: see :data:`InputFn`. model: the backbone inside ``step_module`` that
    ``last.ckpt`` holds (written by ``save_model`` when given, see :data:`SaveFn`).
    params: optimiser parameter groups of the trainable parameters (each may carry an ``lr``).
    config: the resolved run config (``config.json`` and the checkpoint metadata).
    images_per_call: images in one call on one rank (for images/s).
    Returns the last logged row (losses averaged over ranks). A non-finite loss, gradient or
    weight stops the run with :class:`TrainingError` before ``last.ckpt`` is touched.
    """
    replica = setup(cfg.device)
    check_precision(cfg.precision, replica.device)
    run_dir = Path(run_dir)
    step_module.to(replica.device).train()
    opt, sched = build_optimizer(params, cfg)
    scaler = grad_scaler(cfg.precision, replica.device)

    def save(path: Path, step: int) -> None:
        save_checkpoint(path, model, step=step, config=config)

    with run_lock(run_dir, replica):
        barrier(replica)  # rank 0 holds the lock before anyone reads the folder
        start = resume_run(run_dir, step_module, model, opt, sched, scaler)
        if len(set(all_agree(start, replica))) > 1:
            raise TrainingError(f"ranks resume {run_dir} from different steps: the run folder must be on a "
                                "file system every node shares")
        trainable = [p for g in params for p in g["params"]]
        trainer = _StepRunner(wrap(step_module, replica), inputs, opt, scaler, trainable, cfg, replica)
        with RunLog(run_dir, config, cfg, replica, start, images_per_call, progress) as log:
            for step in range(start, cfg.steps):
                try:
                    losses, grad_norm = trainer.step(step)
                    with warnings.catch_warnings():  # fp16: a step the scaler skipped still advances the schedule
                        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
                        sched.step()
                    last = step + 1 == cfg.steps
                    log.step(step, losses, float(sched.get_last_lr()[0]), grad_norm, force=last)
                    if (step + 1) % cfg.save_every == 0 or last:
                        _check_weights(trainable, step, replica)
                        if replica.is_main:
                            save_run(run_dir, step_module, opt, sched, scaler, step, save_model or save)
                        log.saved(step)
                        barrier(replica)
                except TrainingError as e:
                    raise TrainingError(f"{e}; stopped. {log.kept()}") from None
    return log.row
