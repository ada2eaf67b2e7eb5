"""Uncertainty maps: U from known logits, quantisation, refiner inference equal to a per-mask
SamPredictor loop, resume and shards, stale or foreign maps, and the CLI end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from typer.testing import CliRunner

from sumseg import build_model
from sumseg.cli import app
from sumseg.config import PseudoLabelConfig, PseudoLabelSettings, UncertaintyConfig
from sumseg.data import encode_image, read_sa1b
from sumseg.errors import ConfigError, DataError
from sumseg.models.checkpoint import save_checkpoint
from sumseg.models.sum_sam import SumSam
from sumseg.pipeline.pseudo_label_run import run_pseudo_labels
from sumseg.pipeline.store import open_store
from sumseg.pipeline.uncertainty import quantise, refine, run_uncertainty, uncertainty_map
from sumseg.tensor_files import save_tensors
from tests.test_pseudo_labels import sharpened_tiny, write_images

SETTINGS = {"points_per_side": 8, "pred_iou_thresh": "q0.6", "stability_score_thresh": "q0.4"}


@pytest.fixture(scope="module")
def refiner() -> SumSam:
    return sharpened_tiny(30.0)  # not the foundation's weights (50.0), so U is not zero


def _config(store: Path, shard: str | None = None) -> UncertaintyConfig:
    """``sumseg uncertainty``'s section for ``run_uncertainty`` (no progress bar)."""
    return UncertaintyConfig(pseudo_labels=str(store), shard=shard, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unc")
    out = root / "pl"
    run_pseudo_labels(sharpened_tiny(), PseudoLabelConfig(images=str(write_images(root / "images")), out=str(out),
                                                          amg=PseudoLabelSettings(**SETTINGS), progress=False))
    return out


def _copy(store: Path, tmp_path: Path) -> Path:
    """A copy of the store beside its images (the JSONs name the images by relative path)."""
    out = store.parent / f"pl-{tmp_path.name}"
    shutil.copytree(store, out)
    return out


def _maps(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "labels").glob("*.uncertainty.safetensors"))}


def test_u_from_known_logits() -> None:
    s = torch.tensor([0.0, 0.0, 10.0, -10.0, 2.0])
    r = torch.tensor([0.0, 1e4, -10.0, -10.0, -2.0])
    u = uncertainty_map(s, r)
    expected = [0.0, 0.5, 1 / (1 + np.exp(-10)) - 1 / (1 + np.exp(10)), 0.0, np.tanh(1.0)]  # σ(2) − σ(−2) = tanh(1)
    assert u.tolist() == pytest.approx(expected, abs=1e-6)
    assert quantise(u).tolist() == [0, 128, 255, 0, 194]  # round(255 · U); 127.5 rounds to even
    many = torch.rand(10000, generator=torch.Generator().manual_seed(0))
    assert float((quantise(many).float() / 255 - many).abs().max()) <= 1 / 510 + 1e-7


def test_refine_equals_a_per_mask_predictor_loop(store: Path, refiner: SumSam) -> None:
    pl = open_store(store)
    checked = 0
    for i in range(len(pl)):
        labels, rgb = pl.load(i), pl.record(i).load_image()
        ours = refine(refiner, encode_image(refiner.sam, rgb)[None], labels, rgb.shape[:2], batch=2)
        predictor = SamPredictor(refiner.sam)
        predictor.set_image(rgb)
        for k in range(len(labels)):
            _, _, low = predictor.predict(labels.points[k : k + 1].numpy(), np.array([1]), labels.boxes[k].numpy(),
                                          labels.logits[k : k + 1].numpy(), multimask_output=False,
                                          return_logits=True)
            np.testing.assert_allclose(ours[k].numpy(), low[0], atol=1e-4, rtol=0)
            checked += 1
    assert checked >= 3


