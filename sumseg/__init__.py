"""sumseg: uncertainty-aware fine-tuning of Segment Anything (SUM).

The public names below are imported on first use (:mod:`sumseg.lazy`), so ``import sumseg``
does not import torch.
"""

from typing import TYPE_CHECKING

from sumseg.lazy import lazy_exports
from sumseg.version import __version__

if TYPE_CHECKING:
    from sumseg.models.checkpoint import build_model, load_checkpoint, save_checkpoint
    from sumseg.models.predictor import SumPredictor

__getattr__, __dir__ = lazy_exports(__name__, {
    "SumPredictor": "sumseg.models.predictor",
    "build_model": "sumseg.models.checkpoint",
    "load_checkpoint": "sumseg.models.checkpoint",
    "save_checkpoint": "sumseg.models.checkpoint",
})

__all__ = ["SumPredictor", "build_model", "load_checkpoint", "save_checkpoint", "__version__"]
