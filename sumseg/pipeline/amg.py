"""Automatic-mask-generator pseudo-labels: ``SamAutomaticMaskGenerator``'s semantics, faster.

Per image (one encoder pass): a ``points_per_side``² point grid, three multimask outputs per
point, keep predicted IoU > ``pred_iou_thresh`` and stability ≥ ``stability_score_thresh``
(``segment_anything``'s ``calculate_stability_score`` on the logits at the image's resolution,
offset ``stability_score_offset``; a threshold ≤ 0 filters nothing, as in the stock generator),
drop masks with area ≥ ``max_area_ratio``·H·W or < ``min_area_ratio``·H·W, then box NMS
(torchvision ``batched_nms`` on the masks' boxes, scores = predicted IoU) and keep at most
``max_per_image`` masks, best predicted IoU first. With the area filters off (``max_area_ratio``
> 1, ``min_area_ratio`` 0) the kept masks are the stock generator's (``crop_n_layers=0``,
``min_mask_region_area=0``).

Where the time goes differently: the predicted IoU is scored before any mask logits are made
(:mod:`sumseg.pipeline.amg_decoder`), and only the candidates that pass it are upsampled to the
image's resolution. A threshold may be a quantile of the model's own scores (``"q0.7"``),
resolved by :func:`calibrate` on a fixed sample of the input (docs/pseudo-labels.md).

SAM 2 (a :class:`~sumseg.models.sum_sam2.SumSam2`; any model of the interface
:class:`~sumseg.models.interface.PromptableModel` is taken alike): the grid goes to the input frame by the model's frame
(squashed), the low-res logits to the image by one bilinear resize (the store's ``frame`` is then
``"squash"``), and a grid point whose object-score logit is ≤ 0 yields no candidate
(:mod:`sumseg.pipeline.amg_decoder`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything.modeling import Sam
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops import batched_nms

from sumseg.config.pseudo_label import PseudoLabelSettings, Threshold
from sumseg.data import rle as rle_utils
from sumseg.errors import ConfigError
from sumseg.models.interface import FrameKind, PromptableModel, frame_kind, lowres_to_image_in
from sumseg.models.sum_sam import ImageFeatures
from sumseg.pipeline.amg_decoder import Candidates, decode_grid
from sumseg.pipeline.store import AREA_BINS, ImageLabels
from sumseg.prompts.frames import InputFrame

Features = torch.Tensor | ImageFeatures  # SAM 1: (1, C, h, w) embeddings; SAM 2: its ImageFeatures
FeatureFn = Callable[[int], tuple[Features, tuple[int, int]]]  # position → (features, (H, W))


def quantile_of(value: Threshold) -> float | None:
    """The quantile of a ``"q<x>"`` threshold, None for a fixed number."""
    return float(value[1:]) if isinstance(value, str) else None


def grid_points(n: int, hw: tuple[int, int], frame: int | InputFrame) -> tuple[np.ndarray, np.ndarray]:
    """The stock generator's grid: (N, 2) xy image pixels and the same in the S×S input frame (float64):
    ``frame`` is the model's (an int S means SAM 1's ``ResizeLongestSide(S)``)."""
    points = build_point_grid(n) * np.array(hw)[None, ::-1]
    transform = ResizeLongestSide(frame) if isinstance(frame, int) else frame
    return points, transform.apply_coords(points, hw)


def _device(features: Features) -> torch.device:
    return (features.embeddings if isinstance(features, ImageFeatures) else features).device


def _candidates(model: PromptableModel, embeddings: Features, hw: tuple[int, int], settings: PseudoLabelSettings,
                iou_thresh: float) -> tuple[np.ndarray, Candidates]:
    points, coords = grid_points(settings.points_per_side, hw, model.frame)
    _, cand = decode_grid(model, embeddings, torch.as_tensor(coords, device=_device(embeddings)), iou_thresh,
                          settings.points_per_batch)
    return points, cand


def _full_res(cand: Candidates, hw: tuple[int, int], image_size: int, settings: PseudoLabelSettings,
              kind: FrameKind = "longest_side") -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(start, logits (n, H, W), stability (n,)) of candidates, a batch at a time, at the image's size."""
    for start in range(0, len(cand.iou), settings.points_per_batch):
        up = lowres_to_image_in(kind, cand.logits[start : start + settings.points_per_batch], image_size, hw)
        yield start, up, calculate_stability_score(up, Sam.mask_threshold, settings.stability_score_offset)


def _encode(logits: torch.Tensor, image_size: int, hw: tuple[int, int], batch: int,
            kind: FrameKind = "longest_side") -> list[rle_utils.Rle]:
    """Compressed RLEs of the masks (upsampled logits > 0) of the kept candidates only, in one
    pycocotools call per batch: (n, W, H) C-order is (H, W, n) Fortran order, which it takes as is."""
    rles: list[rle_utils.Rle] = []
    for start in range(0, len(logits), batch):
        up = lowres_to_image_in(kind, logits[start : start + batch], image_size, hw)
        binary = (up > Sam.mask_threshold).transpose(1, 2).contiguous().cpu().numpy().astype(np.uint8)
        encoded = mask_utils.encode(binary.transpose(2, 1, 0))
        rles.extend({"size": [hw[0], hw[1]], "counts": r["counts"]} for r in encoded)
    return rles


