"""SumPredictor's task argument is checked where it is given, in the constructor and in each call."""

from __future__ import annotations

import numpy as np
import pytest

from sumseg import SumPredictor
from sumseg.errors import ConfigError
from sumseg.models.sum_sam import SumSam
from tests.conftest import randomise_task_prompts


@pytest.mark.parametrize("task", [1.9, True, "1", 9, -1])
def test_bad_task_is_refused_by_the_constructor(tiny_model: SumSam, task: object) -> None:
    with pytest.raises(ConfigError, match="task"):
        SumPredictor(tiny_model, task=task)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", [1.0, False, 7])
def test_bad_task_is_refused_by_predict(tiny_model: SumSam, rgb_image: np.ndarray, task: object) -> None:
    predictor = SumPredictor(tiny_model)
    predictor.set_image(rgb_image)
    with pytest.raises(ConfigError, match="task"):
        predictor.predict(point_coords=np.array([[10, 10]]), point_labels=np.array([1]), task=task)  # type: ignore[arg-type]


def test_numpy_integer_task_is_the_same_task(rgb_image: np.ndarray) -> None:
    from sumseg import build_model

    model = randomise_task_prompts(build_model("tiny"))
    kw = dict(point_coords=np.array([[60, 40]]), point_labels=np.array([1]), return_logits=True)
    a, b = SumPredictor(model, task=2), SumPredictor(model, task=np.int64(2))  # type: ignore[arg-type]
    a.set_image(rgb_image)
    b.set_image(rgb_image)
    np.testing.assert_array_equal(a.predict(**kw)[2], b.predict(**kw)[2])
    np.testing.assert_array_equal(a.predict(**kw)[2], a.predict(**kw, task=np.int32(2))[2])


def test_prompts_may_be_lists(tiny_model: SumSam, rgb_image: np.ndarray) -> None:
    """The README's call: plain Python lists (and tuples) work as numpy arrays do."""
    predictor = SumPredictor(tiny_model, task=1)
    predictor.set_image(rgb_image)
    masks, scores, low_res = predictor.predict(point_coords=[[60, 40]], point_labels=[1])
    ref = predictor.predict(point_coords=np.array([[60, 40]]), point_labels=np.array([1]))
    assert masks.shape == (3, *rgb_image.shape[:2]) and scores.shape == (3,) and low_res.shape[0] == 3
    for got, want in zip((masks, scores, low_res), ref, strict=True):
        np.testing.assert_array_equal(got, want)
    boxed = predictor.predict(point_coords=((60, 40),), point_labels=(1,), box=[20, 10, 120, 90],
                              mask_input=low_res[:1].tolist(), multimask_output=False)
    ref = predictor.predict(point_coords=np.array([[60, 40]]), point_labels=np.array([1]),
                            box=np.array([20, 10, 120, 90]), mask_input=low_res[:1], multimask_output=False)
    for got, want in zip(boxed, ref, strict=True):
        np.testing.assert_array_equal(got, want)
