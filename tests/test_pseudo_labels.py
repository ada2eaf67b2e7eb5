"""Pseudo-labels: each filter on hand-built logits, the stock generator's masks, quantiles, the store
(resume after SIGKILL, shard union, damaged files), and the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.utils.amg import calculate_stability_score

from benchmarks.fixtures import sharpened_tiny, write_images
from sumseg import build_model
from sumseg.config import PseudoLabelConfig, PseudoLabelSettings
from sumseg.config.pseudo_label import parse_threshold
from sumseg.data import encode_image, read_images, read_sa1b
from sumseg.data import rle as rle_utils
from sumseg.errors import ConfigError, DataError
from sumseg.models.checkpoint import save_checkpoint
from sumseg.models.sum_sam import ImageFeatures, SumSam, lowres_to_image
from sumseg.pipeline.amg import (
    calibrate,
    grid_points,
    label_image,
    score_quantile,
    select_masks,
)
from sumseg.pipeline.amg_decoder import Candidates, decode_grid
from sumseg.pipeline.pseudo_label_run import run_pseudo_labels
from sumseg.pipeline.store import Shard, open_store

GRID = 8
QUANTILES = {"pred_iou_thresh": "q0.6", "stability_score_thresh": "q0.4"}
NO_AREA = {"max_area_ratio": 2.0, "min_area_ratio": 0.0}


@pytest.fixture(scope="module")
def sharp() -> SumSam:
    return sharpened_tiny()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("pl") / "images")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, sharp: SumSam) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "sharp.safetensors", sharp)


def _settings(**kw: object) -> PseudoLabelSettings:
    return PseudoLabelSettings(**({"points_per_side": GRID, **QUANTILES} | kw))  # type: ignore[arg-type]


def _config(images: Path, out: Path, settings: PseudoLabelSettings, shard: str | None = None) -> PseudoLabelConfig:
    """``sumseg pseudo-label``'s section for ``run_pseudo_labels`` (no progress bar)."""
    return PseudoLabelConfig(images=str(images), out=str(out), amg=settings, shard=shard, progress=False)


def _features(model: SumSam, folder: Path):  # noqa: ANN202 - FeatureFn
    recs = read_images(folder).records
    return lambda p: (encode_image(model.sam, recs[p].load_image())[None], (recs[p].height, recs[p].width))


# --- each filter on hand-built candidates (S = 256, L = 64, image 256×256) --------------------------------

def _cand(maps: list[np.ndarray], ious: list[float]) -> tuple[Candidates, np.ndarray]:
    logits = torch.as_tensor(np.stack(maps), dtype=torch.float32)
    points = np.array([[10.0 * i, 5.0 * i] for i in range(len(maps))])
    return Candidates(torch.arange(len(maps)), torch.tensor(ious), logits), points


def _block(y: int, x: int, b: int) -> np.ndarray:
    """Low-res logits: 5 on a b×b block at (y, x), -5 elsewhere.

    Upsampled ×4 (bilinear, half-pixel centres) the 4b×4b block is > 0 except its corners inside the
    image: there the weights are 0.625² inside, so 5·0.390625 − 5·0.609375 < 0.
    """
    m = np.full((64, 64), -5.0)
    m[y : y + b, x : x + b] = 5.0
    return m


def _select(cand: Candidates, points: np.ndarray, stab: float = 0.0, **kw: object):  # noqa: ANN202
    return select_masks(cand, points, (256, 256), 256, _settings(**(NO_AREA | kw)), stab)


def test_stability_filter_hand_worked() -> None:
    half = np.full((64, 64), 0.5)
    half[:, :32] = 5.0  # upsampled: columns 0..129 are > 1 (bilinear blend), all 256 are > -1
    cand, points = _cand([np.full((64, 64), 5.0), half, np.full((64, 64), 0.5)], [0.9, 0.8, 0.7])
    labels, _ = _select(cand, points, stab=0.5, box_nms_thresh=1.0)
    assert labels.stability.tolist() == [1.0, 130 / 256]
    assert len(_select(cand, points, stab=0.6, box_nms_thresh=1.0)[0]) == 1
    assert len(_select(cand, points, stab=0.0, box_nms_thresh=1.0)[0]) == 3  # <= 0: no filter, as stock


