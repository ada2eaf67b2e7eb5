"""What a training run reports (rank 0 only): ``metrics.jsonl``, TensorBoard events, a progress bar.

``metrics.jsonl``: one JSON object per logged step (``step``: its 0-based index, ``lr``, ``grad_norm``,
``images_per_s`` and every loss of the step module, averaged over accumulation calls and ranks).
On resume the rows of steps that will be redone are dropped first, and TensorBoard is told to
purge its events from the resumed step on, so both read as one uninterrupted run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tqdm import tqdm

from sumseg.atomic import atomic_path, json_text, writing
from sumseg.train.distributed import Replica
from sumseg.train.run_state import kept_rows


def append_metrics(path: Path, row: dict, resumed_from: int | None) -> None:
    """Append ``row`` to ``path``; first, when ``resumed_from`` is given, drop rows of steps ≥ it.

    A NaN or infinite value is written as ``null`` (JSON has no such number); a failed write leaves the
    file as it was (no half row for the next run to read) and raises WriteError naming it."""
    if resumed_from is not None and path.exists():
        keep = kept_rows(path, resumed_from)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(k + "\n" for k in keep))
    finite = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in row.items()}
    data = memoryview((json_text(finite, path) + "\n").encode())
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        start = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data):]
        except BaseException:
            os.ftruncate(fd, start)
            raise
        finally:
            os.close(fd)


class RunLog:
    """Logging of one run from step ``start`` on; a context manager that closes the bar and event files.

    ``cfg`` is the loop's config (``steps``, ``log_every``, ``tensorboard``); ``images_per_call``
    images per step-module call on one rank, for images/s over all ranks and accumulation calls.
    """

    def __init__(self, run_dir: Path, config: Mapping, cfg: Any, replica: Replica, start: int,
                 images_per_call: int, progress: bool) -> None:
        self.run_dir, self.cfg, self.start = run_dir, cfg, start
        self.main = replica.is_main
        self.images_per_step = images_per_call * cfg.accumulate * replica.world
        self.row: dict[str, float] = {}
        self.last_saved: int | None = start - 1 if start else None
        self._resumed_from: int | None = start  # 0 too: rows of a run that failed before its first save go
        self._writer: Any = None
        if self.main:
            with writing(run_dir / "config.json"):
                (run_dir / "config.json").write_text(json_text(config, run_dir / "config.json", indent=2,
                                                               default=str))
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # imported only by runs that write events

                self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start if start else None)
        self._bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not (progress and self.main))
        self._tic, self._done = time.perf_counter(), 0

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._bar.close()
        if self._writer is not None:
            self._writer.close()

    def step(self, step: int, losses: dict[str, float], lr: float, grad_norm: float, force: bool) -> None:
        """Count a finished step; every ``log_every`` steps (and when ``force``) write a row."""
        self._done += 1
        self._bar.update(1)
        if step % self.cfg.log_every and not force:
            return
        rate = self._done * self.images_per_step / (time.perf_counter() - self._tic)
        self.row = {"step": step, "lr": lr, "grad_norm": grad_norm, "images_per_s": rate, **losses}
        if not self.main:
            return
        append_metrics(self.run_dir / "metrics.jsonl", self.row, self._resumed_from)
        self._resumed_from = None
        if self._writer is not None:
            for key, value in self.row.items():
                if key != "step":
                    self._writer.add_scalar(f"train/{key}", value, step)
        self._bar.set_postfix(loss=f"{self.row['loss']:.3f}", iou=f"{self.row.get('train_iou', 0):.3f}",
                              img_s=f"{rate:.1f}")

    def saved(self, step: int) -> None:
        """Record that ``last.ckpt`` now holds ``step``."""
        self.last_saved = step
        if self._writer is not None:
            self._writer.flush()

    def kept(self) -> str:
        """What the run folder holds after a stop, for the error message."""
        if self.last_saved is None:
            return f"no checkpoint was written yet ({self.run_dir} has no last.ckpt)"
        return (f"{self.run_dir / 'last.ckpt'} keeps the last good weights (after {self.last_saved + 1} of "
                f"{self.cfg.steps} steps)")