def select_masks(cand: Candidates, points: np.ndarray, hw: tuple[int, int], image_size: int,
                 settings: PseudoLabelSettings, stab_thresh: float,
                 kind: FrameKind = "longest_side") -> tuple[ImageLabels, list[int]]:
    """Stability and area filters, box NMS and the per-image cap on the candidates of one image.

    ``points``: (N, 2) xy image pixels of the grid (``cand.prompt`` indexes it). Returns the kept
    masks, best predicted IoU first, and their area histogram over :data:`AREA_BINS`. ``kind``: the
    low-res frame of the logits (:data:`~sumseg.models.interface.FrameKind`).
    """
    h, w = hw
    idx: list[torch.Tensor] = []
    stab: list[torch.Tensor] = []
    boxes: list[torch.Tensor] = []
    for start, up, stability in _full_res(cand, hw, image_size, settings, kind):
        keep = stability >= stab_thresh if stab_thresh > 0 else torch.ones_like(stability, dtype=torch.bool)
        binary = (up > Sam.mask_threshold)[keep]
        area = binary.flatten(1).sum(1)
        ok = (area >= settings.min_area_ratio * h * w) & (area < settings.max_area_ratio * h * w)
        rows = keep.nonzero().squeeze(1)[ok]
        idx.append(rows + start)
        stab.append(stability[rows])
        boxes.append(batched_mask_to_box(binary[ok]))
    if not idx or not sum(len(i) for i in idx):
        n = image_size // 4
        empty = ImageLabels([], torch.zeros(0, n, n), torch.zeros(0, 4), torch.zeros(0, 2), torch.zeros(0),
                            torch.zeros(0))
        return empty, [0] * (len(AREA_BINS) - 1)
    sel, all_boxes = torch.cat(idx), torch.cat(boxes)
    order = batched_nms(all_boxes.float(), cand.iou[sel], torch.zeros_like(sel), settings.box_nms_thresh)
    order = order[: settings.max_per_image]
    keep_sel = sel[order]
    labels = ImageLabels(
        rles=_encode(cand.logits[keep_sel], image_size, hw, settings.points_per_batch, kind),
        logits=cand.logits[keep_sel].float().cpu(),
        boxes=all_boxes[order].float().cpu(),
        points=torch.as_tensor(points[cand.prompt[keep_sel].cpu().numpy()], dtype=torch.float32),
        predicted_iou=cand.iou[keep_sel].float().cpu(),
        stability=torch.cat(stab)[order].float().cpu(),
    )
    ratios = [rle_utils.area(r) / (h * w) for r in labels.rles]
    return labels, np.histogram(ratios, bins=AREA_BINS)[0].astype(int).tolist()


@torch.inference_mode()
def label_image(model: PromptableModel, embeddings: Features, hw: tuple[int, int], settings: PseudoLabelSettings,
                thresholds: dict[str, float]) -> tuple[ImageLabels, list[int]]:
    """Pseudo-labels of one image from its (1, C, h, w) embeddings (SAM 2: its features); also the area
    histogram (AREA_BINS)."""
    points, cand = _candidates(model, embeddings, hw, settings, thresholds["pred_iou_thresh"])
    return select_masks(cand, points, hw, model.image_size, settings, thresholds["stability_score_thresh"],
                        frame_kind(model))


@torch.inference_mode()
def calibrate(model: PromptableModel, features: FeatureFn, positions: list[int],
              settings: PseudoLabelSettings) -> tuple[dict[str, float], int]:
    """Resolve quantile thresholds on the images at ``positions``; also return the candidates counted.

    The predicted-IoU quantile is over all N·3 candidates of those images; the stability quantile
    over the candidates that pass the (resolved) predicted-IoU threshold, the population the
    stock generator scores for stability. Fixed thresholds pass through unchanged.
    """
    q_iou, q_stab = quantile_of(settings.pred_iou_thresh), quantile_of(settings.stability_score_thresh)
    resolved = {"pred_iou_thresh": settings.pred_iou_thresh, "stability_score_thresh": settings.stability_score_thresh}
    if q_iou is None and q_stab is None:
        return {k: float(v) for k, v in resolved.items()}, 0
    if not positions:
        raise ConfigError("quantile thresholds need at least one readable image to calibrate on")
    counted = 0
    if q_iou is not None:
        scores = []
        for p in positions:
            embeddings, hw = features(p)
            _, coords = grid_points(settings.points_per_side, hw, model.frame)
            iou, _ = decode_grid(model, embeddings, torch.as_tensor(coords, device=_device(embeddings)), None,
                                 settings.points_per_batch)
            scores.append(iou.flatten().float().cpu().numpy())
        resolved["pred_iou_thresh"] = score_quantile(np.concatenate(scores), q_iou, "predicted IoU")
        counted = sum(len(s) for s in scores)
    if q_stab is not None:
        stabs: list[np.ndarray] = []
        for p in positions:
            embeddings, hw = features(p)
            _, cand = _candidates(model, embeddings, hw, settings, float(resolved["pred_iou_thresh"]))
            stabs.extend(s.float().cpu().numpy()
                         for _, _, s in _full_res(cand, hw, model.image_size, settings, frame_kind(model)))
        values = np.concatenate(stabs) if stabs else np.zeros(0)
        resolved["stability_score_thresh"] = score_quantile(values, q_stab, "stability (of the candidates that "
                                                            f"pass predicted IoU > {resolved['pred_iou_thresh']:.4g})")
        counted = max(counted, int(values.size))
    return {k: float(v) for k, v in resolved.items()}, counted


def score_quantile(values: np.ndarray, q: float, what: str) -> float:
    """The q-quantile (numpy, linear) of the finite ``values``. A candidate without a single pixel above
    −offset has stability 0/0 = NaN (the stock generator drops it: NaN ≥ t is false); it is left out."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ConfigError(f"no {what} scores on the calibration images to take a quantile of; lower the other "
                          "threshold or give a number")
    return float(np.quantile(finite, q))


def calibration_positions(n: int, k: int) -> list[int]:
    """k positions spread evenly over 0..n-1 (all of them when k = 0 or k ≥ n)."""
    if k == 0 or k >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})
