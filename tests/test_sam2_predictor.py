"""The image → input-frame geometry behind the model interface, and SumPredictor / the interactive
evaluation on a SumSam2 (tiny SAM 2 config, random weights).

The references are independent of sumseg's frames: ``segment_anything``'s ``ResizeLongestSide`` for SAM 1
and transformers' own ``Sam2Processor`` coordinate scaling plus plain ``Sam2Model`` (loaded with the folded
task weights, run on the pixels) for SAM 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide
from torch.nn import functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from sumseg.evaluate.interactive import Instance, evaluate_instances  # noqa: E402
from sumseg.metrics.masks import iou  # noqa: E402
from sumseg.models.predictor import SumPredictor  # noqa: E402
from sumseg.models.sam2_arch import build_sam2  # noqa: E402
from sumseg.models.sum_sam import input_size  # noqa: E402
from sumseg.models.sum_sam2 import SumSam2  # noqa: E402
from sumseg.prompts.batch import click_prompts  # noqa: E402
from sumseg.prompts.frames import InputFrame, LongestSideFrame, SquashFrame  # noqa: E402
from sumseg.prompts.geometry import Click  # noqa: E402
from tests.test_sam2_arch import random_sam2  # noqa: E402

TOL = 1e-5


def _hf_scale(coords: np.ndarray, original_size: tuple[int, int], box: bool = False) -> torch.Tensor:
    """transformers' own mapping of image pixels into SAM 2's S×S input (S = 256)."""
    return transformers.Sam2Processor._normalize_coordinates(None, 256, torch.as_tensor(coords, dtype=torch.float),
                                                             original_size, is_bounding_box=box)


def _model(tasks: tuple[int, ...] = (0, 1, 2)) -> SumSam2:
    model = SumSam2(random_sam2(), tasks, "sam2_tiny").eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        model.task_prompts.task_embeddings.copy_(torch.randn(model.task_prompts.task_embeddings.shape, generator=g))
    return model


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth non-square RGB image with a bright disc (the object) on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h * 0.45) ** 2 + (xx - w * 0.55) ** 2 < (min(h, w) * 0.3) ** 2
    img = rng.random((h, w, 3)) * 80 + disc[..., None] * 150
    return img.astype(np.uint8)


def _gt(image: np.ndarray) -> np.ndarray:
    return image.mean(-1) > 110


def test_frames_are_resize_longest_side_and_sam2s_squash() -> None:
    coords = np.random.default_rng(0).random((3, 2, 2)) * 150
    boxes = np.array([[1.0, 2.0, 30.0, 40.0], [0.0, 0.0, 149.0, 99.0]])
    sam1, ref = LongestSideFrame(256), ResizeLongestSide(256)
    assert np.array_equal(sam1.apply_coords(coords, (100, 150)), ref.apply_coords(coords, (100, 150)))
    assert np.array_equal(sam1.apply_boxes(boxes, (100, 150)), ref.apply_boxes(boxes, (100, 150)))
    assert sam1.input_size((100, 150)) == input_size(100, 150, 256) == (171, 256)
    sam2 = SquashFrame(256)
    assert isinstance(sam1, InputFrame) and isinstance(sam2, InputFrame)
    assert np.allclose(sam2.apply_coords(coords, (100, 150)), _hf_scale(coords, (100, 150)).numpy(), atol=1e-4)
    assert np.allclose(sam2.apply_boxes(boxes, (100, 150)), _hf_scale(boxes, (100, 150), True).numpy(), atol=1e-4)
    assert sam2.input_size((100, 150)) == (256, 256)
    assert not np.allclose(sam1.apply_coords(coords, (100, 150)), sam2.apply_coords(coords, (100, 150)))
    # on a square image the two frames agree
    assert np.allclose(sam1.apply_coords(coords, (128, 128)), sam2.apply_coords(coords, (128, 128)))
    # click_prompts maps with the frame it is given; an int is SAM 1's frame (unchanged)
    clicks = [[Click(10, 20, True)], [Click(30, 5, False)]]
    by_int = click_prompts(clicks, [(1, 2, 30, 40), (0, 0, 149, 99)], (100, 150), 256, "cpu")
    by_frame = click_prompts(clicks, [(1, 2, 30, 40), (0, 0, 149, 99)], (100, 150), sam1, "cpu")
    assert torch.equal(by_int.points, by_frame.points) and torch.equal(by_int.boxes, by_frame.boxes)
    squashed = click_prompts(clicks, [(1, 2, 30, 40), (0, 0, 149, 99)], (100, 150), sam2, "cpu")
    assert squashed.points is not None
    assert torch.allclose(squashed.points[0, 0], torch.tensor([20 * 256 / 150, 10 * 2.56]))


def _pixels(model: SumSam2, image: np.ndarray) -> torch.Tensor:
    return model.preprocess(torch.as_tensor(image).permute(2, 0, 1)[None].float())


def test_predictor_on_sam2_predicts_what_plain_sam2model_predicts() -> None:
    model, image = _model(), _image(96, 160)
    stock = build_sam2("sam2_tiny", seed=1).eval()
    stock.load_state_dict(model.stock_state_dict(1))
    predictor = SumPredictor(model, task=1)
    predictor.set_image(image)
    assert predictor.input_size == (256, 256) and predictor.original_size == (96, 160)
    with torch.no_grad():
        x = _pixels(model, image)
        assert torch.equal(predictor.get_image_embedding(), model.encode(x).embeddings)
        point, box = np.array([[100.0, 40.0]]), np.array([20.0, 10.0, 150.0, 90.0])
        masks, scores, low = predictor.predict(point, [1], box=box, multimask_output=True, return_logits=True)
        ref = stock(pixel_values=x, input_points=_hf_scale(point, (96, 160))[None, None],
                    input_labels=torch.tensor([[[1]]]), input_boxes=_hf_scale(box[None], (96, 160), True)[None],
                    multimask_output=True)
    assert low.shape == (3, 64, 64) and masks.shape == (3, 96, 160)
    assert np.abs(low - ref.pred_masks[0, 0].numpy()).max() <= TOL
    assert np.abs(scores - ref.iou_scores[0, 0].numpy()).max() <= TOL
    up = F.interpolate(ref.pred_masks[0], (96, 160), mode="bilinear", align_corners=False)[0].numpy()
    assert np.abs(masks - up).max() <= TOL
    with pytest.raises(ValueError, match="1x3xHxW"):
        predictor.set_torch_image(torch.zeros(3, 96, 160), (96, 160))


class _Recording(SumPredictor):
    """Keeps every low-res output of ``predict_prompts`` (one call per round here: one instance per image)."""

    def __init__(self, model: SumSam2) -> None:
        super().__init__(model)
        self.lows: list[torch.Tensor] = []

    def predict_prompts(self, prompts, mask_input=None, multimask=True, task=None):  # noqa: ANN001, ANN201
        out = super().predict_prompts(prompts, mask_input, multimask, task)
        self.lows.append(out[2])
        return out


def _replay(stock: torch.nn.Module, inst: Instance, clicks: list[Click], box: tuple | None) -> tuple[list, list]:
    """The session again with plain Sam2Model on the pixels: round r gives the box and the first clicks
    (transformers' scaling), the previous kept low-res logits; round 1 asks for three and keeps the GT-best."""
    x = _pixels(_model(), inst.image)  # preprocessing only (no weights used)
    hw = inst.gt.shape
    n_rounds = len(clicks) + (box is not None)
    lows, ious, mask = [], [], None
    for r in range(n_rounds):
        shown = clicks[: r + (box is None)]
        kw: dict = {"input_masks": mask, "multimask_output": r == 0}
        if shown:
            kw["input_points"] = _hf_scale(np.array([[c.x, c.y] for c in shown], float), hw)[None, None]
            kw["input_labels"] = torch.tensor([[[int(c.is_positive) for c in shown]]])
        if box is not None:
            kw["input_boxes"] = _hf_scale(np.array([box], float), hw, True)[None]
        with torch.no_grad():
            out = stock(pixel_values=x, **kw)
        low = out.pred_masks[0, 0]
        up = F.interpolate(low[None], hw, mode="bilinear", align_corners=False)[0].numpy()
        k = int(np.argmax([iou(inst.gt, m > 0) for m in up])) if r == 0 else 0
        lows.append(low)
        ious.append(iou(inst.gt, up[k] > 0))
        mask = low[k : k + 1][None]
    return lows, ious


def test_interactive_sessions_on_sam2_are_plain_sam2models() -> None:
    """Clicks and box protocols, 4 rounds, a task prompt in every round, two non-square images: every
    round's low-res logits equal plain Sam2Model's (folded weights, transformers' coordinate scaling)."""
    model = _model()
    stock = build_sam2("sam2_tiny", seed=1).eval()
    stock.load_state_dict(model.stock_state_dict(2))
    images = [_image(96, 160, 1), _image(200, 120, 2)]
    instances = [Instance(f"i{k}", f"k{k}", im, _gt(im), task=2) for k, im in enumerate(images)]
    predictor = _Recording(model)
    results = list(evaluate_instances(predictor, instances, ("clicks", "box"), rounds=4))
    worst, calls = 0.0, iter(predictor.lows)
    for inst, per_proto in results:
        for proto in ("clicks", "box"):
            res = per_proto[proto]
            lows, ious = _replay(stock, inst, res.clicks, res.box if proto == "box" else None)
            assert len(lows) >= 2
            for ref in lows:
                worst = max(worst, float((next(calls)[0] - ref).abs().max()))
            assert np.allclose(res.ious[: len(ious)], ious, atol=1e-6)
    assert next(calls, None) is None
    assert worst <= TOL, worst


def test_sumseg_eval_runs_on_sam2(tmp_path: Path) -> None:
    from sumseg.data.synthetic_world import SPLITS, write_world
    from sumseg.evaluate.run import EvalSettings, evaluate

    write_world(tmp_path / "w", sizes={s: 2 if s == "task1_test" else 0 for s in SPLITS}, workers=1, progress=False)
    settings = EvalSettings(protocols=("clicks",), rounds=2, overlays=1, limit=2, task=1)
    data, skipped = evaluate(_model(), {"t1": tmp_path / "w" / "task1_test"}, settings, tmp_path / "out",
                             progress=False)
    assert skipped == {"t1": 0}
    assert (tmp_path / "out" / "results.json").is_file() and "t1" in str(data)
