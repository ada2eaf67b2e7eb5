"""SAM 2 in the pseudo-label pipeline (the AMG with the object score), the refiner and ``sumseg uncertainty``
(sam2_tiny, random weights, non-square images)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from sumseg.config import PseudoLabelConfig, PseudoLabelSettings  # noqa: E402
from sumseg.models.interface import image_to_lowres_in, lowres_to_image_in, map_lowres  # noqa: E402
from sumseg.models.sum_sam2 import SumSam2  # noqa: E402
from sumseg.pipeline.amg import grid_points, label_image  # noqa: E402
from sumseg.pipeline.amg_decoder import decode_grid  # noqa: E402
from sumseg.pipeline.pseudo_label_run import run_pseudo_labels  # noqa: E402
from sumseg.pipeline.store import open_store  # noqa: E402
from tests.test_sam2_arch import random_sam2  # noqa: E402

GRID = 4


def sam2_model(seed: int = 3) -> SumSam2:
    return SumSam2(random_sam2(seed), (0, 1, 2, 3), "sam2_tiny").eval()


def _features(model: SumSam2, rgb: np.ndarray):  # noqa: ANN202
    return model.cached_features(model.cache_encoder().encode(rgb)[None])


def _image(h: int = 96, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    img[20:60, 30:100] = (200, 40, 40)
    return img


def _split_object_scores(model: SumSam2, features, coords: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Shift the object-score head's last bias so that about half the grid points score ≤ 0; their scores."""
    n = coords.shape[0]
    pts, labels = coords.float()[:, None], torch.ones(n, 1, dtype=torch.long)
    with torch.no_grad():
        _, _, obj = model.predict(features.take(torch.zeros(n, dtype=torch.long)), (pts, labels), multimask=True)
        model.sam2.mask_decoder.pred_obj_score_head.proj_out.bias -= obj.median() + 1e-4
        _, _, obj = model.predict(features.take(torch.zeros(n, dtype=torch.long)), (pts, labels), multimask=True)
    assert (obj > 0).any() and (obj <= 0).any()
    return obj


def test_decode_grid_is_predict_minus_points_without_an_object() -> None:
    model, rgb = sam2_model(), _image()
    feats = _features(model, rgb)
    _, coords = grid_points(GRID, rgb.shape[:2], model.frame)
    assert np.allclose(coords[-1], [(7 / 8) * 256, (7 / 8) * 256])  # squashed: x by S/W, y by S/H
    coords_t = torch.as_tensor(coords)
    obj = _split_object_scores(model, feats, coords_t)
    ref_low, ref_iou = model.decode(feats, (coords_t.float()[:, None], torch.ones(len(coords), 1, dtype=torch.long)),
                                    multimask=True)
    thresh = float(ref_iou.detach().median())
    iou, cand = decode_grid(model, feats, coords_t, thresh, batch=5)
    present = obj > 0
    torch.testing.assert_close(iou[present], ref_iou[present])
    assert torch.isneginf(iou[~present]).all()
    keep = (ref_iou > thresh) & present[:, None]
    rows, cols = keep.nonzero(as_tuple=True)
    assert cand.prompt.tolist() == rows.tolist()
    torch.testing.assert_close(cand.iou, ref_iou[keep])
    torch.testing.assert_close(cand.logits, ref_low[rows, cols])
    _, every = decode_grid(model, feats, coords_t, 0.0)  # <= 0: no IoU filter, still the object score
    assert len(every.iou) == 3 * int(present.sum())


def test_label_image_on_a_non_square_image_uses_the_squash_frame() -> None:
    model, rgb = sam2_model(), _image()
    settings = PseudoLabelSettings(points_per_side=GRID, points_per_batch=8, pred_iou_thresh=0.0,
                                   stability_score_thresh=0.0, max_area_ratio=2.0, min_area_ratio=0.0,
                                   box_nms_thresh=0.99)
    labels, _ = label_image(model, _features(model, rgb), rgb.shape[:2], settings,
                            {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0})
    assert len(labels) > 0 and labels.logits.shape[1:] == (64, 64)
    from sumseg.data import rle as rle_utils

    mask0 = rle_utils.decode(labels.rles[0])
    up = torch.nn.functional.interpolate(labels.logits[:1, None], rgb.shape[:2], mode="bilinear",
                                         align_corners=False)[0, 0]
    assert mask0.shape == rgb.shape[:2] and (mask0 == (up > 0).numpy()).all()
    assert labels.points.max(0).values[0] <= rgb.shape[1] and labels.points.max(0).values[1] <= rgb.shape[0]


