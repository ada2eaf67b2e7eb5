"""Task prompts: one learnable embedding per task id, added to SAM's dense prompt embedding.

The embeddings start at zero, so an untrained task-conditioned model is stock SAM bit for bit
(``x + 0.0 == x``). The caller decides when a task prompt applies: sumseg's interactive rounds
pass it on every prompt-encoder call (as the official code does; ``rounds.task_prompt=first``
keeps it to round 1 as an ablation). Rows can be *fixed* (:meth:`TaskPrompts.fix`): they keep
their value and get no gradient — training fixes task 0 (general), the official
``zero_token_no_grad``, so task 0 stays the foundation's own prompt path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from sumseg.errors import ConfigError
from sumseg.tasks import DEFAULT_TASKS, TASK_NAMES

__all__ = ["DEFAULT_TASKS", "TASK_NAMES", "TASK_ROUNDS", "TaskArg", "TaskPrompts", "TaskRounds"]


TaskRounds = Literal["every", "first"]
"""Interactive rounds that get the task prompt: every prompt-encoder call (published), or round 1 only."""
TASK_ROUNDS: tuple[str, ...] = ("every", "first")

TaskArg = int | torch.Tensor | None
"""A task for a batch of N prompts: one id for all, a (N,) long tensor of ids, or None (no task prompt)."""


class TaskPrompts(nn.Module):
    """Holds ``task_embeddings`` (T, C): row k is the prompt of task id ``task_ids[k]``."""

    _row_of_task: torch.Tensor  # (max id + 1,) row of each task id, -1 for ids not declared
    _fixed: torch.Tensor  # (T,) bool: rows that keep their value (no gradient)

    def __init__(self, task_ids: Sequence[int], dim: int) -> None:
        super().__init__()
        ids = tuple(int(t) for t in task_ids)
        if len(set(ids)) != len(ids) or any(t < 0 for t in ids):
            raise ConfigError(f"task ids must be distinct non-negative integers, got {list(task_ids)}")
        self.task_ids = ids
        self.task_embeddings = nn.Parameter(torch.zeros(len(ids), dim))
        lookup = torch.full((max(ids, default=-1) + 1,), -1, dtype=torch.long)
        lookup[list(ids)] = torch.arange(len(ids))
        self.register_buffer("_row_of_task", lookup, persistent=False)
        self.register_buffer("_fixed", torch.zeros(len(ids), dtype=torch.bool), persistent=False)

    def fix(self, task_ids: Sequence[int]) -> None:
        """Fix the prompts of ``task_ids`` (ids this model knows; the others become free again)."""
        self._fixed.zero_()
        if task_ids:
            self._fixed[self.rows(torch.as_tensor(list(task_ids)), len(task_ids))] = True

    def table(self) -> torch.Tensor:
        """(T, C) prompts; the fixed rows detached (they receive a zero gradient)."""
        if not bool(self._fixed.any()):
            return self.task_embeddings
        return torch.where(self._fixed[:, None], self.task_embeddings.detach(), self.task_embeddings)

    def rows(self, task: int | torch.Tensor, n: int) -> torch.Tensor:
        """Row indices (n,) of ``task`` (an id or (n,) ids); unknown ids raise ConfigError."""
        ids = torch.as_tensor(task, dtype=torch.long, device=self._row_of_task.device).reshape(-1)
        unknown = (ids < 0) | (ids >= len(self._row_of_task))
        rows = self._row_of_task[ids.clamp(0, len(self._row_of_task) - 1)]
        unknown |= rows < 0
        if bool(unknown.any()):
            bad = sorted({int(t) for t in ids[unknown].tolist()})
            raise ConfigError(f"unknown task id(s) {bad}; this model knows tasks {list(self.task_ids)}")
        return rows.expand(n) if rows.numel() == 1 else rows

    def embedding(self, task: int) -> torch.Tensor:
        """The (C,) prompt of one task id."""
        return self.task_embeddings[self.rows(task, 1)[0]]

    def forward(self, dense: torch.Tensor, task: TaskArg) -> torch.Tensor:
        """Add the task prompt to dense prompt embeddings (N, C, h, w); ``task=None`` adds nothing."""
        if task is None:
            return dense
        rows = self.rows(task, dense.shape[0])
        return dense + self.table()[rows][:, :, None, None]
