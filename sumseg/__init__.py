"""sumseg: uncertainty-aware fine-tuning of Segment Anything (SUM).

The public names below are imported on first use (:mod:`sumseg.lazy`), so ``import sumseg``
does not import torch.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from sumseg.lazy import lazy_exports

try:
    __version__ = version("sumseg")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+source"

if TYPE_CHECKING:
    from sumseg.models.checkpoint import build_model, load_checkpoint, save_checkpoint
    from sumseg.predictor import SumPredictor

__getattr__, __dir__ = lazy_exports(__name__, {
    "SumPredictor": "sumseg.predictor",
    "build_model": "sumseg.models.checkpoint",
    "load_checkpoint": "sumseg.models.checkpoint",
    "save_checkpoint": "sumseg.models.checkpoint",
})

__all__ = ["SumPredictor", "build_model", "load_checkpoint", "save_checkpoint", "__version__"]