def test_frame_maps_round_trip_on_a_non_square_image() -> None:
    h, w = 96, 160
    square = torch.zeros(1, h, w)
    square[:, 20:60, 30:100] = 1.0
    for kind in ("longest_side", "squash"):
        low = image_to_lowres_in(kind, square, 256)
        back = lowres_to_image_in(kind, low, 256, (h, w))
        assert ((back > 0.5) == (square > 0.5)).float().mean() > 0.98, kind
    sam1 = image_to_lowres_in("longest_side", square, 256)
    assert sam1[:, 40:].abs().max() == 0  # SAM 1: the image is the top 96·256/160 / 4 = 38.4 rows, then padding
    to2 = map_lowres(sam1, "longest_side", "squash", 256, (h, w))
    torch.testing.assert_close(to2, image_to_lowres_in("squash", lowres_to_image_in("longest_side", sam1, 256, (h, w)),
                                                       256))
    assert map_lowres(to2, "squash", "squash", 256, (h, w)) is not None


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(_image(h, w, seed=i)).save(folder / f"img{i}.png")
    return folder


def sam2_store(tmp_path: Path, model: SumSam2) -> Path:
    images = write_images(tmp_path / "images", [(96, 160), (120, 80)])
    cfg = PseudoLabelConfig(images=str(images), out=str(tmp_path / "store"), progress=False)
    cfg.amg = PseudoLabelSettings(points_per_side=GRID, points_per_batch=8, pred_iou_thresh="q0.3",
                                  stability_score_thresh=0.0, max_area_ratio=2.0, min_area_ratio=0.0,
                                  calibration_images=0)
    run_pseudo_labels(model, cfg)
    return tmp_path / "store"


def test_run_pseudo_labels_with_sam2_writes_a_squash_store(tmp_path: Path) -> None:
    model = sam2_model()
    store = open_store(sam2_store(tmp_path, model))
    assert store.frame == "squash" and store.meta["model"] == "sam2_tiny" and store.lowres_size == 64
    assert sum(e.num_masks for e in store.images) > 0
    assert store.thresholds["pred_iou_thresh"] > -1  # the quantile left the no-object points (-inf) out


def test_frozen_twin_of_sam2_shares_the_encoder_and_decodes_alike() -> None:
    from sumseg.models.refiner import frozen_copy, trainable_parameters

    model, rgb = sam2_model(), _image()
    twin = frozen_copy(model)
    assert isinstance(twin, SumSam2) and not any(p.requires_grad for p in twin.parameters())
    assert not any(n.startswith("sam2.vision_encoder.") for n, _ in twin.named_parameters())
    with pytest.raises(RuntimeError, match="no image encoder"):
        twin.sam2.vision_encoder(torch.zeros(1, 3, 256, 256))
    feats = _features(model, rgb)
    pts, labels = torch.tensor([[[50.0, 70.0]]]), torch.ones(1, 1, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(twin.decode(feats, (pts, labels), multimask=True),
                                   model.decode(feats, (pts, labels), multimask=True), rtol=0, atol=0)
    chosen = {id(p) for p in trainable_parameters(model)}
    names = {n for n, p in model.named_parameters() if id(p) in chosen}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("sam2.prompt_encoder.") for n in names)
    assert any(n.startswith("sam2.mask_decoder.transformer.") for n in names)
    assert not any(model.is_image_side(n) or model.is_idle(n) or n.startswith("task_prompts") for n in names)


def _batch(model: SumSam2):  # noqa: ANN202
    from sumseg.train.batch import MaskSample, collate

    rgb = _image()
    masks = np.zeros((2, *rgb.shape[:2]), dtype=bool)
    masks[0, 20:60, 30:100] = True
    masks[1, 10:80, 110:150] = True
    return collate([MaskSample(rgb, masks, np.zeros(2, dtype=np.int64))], model)


