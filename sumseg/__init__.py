"""sumseg: uncertainty-aware fine-tuning of Segment Anything (SUM)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sumseg")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+source"

from sumseg.models.checkpoint import build_model, load_checkpoint, save_checkpoint  # noqa: E402
from sumseg.predictor import SumPredictor  # noqa: E402

__all__ = ["SumPredictor", "build_model", "load_checkpoint", "save_checkpoint", "__version__"]