def test_maps_written_and_read_back(store: Path, refiner: SumSam, tmp_path: Path) -> None:
    root = _copy(store, tmp_path)
    summary = run_uncertainty(refiner, _config(root))
    pl = open_store(root)
    assert pl.has_uncertainty and summary.images_done == len(pl) == summary.computed_now
    labels, rgb = pl.load(0), pl.record(0).load_image()
    u = uncertainty_map(labels.logits, refine(refiner, encode_image(refiner.sam, rgb)[None], labels, rgb.shape[:2]))
    assert labels.confidence is not None
    torch.testing.assert_close(labels.confidence, 1 - quantise(u).float() / 255, rtol=0, atol=0)
    assert summary.mean_u > 0 and summary.masks == sum(e.num_masks for e in pl.images)
    assert len(read_sa1b(root / "labels")) == len(pl)  # U files beside the JSONs do not disturb the reader


def test_resume_and_shards_give_the_same_maps(store: Path, refiner: SumSam, tmp_path: Path) -> None:
    whole, sharded = _copy(store, tmp_path / "a"), _copy(store, tmp_path / "b")
    run_uncertainty(refiner, _config(whole))
    for i in (1, 0):
        run_uncertainty(refiner, _config(sharded, f"{i}/2"))
    assert _maps(sharded) == _maps(whole) and len(_maps(whole)) == 3
    first = sorted((whole / "labels").glob("*.uncertainty.safetensors"))[0]
    first.unlink()  # as if killed before this image
    assert run_uncertainty(refiner, _config(whole)).computed_now == 1
    assert _maps(whole) == _maps(sharded)


def test_another_refiner_or_stale_maps_are_refused(store: Path, refiner: SumSam, tmp_path: Path) -> None:
    root = _copy(store, tmp_path)
    run_uncertainty(refiner, _config(root))
    with pytest.raises(ConfigError, match="uncertainty.json: the U maps here come from another refiner"):
        run_uncertainty(sharpened_tiny(20.0), _config(root))
    with pytest.raises(ConfigError, match="--refiner: a refiner must be a plain SAM model, got the HQ-SAM model"):
        run_uncertainty(build_model("hq_tiny"), _config(root))
    pl = open_store(root)
    arrays = root / "labels" / f"{pl.images[0].stem}.safetensors"
    labels = pl.load(0)
    save_tensors(arrays, {"logits": (labels.logits + 1).half(), "boxes": labels.boxes, "points": labels.points,
                          "predicted_iou": labels.predicted_iou, "stability_score": labels.stability},
                 {"format": "sumseg-pseudo-label-image", "version": 1, "num_masks": len(labels)})
    with pytest.raises(DataError, match="uncertainty.safetensors: made for other pseudo-labels"):
        pl.confidence(0)
    assert run_uncertainty(refiner, _config(root)).computed_now == 1  # recomputed for the new labels
    assert pl.confidence(0) is not None


def test_cli_end_to_end(tmp_path: Path, refiner: SumSam) -> None:
    images = write_images(tmp_path / "images")
    foundation = save_checkpoint(tmp_path / "foundation.safetensors", sharpened_tiny())
    ref_ckpt = save_checkpoint(tmp_path / "refiner.safetensors", refiner)
    runner, out = CliRunner(), tmp_path / "pl"
    args = ["pseudo-label", "--checkpoint", str(foundation), "--images", str(images), "--out", str(out),
            "--points-per-side", "8", "--iou-thresh", "q0.6", "--stability-thresh", "q0.4", "--max-per-image", "2",
            "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "3 images (3 labelled by this run)" in res.output and "bytes per image" in res.output
    assert max(e.num_masks for e in open_store(out).images) <= 2
    res = runner.invoke(app, ["uncertainty", "--pseudo-labels", str(out), "--refiner", str(ref_ckpt), "--show", "2",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert open_store(out).has_uncertainty and len(list((out / "overlays").glob("*.png"))) == 2
    bad = runner.invoke(app, [*args[:-1], "--iou-thresh", "q2"])
    assert bad.exit_code == 1 and "q<0..1>" in bad.output
    missing = runner.invoke(app, ["uncertainty", "--pseudo-labels", str(tmp_path / "nope"), "--refiner",
                                  str(ref_ckpt)])
    assert missing.exit_code == 1 and "meta.json: not found" in missing.output