def test_area_filters_hand_worked() -> None:
    cand, points = _cand([_block(0, 0, 8), np.full((64, 64), 5.0)], [0.9, 0.8])  # areas 32² - 1 corner, 256²
    labels, hist = _select(cand, points, box_nms_thresh=1.0)
    assert [rle_utils.area(r) for r in labels.rles] == [1023, 65536] and hist == [0, 0, 1, 0, 1]
    assert len(_select(cand, points, box_nms_thresh=1.0, max_area_ratio=0.95)[0]) == 1  # full image dropped
    assert len(_select(cand, points, box_nms_thresh=1.0, min_area_ratio=1023 / 65536)[0]) == 2  # area >= min kept
    assert len(_select(cand, points, box_nms_thresh=1.0, min_area_ratio=1024 / 65536)[0]) == 1


def test_box_nms_order_and_cap() -> None:
    # A = [0, 0, 31, 31], B = [4, 0, 35, 31]: box IoU 27·31 / (2·31² − 27·31) = 0.77; C far away
    cand, points = _cand([_block(0, 0, 8), _block(0, 1, 8), _block(40, 40, 8)], [0.9, 0.95, 0.8])
    labels, _ = _select(cand, points, box_nms_thresh=0.7)
    assert labels.predicted_iou.tolist() == pytest.approx([0.95, 0.8])
    assert labels.boxes.tolist() == [[4, 0, 35, 31], [160, 160, 191, 191]]  # xyxy inclusive
    assert labels.points.tolist() == [[10, 5], [20, 10]]  # the grid point of each kept mask
    assert len(_select(cand, points, box_nms_thresh=0.8)[0]) == 3
    capped, _ = _select(cand, points, box_nms_thresh=0.8, max_per_image=2)
    assert capped.predicted_iou.tolist() == pytest.approx([0.95, 0.9])
    assert torch.equal(capped.logits[1], cand.logits[0])


def test_decode_grid_scores_then_masks_like_sam_decode(sharp: SumSam, images: Path) -> None:
    recs = read_images(images).records
    emb = encode_image(sharp.sam, recs[2].load_image())[None]
    _, coords = grid_points(GRID, (recs[2].height, recs[2].width), 256)
    coords_t = torch.as_tensor(coords)
    with torch.no_grad():
        ref_logits, ref_iou = sharp.decode(
            ImageFeatures(emb), (coords_t[:, None, :], torch.ones(len(coords), 1, dtype=torch.int)), multimask=True)
    # the threshold halfway across the widest gap between neighbouring scores in the middle half: batched
    # decoding reorders float sums (~1e-7, more with other thread counts), so a threshold at a score
    # itself (the median) would keep or drop that candidate depending on the machine
    ranked = ref_iou.flatten().sort().values
    lo, hi = len(ranked) // 4, 3 * len(ranked) // 4
    gap = int((ranked[lo + 1 : hi + 1] - ranked[lo:hi]).argmax()) + lo
    thresh = float(ranked[gap] + ranked[gap + 1]) / 2
    assert float(ranked[gap + 1] - ranked[gap]) > 1e-4
    iou, cand = decode_grid(sharp, emb, coords_t, thresh, batch=16)
    torch.testing.assert_close(iou, ref_iou, rtol=0, atol=1e-5)
    keep = ref_iou > thresh
    assert len(cand.iou) == int(keep.sum()) > 0
    torch.testing.assert_close(cand.logits, ref_logits[keep], rtol=0, atol=1e-4)
    assert decode_grid(sharp, emb, coords_t, 0.0)[1].logits.shape[0] == 3 * len(coords)  # <= 0: all kept


