"""``SumPredictor``: the ``SamPredictor`` API with a task prompt.

``predict`` / ``predict_torch`` take ``task`` (a task id, or None for stock SAM behaviour). A
task applies to every call, mask-prompted follow-up rounds included — as in the official code
and in the stock model that ``sumseg export`` writes for that task.
Works for the SAM, HQ-SAM and SAM 2.1 models built by :func:`sumseg.build_model`: image pixels are
mapped into the input frame by the model's own :attr:`~sumseg.models.interface.PromptableModel.frame`
(``ResizeLongestSide`` for SAM 1, exactly as ``SamPredictor``; the image squashed to S×S for SAM 2).
"""

from __future__ import annotations

import enum
import numbers
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike
from segment_anything import SamPredictor

from sumseg.errors import ConfigError
from sumseg.models.sum_sam import ImageFeatures, SumSam
from sumseg.prompts.batch import PromptBatch

if TYPE_CHECKING:
    from sumseg.models.sum_sam2 import SumSam2


class _PredictorTask(enum.Enum):
    """Marker for "the predictor's own task" (distinct from ``None`` = no task prompt)."""

    DEFAULT = "default"


DEFAULT = _PredictorTask.DEFAULT
TaskChoice = int | None | _PredictorTask


class SumPredictor(SamPredictor):
    """Embeds an image once, then predicts masks from prompts (+ an optional task id).

    ``task`` given to the constructor is the default for every call; a ``task=`` argument to
    ``predict``/``predict_torch`` overrides it for that call, ``task=None`` included (no task
    prompt). A task must be an int (numpy
    integers too) the model knows, checked where it is given: ConfigError otherwise.
    """

    def __init__(self, model: SumSam | SumSam2, task: int | None = None) -> None:
        self.sum_model = model
        self.task = self._checked(task)
        self._call_task: TaskChoice = DEFAULT
        self.image_features: ImageFeatures | None = None
        # SamPredictor's own state, without its Sam-only constructor: the backbone module (``model.device``)
        # and the model's image → input-frame geometry as ``transform`` (``predict`` maps prompts with it)
        self.model = model.sam if isinstance(model, SumSam) else model.sam2
        self.transform = model.frame
        self.reset_image()

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """``SamPredictor.set_image``: an (H, W, 3) uint8 image, mapped by the model's frame, then embedded."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
        if image_format != getattr(self.model, "image_format", "RGB"):
            image = image[..., ::-1]
        input_image = torch.as_tensor(self.transform.apply_image(image), device=self.device)
        self.set_torch_image(input_image.permute(2, 0, 1).contiguous()[None, :, :, :], image.shape[:2])

    def _checked(self, task: object) -> int | None:
        """``task`` as an int id this model knows, or None; anything else (1.9, True, "1") raises ConfigError."""
        if task is None:
            return None
        if not isinstance(task, numbers.Integral) or isinstance(task, bool | np.bool_):
            raise ConfigError(f"task must be a task id (an int) or None, got {task!r} ({type(task).__name__})")
        if int(task) not in self.sum_model.task_prompts.task_ids:
            raise ConfigError(f"unknown task id(s) [{int(task)}]; this model knows tasks "
                              f"{list(self.sum_model.task_prompts.task_ids)}")
        return int(task)

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed a (1, 3, h, w) image already mapped by the model's frame (SAM 1: resized with
        ``ResizeLongestSide``, long side = S; SAM 2: any size, the model squashes it)."""
        frame = self.transform
        if transformed_image.ndim != 4 or transformed_image.shape[1] != 3 or not frame.takes(
                tuple(transformed_image.shape[2:])):
            raise ValueError(f"set_torch_image input must be 1x3xHxW with {frame.describe()}")
        self.reset_image()
        self.original_size = original_image_size
        self.input_size = frame.input_size(tuple(transformed_image.shape[-2:]))  # SAM 1: its own (h, w)
        self.image_features = self.sum_model.encode(self.sum_model.preprocess(transformed_image))
        self.features = self.image_features.embeddings
        self.is_image_set = True

    def reset_image(self) -> None:
        super().reset_image()
        self.image_features = None

    def predict(  # noqa: ANN201 - SamPredictor's return
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        task: TaskChoice = DEFAULT,
    ):
        """``SamPredictor.predict`` with a task prompt: prompts in original-image pixels, as numpy arrays
        or anything ``np.asarray`` takes (``point_coords=[[x, y]], point_labels=[1]``, ``box=[x0, y0, x1, y1]``)."""
        self._call_task = task
        try:
            return super().predict(*(None if a is None else np.asarray(a)
                                     for a in (point_coords, point_labels, box, mask_input)),
                                   multimask_output=multimask_output, return_logits=return_logits)
        finally:
            self._call_task = DEFAULT

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        task: TaskChoice = DEFAULT,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``SamPredictor.predict_torch`` with a task prompt: masks (B, C, H, W), IoUs (B, C), low-res (B, C, h, w)."""
        features, chosen = self._features(), self._task_of(task)
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            points = (point_coords, point_labels)
        low_res, iou = self.sum_model.decode(features, points, boxes, mask_input, task=chosen,
                                             multimask=multimask_output)
        masks = self.sum_model.upscale(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.sum_model.mask_threshold
        return masks, iou, low_res

    @torch.no_grad()
    def predict_prompts(self, prompts: PromptBatch, mask_input: torch.Tensor | None = None, multimask: bool = True,
                        task: TaskChoice = DEFAULT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model on N prompts of the set image (the one prompt type, input frame, image_index 0):
        logits at the image's size (N, M, H, W), IoUs (N, M), low-res logits (N, M, L, L)."""
        features, chosen = self._features(), self._task_of(task)
        low_res, iou = self.sum_model(features, prompts, mask_input, chosen, multimask)
        return self.sum_model.upscale(low_res, self.input_size, self.original_size), iou, low_res

    def _features(self) -> ImageFeatures:
        if not self.is_image_set or self.image_features is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        return self.image_features

    def _task_of(self, task: TaskChoice) -> int | None:
        """The task of this call: ``task``, else the one given to ``predict``, else the predictor's own."""
        if task is DEFAULT:
            task = self._call_task
        return self.task if isinstance(task, _PredictorTask) else self._checked(task)
