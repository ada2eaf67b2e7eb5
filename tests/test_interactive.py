"""The interactive harness: rounds, clicks, the first-round choice, early stop, task in round 1 only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sumseg import SumPredictor, build_model
from sumseg.evaluate.interactive import Instance, evaluate_instances, gt_box, run_instance
from sumseg.metrics.masks import iou
from sumseg.prompts.clicker import next_click
from tests.conftest import randomise_task_prompts


def _disc_instance(rgb_image: np.ndarray, name: str = "disc", task: int | None = None) -> Instance:
    h, w = rgb_image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    gt = (yy - 90) ** 2 + (xx - 110) ** 2 < 40**2
    return Instance(name=name, image_key="img0", image=rgb_image, gt=gt, task=task)


def _constant_positive_model():
    """A real tiny SAM whose decoder outputs a positive constant logit everywhere."""
    model = build_model("tiny")
    dec = model.sam.mask_decoder
    with torch.no_grad():
        dec.output_upscaling[-2].weight.zero_()
        dec.output_upscaling[-2].bias.fill_(1.0)
        for mlp in dec.output_hypernetworks_mlps:
            mlp.layers[-1].weight.zero_()
            mlp.layers[-1].bias.fill_(1.0)
    return model


def test_clicks_protocol_rounds_and_first_click(tiny_model, rgb_image) -> None:
    inst = _disc_instance(rgb_image)
    pred = SumPredictor(tiny_model)
    pred.set_image(rgb_image)
    res = run_instance(pred, inst, "clicks", rounds=5)
    assert len(res.ious) == len(res.bious) == 5 and all(0.0 <= v <= 1.0 for v in res.ious)
    assert res.clicks[0] == next_click(np.zeros_like(inst.gt), inst.gt)
    assert (res.clicks[0].y, res.clicks[0].x) == (90, 110) and res.clicks[0].is_positive
    assert len(res.clicks) == 5 and len({(c.y, c.x) for c in res.clicks}) == 5
    assert res.box is None and res.final_pred.shape == inst.gt.shape
    assert res.ious[-1] == pytest.approx(iou(inst.gt, res.final_pred))


def test_box_protocol_starts_with_the_gt_box(tiny_model, rgb_image) -> None:
    inst = _disc_instance(rgb_image)
    pred = SumPredictor(tiny_model)
    pred.set_image(rgb_image)
    res = run_instance(pred, inst, "box", rounds=3)
    assert res.box == gt_box(inst.gt) == (71, 51, 149, 129)
    assert len(res.ious) == 3 and len(res.clicks) == 2  # the box, then two correction clicks


def test_oracle_first_round_is_best_of_three(tiny_model, rgb_image) -> None:
    inst = _disc_instance(rgb_image)
    pred = SumPredictor(tiny_model)
    pred.set_image(rgb_image)
    first = {fr: run_instance(pred, inst, "clicks", 1, fr).ious[0] for fr in ("oracle", "score", "single")}
    masks, _, _ = pred.predict(point_coords=np.array([[110, 90]]), point_labels=np.array([1]), multimask_output=True)
    assert first["oracle"] == pytest.approx(max(iou(inst.gt, m) for m in masks))
    assert first["oracle"] >= first["score"]


def test_no_error_left_stops_clicking(rgb_image) -> None:
    model = _constant_positive_model()
    pred = SumPredictor(model)
    pred.set_image(rgb_image)
    full = Instance("full", "img0", rgb_image, np.ones(rgb_image.shape[:2], bool))
    res = run_instance(pred, full, "clicks", rounds=4)
    assert res.ious == [1.0] * 4 and len(res.clicks) == 1  # the first click, then nothing to correct


@pytest.mark.parametrize("task_rounds", ["every", "first"])
def test_task_prompt_in_every_round_or_the_first(rgb_image, task_rounds) -> None:
    model = randomise_task_prompts(build_model("tiny"))
    pred = SumPredictor(model)
    pred.set_image(rgb_image)
    with_task = run_instance(pred, _disc_instance(rgb_image, task=1), "clicks", rounds=1)
    without = run_instance(pred, _disc_instance(rgb_image, task=None), "clicks", rounds=1)
    assert with_task.ious[0] != without.ious[0]
    # round 2 calls the model with the task ("every", the default) or without it ("first"): the same as a
    # direct call with the same prompts, and unlike the call with the other choice
    two = run_instance(pred, _disc_instance(rgb_image, task=1), "clicks", rounds=2, task_rounds=task_rounds)
    pts = np.array([[c.x, c.y] for c in two.clicks])
    labels = np.array([int(c.is_positive) for c in two.clicks])
    masks, _, low = pred.predict(point_coords=pts[:1], point_labels=labels[:1], multimask_output=True,
                                 return_logits=True, task=1)
    best = int(np.argmax([iou(_disc_instance(rgb_image).gt, m > 0) for m in masks]))
    second = {t: pred.predict(point_coords=pts, point_labels=labels, mask_input=low[best : best + 1],
                              multimask_output=False, task=t)[0][0] for t in (1, None)}
    same, other = (1, None) if task_rounds == "every" else (None, 1)
    assert np.array_equal(second[same], two.final_pred)
    assert not np.array_equal(second[other], two.final_pred)


def test_shared_images_are_encoded_once(tiny_model, rgb_image, monkeypatch) -> None:
    pred = SumPredictor(tiny_model)
    calls = []
    original = pred.set_image
    monkeypatch.setattr(pred, "set_image", lambda img: (calls.append(1), original(img)))
    insts = [_disc_instance(rgb_image, name=f"d{i}") for i in range(3)]
    results = [res for _, res in evaluate_instances(pred, insts, ("clicks", "box"), rounds=2)]
    assert len(calls) == 1  # one encoder pass for three instances and two protocols
    assert [r["clicks"].name for r in results] == ["d0", "d1", "d2"]
    assert [r["box"].box for r in results] == [gt_box(insts[0].gt)] * 3


def test_boundary_iou_leaves_ignore_pixels_out(tiny_model, rgb_image) -> None:
    from sumseg.metrics.masks import boundary_iou

    inst = _disc_instance(rgb_image)
    inst.ignore = inst.gt ^ np.pad(inst.gt[3:-3, 3:-3], 3)  # a band along the left/right/top/bottom edges
    pred = SumPredictor(tiny_model)
    pred.set_image(rgb_image)
    res = run_instance(pred, inst, "clicks", rounds=1)
    assert res.bious[0] == boundary_iou(inst.gt, res.final_pred, ignore=inst.ignore)
    assert res.ious[0] == iou(inst.gt, res.final_pred, inst.ignore)


def _per_prompt_reference(pred: SumPredictor, inst: Instance, protocol: str, rounds: int) -> list[float]:
    """The loop a user writes with SamPredictor: one ``predict`` per instance and round (oracle pick)."""
    from sumseg.prompts.clicker import Clicker
    from sumseg.prompts.geometry import click_points

    clicker, mask, low, ious = Clicker(inst.gt), np.zeros_like(inst.gt), None, []
    box = np.array(gt_box(inst.gt)) if protocol == "box" else None
    for r in range(rounds):
        if (r > 0 or box is None) and clicker.next(mask) is None:
            return ious + [ious[-1]] * (rounds - r)
        points, labels = click_points(clicker.clicks)
        logits, _, lows = pred.predict(point_coords=points, point_labels=labels, box=box, mask_input=low,
                                       multimask_output=r == 0, return_logits=True, task=inst.task)
        k = int(np.argmax([iou(inst.gt, m > 0) for m in logits])) if r == 0 else 0
        mask, low = logits[k] > 0, lows[k : k + 1]
        ious.append(iou(inst.gt, mask))
    return ious


@pytest.mark.parametrize("protocol", ["clicks", "box"])
def test_instances_of_an_image_decoded_together_equal_one_by_one(rgb_image, protocol) -> None:
    """run_image batches an image's instances (one decoder call per round and task prompt): the same
    IoUs, round by round, as SamPredictor called once per instance and round (mixed tasks, shapes)."""
    model = build_model("tiny", tasks=[0, 1, 2]).eval()
    randomise_task_prompts(model)
    h, w = rgb_image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    gts = [(yy - 90) ** 2 + (xx - 110) ** 2 < 40**2, (abs(yy - 50) < 20) & (abs(xx - 60) < 35),
           (yy > 150) & (xx > 30) & (xx < 200), ((yy - 120) ** 2 + (xx - 200) ** 2 < 25**2)]
    insts = [Instance(f"m{i}", "img", rgb_image, gt, task=[1, 2, None, 1][i]) for i, gt in enumerate(gts)]
    pred = SumPredictor(model)
    pred.set_image(rgb_image)
    reference = [_per_prompt_reference(pred, inst, protocol, 6) for inst in insts]
    batched = [res[protocol].ious for _, res in evaluate_instances(pred, insts, (protocol,), rounds=6)]
    np.testing.assert_allclose(batched, reference, atol=1e-3)
    assert max(max(r) - min(r) for r in reference) > 0.01  # the rounds differ: a real interactive run