def test_lowres_to_image_is_postprocess_masks(sharp: SumSam) -> None:
    maps = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(0))
    for hw in [(256, 256), (192, 256), (300, 97)]:
        in_hw = (int(hw[0] * 256 / max(hw) + 0.5), int(hw[1] * 256 / max(hw) + 0.5))
        assert torch.equal(lowres_to_image(maps, 256, hw), sharp.upscale(maps[:, None], in_hw, hw)[:, 0])


# --- the stock generator, quantiles ---------------------------------------------------------------------

@pytest.mark.parametrize("nms, which", [(0.7, [0, 1, 2]), (1.0, [2])])
def test_same_masks_as_stock_generator(sharp: SumSam, images: Path, single_run: Path, nms: float,
                                       which: list[int]) -> None:
    settings = _settings(box_nms_thresh=nms, **NO_AREA)
    thresholds = open_store(single_run).thresholds  # q0.6 / q0.4 over the three images
    stock = SamAutomaticMaskGenerator(sharp.sam, points_per_side=GRID, pred_iou_thresh=thresholds["pred_iou_thresh"],
                                      stability_score_thresh=thresholds["stability_score_thresh"],
                                      box_nms_thresh=nms, output_mode="coco_rle")
    total = 0
    for p in which:
        rgb = read_images(images).records[p].load_image()
        ours, _ = label_image(sharp, encode_image(sharp.sam, rgb)[None], rgb.shape[:2], settings, thresholds)
        ref = stock.generate(rgb)
        assert len(ours) == len(ref)
        for j, r in enumerate(ref):  # same order: descending predicted IoU
            assert np.array_equal(rle_utils.decode(ours.rles[j]), rle_utils.decode(r["segmentation"]))
            assert float(ours.predicted_iou[j]) == pytest.approx(r["predicted_iou"], abs=1e-5)
            assert float(ours.stability[j]) == pytest.approx(r["stability_score"], abs=1e-6)
            x0, y0, x1, y1 = ours.boxes[j].tolist()
            assert [x0, y0, x1 - x0, y1 - y0] == r["bbox"] and [ours.points[j].tolist()] == r["point_coords"]
        total += len(ref)
    assert total >= 3  # the comparison is not vacuous


def test_quantile_thresholds_are_quantiles_of_the_scores(sharp: SumSam, images: Path) -> None:
    settings = _settings(**NO_AREA)
    thresholds, counted = calibrate(sharp, _features(sharp, images), [0, 2], settings)
    ious, stabs = [], []
    for p in (0, 2):  # every candidate's scores, as SamPredictor and the stock generator compute them
        predictor = SamPredictor(sharp.sam)
        predictor.set_image(read_images(images).records[p].load_image())
        points, _ = grid_points(GRID, predictor.original_size, 256)
        for pt in points:
            logits, iou, _ = predictor.predict(pt[None], np.array([1]), multimask_output=True, return_logits=True)
            ious += iou.tolist()
            keep = iou > thresholds["pred_iou_thresh"]
            stabs += calculate_stability_score(torch.as_tensor(logits[keep]), 0.0, 1.0).tolist()
    assert thresholds["pred_iou_thresh"] == pytest.approx(np.quantile(ious, 0.6), abs=1e-6)
    assert thresholds["stability_score_thresh"] == pytest.approx(np.quantile(stabs, 0.4), abs=1e-6)
    assert counted == len(ious)


def test_score_quantile_leaves_out_nan_stability() -> None:
    assert score_quantile(np.array([0.2, np.nan, 0.4, 0.6]), 0.5, "stability") == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="no stability scores"):
        score_quantile(np.array([np.nan]), 0.5, "stability")


def test_threshold_and_shard_parsing() -> None:
    assert parse_threshold("q0.70", "t") == "q0.7" and parse_threshold("0.88", "t") == 0.88
    for bad in ("q1.5", "abc", "q"):
        with pytest.raises(ConfigError):
            parse_threshold(bad, "t")
    assert Shard.parse("1/3") == Shard(1, 3) and Shard.parse(None) == Shard(0, 1)
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError):
            Shard.parse(bad)


