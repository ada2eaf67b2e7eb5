"""Training sampler: the drawn pixels follow the confidence map; labels, boxes and conventions."""

from __future__ import annotations

import pytest
import torch

from sumseg.prompts.sampler import UncertaintySampler, draw_pixels, jitter_boxes, tight_boxes

N = 20_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def counts(flat: torch.Tensor, size: int) -> torch.Tensor:
    return torch.bincount(flat, minlength=size).double()


def assert_follows(freq: torch.Tensor, probs: torch.Tensor, n: int) -> None:
    """Every count within 4 binomial standard deviations (+1) of its expectation."""
    expected = probs * n
    sigma = (n * probs * (1 - probs)).sqrt()
    assert bool(((freq - expected).abs() <= 4 * sigma + 1).all()), (freq, expected)


def test_draws_follow_confidence_and_skip_zero_confidence():
    # 4x4 region, left half c = 0, right half c in {0.1, 0.2, ..., 0.8}.
    region = torch.ones(N, 4, 4, dtype=torch.bool)
    c = torch.zeros(4, 4)
    c[:, 2:] = torch.arange(1, 9, dtype=torch.float32).reshape(4, 2) / 10
    flat, valid = draw_pixels(region, c.expand(N, 4, 4), gen())
    assert bool(valid.all())
    freq = counts(flat, 16)
    assert freq.reshape(4, 4)[:, :2].sum() == 0  # c = 0 is never drawn
    assert_follows(freq, (c / c.sum()).flatten().double(), N)


def test_draws_stay_in_region_and_are_uniform_without_confidence():
    region = torch.zeros(N, 3, 5, dtype=torch.bool)
    region[:, 1, 1:4] = True
    region[:, 2, 0] = True
    flat, valid = draw_pixels(region, None, gen(1))
    freq = counts(flat, 15)
    probs = region[0].flatten().double() / 4
    assert bool(valid.all()) and freq[probs == 0].sum() == 0
    assert_follows(freq, probs, N)


def test_zero_total_confidence_falls_back_to_uniform_and_empty_region_is_invalid():
    region = torch.zeros(N, 2, 2, dtype=torch.bool)
    region[:, 0, :] = True
    region[: N // 2, 1, 1] = True  # first half: 3-px region
    region[-1] = False  # last mask: empty region
    c = torch.zeros(N, 2, 2)
    flat, valid = draw_pixels(region, c, gen(2))
    assert valid[:-1].all() and not valid[-1] and flat[-1] == 0
    freq = counts(flat[: N // 2], 4)
    assert_follows(freq, torch.tensor([1 / 3, 1 / 3, 0, 1 / 3], dtype=torch.float64), N // 2)


def test_correction_labels_and_fn_fp_balance():
    # gt = left column; pred = right column. FN = left column (c = 0.3), FP = right column (c = 0.1):
    # P(positive) = 0.3 * 2 / (0.3 * 2 + 0.1 * 2) = 0.75.
    gt = torch.zeros(N, 2, 2, dtype=torch.bool)
    gt[:, :, 0] = True
    pred = ~gt
    c = torch.tensor([[0.3, 0.1], [0.3, 0.1]]).expand(N, 2, 2)
    p = UncertaintySampler(gen(3)).correction(pred, gt, c)
    x = p.points[:, 0, 0]
    assert bool(((p.labels[:, 0] == 1) == (x == 0)).all())  # positive exactly on FN pixels
    assert abs((p.labels == 1).double().mean().item() - 0.75) < 4 * (0.75 * 0.25 / N) ** 0.5
    assert not p.has_box.any()


def test_correction_without_error_gives_no_point_and_ignore_removes_errors():
    gt = torch.zeros(3, 4, 4, dtype=torch.bool)
    gt[:, 1:3, 1:3] = True
    pred = gt.clone()
    pred[1, 0, 0] = True  # one FP pixel
    pred[2, 0, 0] = True  # ... which is ignored in mask 2
    ignore = torch.zeros_like(gt)
    ignore[2, 0, 0] = True
    p = UncertaintySampler(gen()).correction(pred, gt, ignore=ignore)
    assert p.labels[:, 0].tolist() == [-1, 0, -1]
    assert p.points[1, 0].tolist() == [0.0, 0.0]


def test_point_coordinates_are_x_then_y():
    gt = torch.zeros(1, 5, 8, dtype=torch.bool)
    gt[0, 2, 6] = True  # row (y) 2, column (x) 6
    p = UncertaintySampler(gen(), p_box=0.0).first(gt)
    assert p.points.shape == (1, 1, 2) and p.points[0, 0].tolist() == [6.0, 2.0]
    assert p.labels.tolist() == [[1]] and p.labels.dtype == torch.int64
    assert tight_boxes(gt)[0].tolist() == [[6.0, 2.0, 6.0, 2.0]]


def test_first_round_mixes_boxes_and_points():
    gt = torch.zeros(N, 32, 48, dtype=torch.bool)
    gt[:, 4:20, 10:30] = True
    p = UncertaintySampler(gen(4), p_box=0.5).first(gt)
    share = p.has_box.double().mean().item()
    assert abs(share - 0.5) < 4 * (0.25 / N) ** 0.5
    # Points: inside the GT where there is no box; no point (label -1) where there is a box.
    assert bool((p.labels[:, 0] == torch.where(p.has_box, -1, 1)).all())
    xs, ys = p.points[~p.has_box, 0, 0].long(), p.points[~p.has_box, 0, 1].long()
    assert bool(gt[0][ys, xs].all())


def test_box_jitter_bounds_and_scale():
    # Tight box x 10..29 (side 19), y 4..19 (side 15); std 0.1 * side, clamped to 20 px and the image.
    gt = torch.zeros(N, 32, 48, dtype=torch.bool)
    gt[:, 4:20, 10:30] = True
    tight, ok = tight_boxes(gt)
    assert ok.all() and tight[0].tolist() == [10.0, 4.0, 29.0, 19.0]
    boxes = jitter_boxes(tight, 32, 48, gen(5))
    assert bool((boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all())
    assert bool((boxes >= 0).all() and (boxes[:, 0::2] <= 47).all() and (boxes[:, 1::2] <= 31).all())
    assert bool(((boxes - tight).abs() <= 20).all())
    std = (boxes - tight).std(dim=0)
    assert std.tolist() == pytest.approx([1.9, 1.5, 1.9, 1.5], rel=0.05)
    # Big box near the border: the 20-px clamp and the image clamp apply.
    big = torch.tensor([[0.0, 0.0, 999.0, 999.0]]).expand(N, 4)
    moved = jitter_boxes(big, 1000, 1000, gen(6))
    assert moved.min() >= 0 and moved.max() <= 999 and ((moved - big).abs().max() <= 20)
    assert ((moved - big).abs() == 20).any()


def test_same_generator_state_same_prompts_and_input_checks():
    gt = torch.rand(8, 16, 16, generator=gen(7)) < 0.5
    c = torch.rand(8, 16, 16, generator=gen(8))
    a = UncertaintySampler(gen(9)).first(gt, c)
    b = UncertaintySampler(gen(9)).first(gt, c)
    assert torch.equal(a.points, b.points) and torch.equal(a.boxes, b.boxes)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.has_box, b.has_box)
    with pytest.raises(ValueError):
        UncertaintySampler(gen()).first(gt, c * 2)
    with pytest.raises(ValueError):
        UncertaintySampler(gen()).first(gt.float())
    with pytest.raises(ValueError):
        UncertaintySampler(gen(), p_box=1.5)