def test_refiner_step_on_sam2_reaches_exactly_the_trainable_parameters() -> None:
    from sumseg.losses import RoundLoss
    from sumseg.models.refiner import frozen_copy, trainable_parameters
    from sumseg.train.refiner_step import RefinerStep

    model = sam2_model()
    trainable_parameters(model)
    step = RefinerStep(model, frozen_copy(model), RoundLoss(theta=0.5), min_iou=0.0)
    out = step(_batch(model), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and float(out["kept"]) > 0
    out["loss"].backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    want = {n for n, p in model.named_parameters() if p.requires_grad}
    assert got <= want and got  # nothing frozen gets a gradient
    assert not any(n.startswith("sam2.vision_encoder.") for n in got)


def test_collate_keeps_a_squash_u_map_for_sam2_and_maps_it_for_sam1() -> None:
    from sumseg import build_model
    from sumseg.train.batch import MaskSample, collate

    rgb = _image()
    masks = np.zeros((1, *rgb.shape[:2]), dtype=bool)
    masks[0, 20:60, 30:100] = True
    conf = torch.ones(1, 64, 64)
    conf[:, :, 32:] = 0.25  # the right half of the image, in the squash frame
    sample = MaskSample(rgb, masks, np.zeros(1, dtype=np.int64), confidence=conf, confidence_frame="squash")
    torch.testing.assert_close(collate([sample], sam2_model()).confidence, conf)
    sam1 = collate([sample], build_model("tiny")).confidence[0]  # 96x160 -> 154x256 in the padded input
    assert abs(float(sam1[:30, 2:30].mean()) - 1.0) < 1e-3 and abs(float(sam1[:30, 34:62].mean()) - 0.25) < 1e-3
    assert float(sam1[40:].abs().max()) == 0.0  # padding rows


def test_uncertainty_with_a_sam2_refiner_on_a_non_square_store(tmp_path: Path) -> None:
    from sumseg import build_model
    from sumseg.config import UncertaintyConfig
    from sumseg.errors import ConfigError
    from sumseg.pipeline.uncertainty import quantise, run_uncertainty, uncertainty_map

    model = sam2_model()
    root = sam2_store(tmp_path, model)
    refiner = sam2_model(seed=5)
    summary = run_uncertainty(refiner, UncertaintyConfig(pseudo_labels=str(root), show=1, progress=False))
    store = open_store(root)
    assert summary.images_done == len(store) and summary.overlays
    i = next(k for k in range(len(store)) if store.images[k].num_masks)
    rec, labels = store.record(i), store.load(i, confidence=False)
    h, w = rec.height, rec.width
    assert h != w
    scale = torch.tensor([256 / w, 256 / h])
    pts = (labels.points * scale)[:, None]
    boxes = (labels.boxes.view(-1, 2, 2) * scale).view(-1, 4)
    feats = _features(refiner, rec.load_image())
    k = len(labels)
    with torch.no_grad():
        ones = torch.ones(k, 1, dtype=torch.long)
        index = torch.zeros(k, dtype=torch.long)
        r, _, _ = refiner.predict(feats.take(index), (pts, ones), boxes, labels.logits[:, None])
    want = quantise(uncertainty_map(labels.logits, r[:, 0]))
    assert int((store.uncertainty_u8(i).int() - want.int()).abs().max()) <= 1
    with pytest.raises(ConfigError, match="frame"):
        run_uncertainty(build_model("tiny"), UncertaintyConfig(pseudo_labels=str(root), progress=False))


def test_refined_labels_from_a_sam2_refiner_on_a_sam2_store(tmp_path: Path) -> None:
    from sumseg import build_model
    from sumseg.errors import ConfigError
    from sumseg.train.sources import PseudoLabelSource

    store = open_store(sam2_store(tmp_path, sam2_model()))
    source = PseudoLabelSource(store, 2, 256, uncertainty=False, refiner=sam2_model(seed=5))
    sample = source.sample(0, np.random.default_rng(0))
    rec = store.record(source.index[0])
    assert sample.masks.shape[1:] == (rec.height, rec.width) and sample.masks.dtype == bool
    with pytest.raises(ConfigError, match="frame"):
        PseudoLabelSource(store, 2, 256, uncertainty=False, refiner=build_model("tiny"))
