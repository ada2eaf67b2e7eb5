"""Models: registry, task prompts, the task-conditioned SAM wrapper, checkpoints, export."""

from sumseg.models.checkpoint import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from sumseg.models.registry import MODEL_NAMES, build_sam
from sumseg.models.sum_sam import ImageFeatures, SumSam
from sumseg.models.task_prompts import DEFAULT_TASKS, TASK_NAMES, TaskPrompts

__all__ = [
    "DEFAULT_TASKS",
    "MODEL_NAMES",
    "TASK_NAMES",
    "ImageFeatures",
    "SumSam",
    "TaskPrompts",
    "build_model",
    "build_sam",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]