# --- the store: shards, resume, damaged files -----------------------------------------------------------

def _files(root: Path) -> dict[str, bytes]:
    """Every non-hidden file of a store except the shard indexes, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.parent.name != "index"}


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory, sharp: SumSam, images: Path) -> Path:
    out = tmp_path_factory.mktemp("single") / "pl"
    run_pseudo_labels(sharp, _config(images, out, _settings()))
    return out


def test_store_reads_back(single_run: Path, images: Path) -> None:
    store = open_store(single_run)
    assert [e.image_id for e in store.images] == ["img0", "img1", "img2"] and store.complete
    ds = read_sa1b(single_run / "labels")  # the per-image JSONs are SA-1B documents
    assert [r.image_path.resolve() for r in ds.records] == [p.resolve() for p in sorted(images.glob("*.png"))]
    for i in range(len(store)):
        labels = store.load(i)
        assert labels.logits.shape == (len(labels), 64, 64) and labels.confidence is None
        masks = store.masks(i)
        assert masks.shape == (len(labels), store.images[i].height, store.images[i].width)
        assert np.array_equal(masks, ds.records[i].mask_stack())
        up = lowres_to_image(labels.logits, 256, masks.shape[1:]).numpy()  # from the float16 logits
        assert (np.abs(up[masks != (up > 0)]) < 0.01).all()  # the masks differ only where |s| is in fp16's error


def test_shard_union_equals_single_run(tmp_path: Path, sharp: SumSam, images: Path, single_run: Path) -> None:
    out = tmp_path / "pl"
    for i in (1, 0):
        run_pseudo_labels(sharp, _config(images, out, _settings(), shard=f"{i}/2"))
    assert _files(out) == _files(single_run)
    assert open_store(out).images == open_store(single_run).images


def test_unfinished_shards_and_other_settings(tmp_path: Path, sharp: SumSam, images: Path) -> None:
    out = tmp_path / "pl"
    run_pseudo_labels(sharp, _config(images, out, _settings(), shard="0/2"))
    with pytest.raises(DataError, match="unfinished"):
        open_store(out)
    assert len(open_store(out, allow_partial=True)) == 2
    with pytest.raises(ConfigError, match="meta.json"):
        run_pseudo_labels(sharp, _config(images, out, _settings(box_nms_thresh=0.5), shard="1/2"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a pseudo-label store"):
        run_pseudo_labels(sharp, _config(images, tmp_path / "other", _settings()))


def test_resume_after_sigkill_equals_uninterrupted(tmp_path: Path, sharp: SumSam, checkpoint: Path,
                                                   images: Path, single_run: Path) -> None:
    out = tmp_path / "pl"
    cmd = [sys.executable, "-m", "sumseg", "pseudo-label", "--checkpoint", str(checkpoint), "--images",
           str(images), "--out", str(out), "--points-per-side", str(GRID), "--iou-thresh", "q0.6",
           "--stability-thresh", "q0.4", "--no-progress"]
    # the killed run uses this process's thread count: the resumed store must equal the uninterrupted one
    # bit for bit, which holds for the same sequence of operations, not across thread counts
    env = os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done: list[Path] = []
    while proc.poll() is None and not done:
        done = list((out / "labels").glob("*.json")) if (out / "labels").is_dir() else []
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= len(list((out / "labels").glob("*.json"))) < 3, "the run was not killed mid-way"
    run_pseudo_labels(sharp, _config(images, out, _settings()))  # resume (in this process: faster)
    assert _files(out) == _files(single_run)
    assert open_store(out).images == open_store(single_run).images


def test_damaged_store_files_are_named(tmp_path: Path, single_run: Path) -> None:
    import shutil

    out = tmp_path / "pl"
    shutil.copytree(single_run, out)
    store = open_store(out)
    stem = store.images[0].stem
    arrays, doc = out / "labels" / f"{stem}.safetensors", out / "labels" / f"{stem}.json"
    arrays.write_bytes(arrays.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match=f"{stem}.safetensors"):
        store.logits(0)
    save_checkpoint(arrays, build_model("tiny"))  # a foreign safetensors file
    with pytest.raises(DataError, match=f"{stem}.safetensors.*not a sumseg-pseudo-label-image"):
        store.load(0)
    doc.unlink()
    with pytest.raises(DataError, match=f"{stem}.json: file not found"):
        store.masks(0)
    (out / "index" / "shard-00000-of-00001.json").write_text("{\"images\": 3")
    with pytest.raises(DataError, match="shard-00000-of-00001.json: malformed JSON"):
        open_store(out)
    (out / "meta.json").write_text("{\"format\": \"something-else\"}")
    with pytest.raises(DataError, match="meta.json: not a sumseg pseudo-label store"):
        open_store(out)


def test_embedding_cache_is_filled_and_reused(tmp_path: Path, sharp: SumSam, images: Path) -> None:
    from sumseg.data import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "cache", sharp.cache_encoder())
    run_pseudo_labels(sharp, _config(images, tmp_path / "pl", _settings()), cache)
    assert len(cache) == 3 and open_store(tmp_path / "pl").complete
    run_pseudo_labels(sharp, _config(images, tmp_path / "pl2", _settings()), cache)
    assert _files(tmp_path / "pl2")["labels/img0.json"] == _files(tmp_path / "pl")["labels/img0.json"]


def test_empty_mask_stability_is_stored_as_zero(tmp_path: Path) -> None:
    from sumseg.checks import load_json
    from sumseg.pipeline.store import IMAGE_FORMAT, StoreEntry, write_image
    from sumseg.tensor_files import read_tensors

    cand, points = _cand([np.full((64, 64), -5.0)], [0.9])  # nothing above -1: stability 0/0
    labels, _ = _select(cand, points, stab=0.0)  # a threshold <= 0 keeps it, as the stock generator does
    assert len(labels) == 1 and torch.isnan(labels.stability).all()
    write_image(tmp_path, StoreEntry(0, "a", "a", "a.png", 256, 256, 1, [1, 0, 0, 0, 0]), labels)
    assert load_json(tmp_path / "a.json")["annotations"][0]["stability_score"] == 0.0  # strict JSON: no NaN
    assert read_tensors(tmp_path / "a.safetensors", IMAGE_FORMAT)[0]["stability_score"].tolist() == [0.0]


def test_thresholds_that_keep_almost_nothing_are_warned_about(tmp_path: Path, checkpoint: Path, images: Path,
                                                              single_run: Path) -> None:
    """SAM's 0.88 / 0.95 on a model whose scores are not SAM's keep ~nothing: stderr and the summary say so."""
    from typer.testing import CliRunner

    from sumseg.cli import app
    from sumseg.pipeline.pseudo_label_run import few_masks_warning, summarise

    res = CliRunner().invoke(app, ["pseudo-label", "--checkpoint", str(checkpoint), "--images", str(images),
                                   "--out", str(tmp_path / "pl"), "--points-per-side", str(GRID), "--no-progress"])
    assert res.exit_code == 0, res.output
    first = res.stdout.splitlines()[0]
    assert "per image mean 0.0" in first and "[almost nothing kept: try --iou-thresh q0.6 --stability-thresh q0.5" \
        in first
    assert res.stderr.startswith("warning: the thresholds kept almost nothing (0 masks on 3 images, 0.00 per image; "
                                 "given --iou-thresh 0.88 --stability-thresh 0.95)")
    assert "--iou-thresh q0.6 --stability-thresh q0.5 --max-per-image 6" in res.stderr
    kept = summarise(single_run)  # quantiles of the model's own scores keep masks: no warning
    assert sum(kept.masks_per_image) >= len(kept.masks_per_image) and few_masks_warning(kept) is None
