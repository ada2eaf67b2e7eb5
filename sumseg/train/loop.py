"""The training loop: optimiser, schedule, clipping, NaN guard, checkpoints, resume, logs.

The loop knows nothing about SAM or prompts: it calls ``step_fn(step)`` for a dict of named
losses (``loss`` is minimised) and does the rest. Every step's randomness is a function of
(seed, step, rank) (see :mod:`sumseg.train.data`), so resuming needs only the weights, the
optimiser and the schedule — and a resumed run equals an uninterrupted one bit for bit.

Run folder: ``last.ckpt`` (a sumseg checkpoint: loadable by ``build_model``, ``sumseg eval`` and
``sumseg export``; written atomically), ``state/step_<n>.pt`` (optimiser + schedule of that step,
``torch.load(weights_only=True)``; written before ``last.ckpt``, older ones removed after),
``metrics.jsonl`` (one JSON object per logged step), ``train.lock`` (held while a run trains).
"""

from __future__ import annotations

import fcntl
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from sumseg.atomic import atomic_path
from sumseg.errors import ConfigError, TrainingError
from sumseg.models.checkpoint import read_checkpoint, save_checkpoint
from sumseg.models.sum_sam import SumSam

StepFn = Callable[[int], dict[str, Tensor]]


@dataclass
class LoopConfig:
    """Optimisation and bookkeeping of one run."""

    steps: int
    lr: float = 1e-5
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    save_every: int = 200
    log_every: int = 10


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
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``train.lock`` in ``run_dir``; a second run into the same folder is refused."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{run_dir} is in use by another training run (train.lock is held)") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _state_path(run_dir: Path, step: int) -> Path:
    return run_dir / "state" / f"step_{step:08d}.pt"


def save_run(run_dir: Path, model: SumSam, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
             step: int, config: Mapping) -> None:
    """State of ``step`` first, then ``last.ckpt`` (the commit point), then older states removed."""
    state = _state_path(run_dir, step)
    state.parent.mkdir(exist_ok=True)
    with atomic_path(state) as tmp:
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp)
    save_checkpoint(run_dir / "last.ckpt", model, step=step, config=config)
    for old in state.parent.glob("step_*.pt"):
        if old != state:
            old.unlink()


def resume_run(run_dir: Path, model: SumSam, opt: torch.optim.Optimizer,
               sched: torch.optim.lr_scheduler.LambdaLR) -> int:
    """Load ``last.ckpt`` and its state into the model/optimiser/schedule; return the next step (0 if new)."""
    ckpt = run_dir / "last.ckpt"
    if not ckpt.exists():
        return 0
    tensors, meta = read_checkpoint(ckpt)
    step = 0 if meta is None else meta.step
    state_file = _state_path(run_dir, step)
    if not state_file.is_file():
        raise TrainingError(f"{ckpt} is at step {step} but {state_file} is missing: cannot resume exactly")
    model.load_state_dict(tensors, strict=True)
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return step + 1


def _append_metrics(path: Path, row: dict, resumed_from: int | None) -> None:
    if resumed_from is not None and path.exists():  # drop rows of steps that will be redone
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] < resumed_from]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(k + "\n" for k in keep))
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _finite_or_stop(losses: dict[str, Tensor], step: int, run_dir: Path) -> None:
    bad = [k for k, v in losses.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingError(f"non-finite {', '.join(bad)} at step {step}; stopped, {run_dir / 'last.ckpt'} "
                            "keeps the last good weights (lower the lr or check the data)")


def run_loop(step_fn: StepFn, model: SumSam, params: list[dict], cfg: LoopConfig, run_dir: Path,
             config: Mapping, images_per_step: int, progress: bool = True) -> dict[str, float]:
    """Train ``model`` for ``cfg.steps`` steps into ``run_dir``, resuming from ``last.ckpt`` if there.

    ``params``: optimiser parameter groups of the trainable parameters. Returns the last logged row.
    """
    run_dir = Path(run_dir)
    opt, sched = build_optimizer(params, cfg)
    trainable = [p for g in params for p in g["params"]]
    with run_lock(run_dir):
        start = resume_run(run_dir, model, opt, sched)
        resumed_from: int | None = start if start else None
        (run_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
        row: dict[str, float] = {}
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", disable=not progress)
        tic, done = time.perf_counter(), 0
        for step in bar:
            losses = step_fn(step)
            _finite_or_stop(losses, step, run_dir)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            sched.step()
            done += 1
            last = step + 1 == cfg.steps
            if step % cfg.log_every == 0 or last:
                rate = done * images_per_step / (time.perf_counter() - tic)
                row = {"step": step, "lr": sched.get_last_lr()[0], "grad_norm": float(grad_norm),
                       "images_per_s": rate, **{k: float(v.detach()) for k, v in losses.items()}}
                _append_metrics(run_dir / "metrics.jsonl", row, resumed_from)
                resumed_from = None
                bar.set_postfix(loss=f"{row['loss']:.3f}", iou=f"{row.get('train_iou', 0):.3f}", img_s=f"{rate:.1f}")
            if (step + 1) % cfg.save_every == 0 or last:
                save_run(run_dir, model, opt, sched, step, config)
    return row
