"""The backbones sumseg implements, as one type for the rooms that take any of them.

``Backbone`` is what ``pipeline/``, ``train/`` and ``evaluate/`` annotate a model with: an
``nn.Module`` implementing :class:`~sumseg.models.interface.PromptableModel` (they call the
interface's members, plus ``nn.Module``'s ``parameters`` / ``state_dict``). A new backbone is one more
implementation of the interface and one more member of this union; nothing after ``models/`` changes.
"""

from __future__ import annotations

from typing import TypeAlias

from sumseg.models.sum_sam import SumSam
from sumseg.models.sum_sam2 import SumSam2

Backbone: TypeAlias = SumSam | SumSam2
"""SAM 1 / HQ-SAM (:class:`SumSam`) or SAM 2.1 (:class:`SumSam2`)."""
