"""SAM's loss and SUM's uncertainty-aware form against hand-worked values and torchvision's focal loss."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from sumseg.losses import FOCAL_WEIGHT, RoundLoss, dice_loss, focal_loss, iou_loss, mask_iou
from sumseg.train.step import input_frame_logits

LN2, LN3 = math.log(2.0), math.log(3.0)


def two_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """One mask of two pixels: logits (0, ln 3) → p = (1/2, 3/4); target (1, 0)."""
    return torch.tensor([[[0.0, LN3]]]), torch.tensor([[[1.0, 0.0]]])


def test_focal_hand_worked() -> None:
    logits, target = two_pixels()
    # pixel 0 (fg): α_t = .25, p_t = .5, (1 - p_t)² = .25, CE = ln 2          → .0625 ln 2
    # pixel 1 (bg): α_t = .75, p_t = .25, (1 - p_t)² = .5625, CE = -ln .25 = 2 ln 2 → .84375 ln 2
    expected = (0.0625 + 0.84375) * LN2 / 2
    assert focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # confidence scales each pixel; the mean still divides by the pixel count (2), not by Σc
    weighted = focal_loss(logits, target, torch.tensor([[[1.0, 0.2]]]))
    assert weighted.item() == pytest.approx((0.0625 + 0.2 * 0.84375) * LN2 / 2, rel=1e-6)


def test_focal_equals_torchvision_mean() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 8, generator=g) * 3
    target = (torch.rand(3, 8, 8, generator=g) > 0.5).float()
    ref = sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="none").flatten(1).mean(1)
    torch.testing.assert_close(focal_loss(logits, target), ref)


def test_dice_hand_worked_and_gated() -> None:
    logits, target = two_pixels()
    # Σ p·y = .5, Σ p = 1.25, Σ y = 1, smooth 1: 1 − (2·.5 + 1) / (2.25 + 1)
    assert dice_loss(logits, target).item() == pytest.approx(1 - 2 / 3.25, rel=1e-6)
    # only pixel 0 valid: Σ p·y = .5, Σ p = .5, Σ y = 1 → 1 − 2 / 2.5
    valid = torch.tensor([[[1.0, 0.0]]])
    assert dice_loss(logits, target, valid).item() == pytest.approx(0.2, rel=1e-6)


def test_iou_target_and_mse_hand_worked() -> None:
    logits = torch.tensor([[[1.0, 2.0]]])  # prediction (1, 1)
    target = torch.tensor([[[1.0, 0.0]]])
    assert mask_iou(logits, target).item() == pytest.approx(0.5)
    first_only = torch.tensor([[[True, False]]])
    assert mask_iou(logits, target, first_only).item() == pytest.approx(1.0)
    assert iou_loss(torch.tensor([0.5]), logits, target).item() == pytest.approx(0.0)
    assert iou_loss(torch.tensor([0.5]), logits, target, first_only).item() == pytest.approx(0.25)
    # both empty: IoU 1 by convention
    assert mask_iou(torch.full((1, 1, 2), -1.0), torch.zeros(1, 1, 2)).item() == 1.0


def test_iou_loss_does_not_differentiate_the_mask() -> None:
    logits = torch.tensor([[[1.0, -2.0]]], requires_grad=True)
    pred = torch.tensor([0.3], requires_grad=True)
    iou_loss(pred, logits, torch.tensor([[[1.0, 0.0]]])).sum().backward()
    assert logits.grad is None
    assert pred.grad is not None and pred.grad.item() == pytest.approx(2 * (0.3 - 1.0))


def test_per_mask_loss_hand_worked() -> None:
    logits, target = two_pixels()
    conf = torch.tensor([[[1.0, 0.2]]])  # pixel 1 is uncertain: below θ = .6, weight .2 in the focal term
    out = RoundLoss(theta=0.6).per_mask(logits, torch.tensor([0.3]), target, conf)
    assert out["focal"].item() == pytest.approx(FOCAL_WEIGHT * (0.0625 + 0.2 * 0.84375) * LN2 / 2, rel=1e-6)
    assert out["dice"].item() == pytest.approx(0.2, rel=1e-6)
    assert out["iou"].item() == pytest.approx(0.3**2, rel=1e-6)  # prediction (0, 1) vs target (1, 0): IoU 0
    # θ = .1: pixel 1 passes the gate again → the ungated dice
    assert RoundLoss(theta=0.1).per_mask(logits, torch.tensor([0.3]), target, conf)["dice"].item() == pytest.approx(
        1 - 2 / 3.25, rel=1e-6)


def test_zero_confidence_pixels_leave_the_iou_target() -> None:
    logits = torch.tensor([[[1.0, 2.0]]])
    target = torch.tensor([[[1.0, 0.0]]])
    out = RoundLoss().per_mask(logits, torch.tensor([1.0]), target, torch.tensor([[[1.0, 0.0]]]))
    assert out["iou"].item() == pytest.approx(0.0)  # IoU over pixel 0 alone is 1


def test_confidence_one_is_the_standard_sam_loss() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 16, 16, generator=g) * 4
    target = (torch.rand(4, 16, 16, generator=g) > 0.6).float()
    iou_pred = torch.rand(4, generator=g)
    plain = RoundLoss().per_mask(logits, iou_pred, target)
    ones = RoundLoss(theta=0.6).per_mask(logits, iou_pred, target, torch.ones_like(target))
    for k in ("focal", "dice", "iou"):
        assert torch.equal(plain[k], ones[k]), k
    # SAM's loss written out independently: 20 · focal + dice + MSE(IoU head, IoU of logits > 0)
    focal = sigmoid_focal_loss(logits, target, reduction="none").flatten(1).mean(1)
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * target).flatten(1).sum(1) + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    pred = logits > 0
    true_iou = (pred & (target > 0)).flatten(1).sum(1) / (pred | (target > 0)).flatten(1).sum(1)
    torch.testing.assert_close(plain["focal"], 20 * focal)
    torch.testing.assert_close(plain["dice"], dice)
    torch.testing.assert_close(plain["iou"], (iou_pred - true_iou) ** 2)


def test_input_resolution_loss_hand_worked() -> None:
    # low-res logits (2×2) [[-2, 2], [-2, 2]] upsampled ×4 bilinearly (align_corners=False, SAM's):
    # column j of 8 samples x = (j + .5)/4 - .5, clamped to [0, 1] → -2 + 4x:
    cols = [-2.0, -2.0, -1.5, -0.5, 0.5, 1.5, 2.0, 2.0]
    low = torch.tensor([[[[-2.0, 2.0], [-2.0, 2.0]]]])  # (N=1, M=1, 2, 2)
    up = input_frame_logits(low, 8)
    assert up.shape == (1, 1, 8, 8)
    torch.testing.assert_close(up[0, 0], torch.tensor(cols).expand(8, 8), rtol=0, atol=1e-6)
    target = torch.zeros(1, 8, 8)
    target[0, :, 5:] = 1  # the right three columns: logits 1.5, 2, 2 (the column at 0.5 is background)
    conf = torch.ones(1, 8, 8)
    conf[0, :, 4] = 0.5  # one uncertain column (logit 0.5, background): half weight, out of the dice (θ = .6)

    def focal(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        p_t, a_t = (p, 0.25) if y else (1 - p, 0.75)
        return a_t * (1 - p_t) ** 2 * -math.log(p_t)

    per_col = [(focal(x, j >= 5), 0.5 if j == 4 else 1.0) for j, x in enumerate(cols)]
    want_focal = 20 * sum(f * c for f, c in per_col) / 8  # each column is 8 pixels of 64
    probs = [1 / (1 + math.exp(-x)) for x in cols]
    kept = [j for j in range(8) if j != 4]
    inter = 8 * sum(probs[j] for j in kept if j >= 5)
    want_dice = 1 - (2 * inter + 1) / (8 * sum(probs[j] for j in kept) + 8 * 3 + 1)
    # IoU of logits > 0 (columns 4..7) with the target (5..7) over c > 0: 24 / 32
    want_iou = (0.9 - 24 / 32) ** 2
    out, best = RoundLoss(theta=0.6)(up, torch.tensor([[0.9]]), target, conf)
    assert best.tolist() == [0]
    assert out["focal"].item() == pytest.approx(want_focal, rel=1e-5)
    assert out["dice"].item() == pytest.approx(want_dice, rel=1e-5)
    assert out["iou"].item() == pytest.approx(want_iou, rel=1e-5)


def test_round_loss_best_of_m_and_the_iou_head_on_pseudo_labels() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 3, 8, 8, generator=g) * 3  # 3 masks × 3 outputs
    iou_pred = torch.rand(3, 3, generator=g)
    target = (torch.rand(3, 8, 8, generator=g) > 0.5).float()
    conf = torch.rand(3, 8, 8, generator=g)
    pseudo = torch.tensor([False, True, True])
    per = RoundLoss(theta=0.6).per_mask(logits.flatten(0, 1), iou_pred.flatten(), target.repeat_interleave(3, 0),
                                        conf.repeat_interleave(3, 0))
    mask = (per["focal"] + per["dice"]).view(3, 3)
    out, best = RoundLoss(theta=0.6, iou_on_pseudo=True)(logits, iou_pred, target, conf, pseudo)
    assert best.tolist() == mask.argmin(1).tolist()
    rows = torch.arange(3)
    torch.testing.assert_close(out["focal"], per["focal"].view(3, 3)[rows, best].mean())
    torch.testing.assert_close(out["dice"], per["dice"].view(3, 3)[rows, best].mean())
    torch.testing.assert_close(out["iou"], per["iou"].mean())  # SAM: all M outputs of every mask
    human_only, _ = RoundLoss(theta=0.6, iou_on_pseudo=False)(logits, iou_pred, target, conf, pseudo)
    torch.testing.assert_close(human_only["iou"], per["iou"][:3].mean())  # mask 0's three outputs alone
    assert torch.equal(human_only["focal"], out["focal"]) and torch.equal(human_only["dice"], out["dice"])
    none, _ = RoundLoss(iou_on_pseudo=False)(logits, iou_pred, target, conf, torch.ones(3, dtype=torch.bool))
    assert none["iou"].item() == 0.0
    # the focal weight is a setting
    tenfold, _ = RoundLoss(focal_weight=2.0, theta=0.6)(logits, iou_pred, target, conf, pseudo)
    torch.testing.assert_close(tenfold["focal"], out["focal"] / 10)
