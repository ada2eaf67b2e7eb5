"""The whole method on SAM 2 from the command line (``--model sam2_tiny``, random weights): ``sumseg
pseudo-label`` → ``refiner train`` → ``uncertainty`` → ``train`` (sum, decoder) → ``eval`` → ``export --format
hf``, on a tiny synthetic world (one embedding cache serves pseudo-label, uncertainty and train: the
refiner's and the decoder run's image side is sam2_tiny's, frozen); and the SAM 2 names in every command's
model rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from sumseg.cli import app  # noqa: E402
from sumseg.data.synthetic_world import SPLITS, write_world  # noqa: E402
from sumseg.model_names import SAM2_NAMES, model_problems  # noqa: E402

runner = CliRunner()


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"{args[:2]}: {res.output}\n{res.exception!r}"
    return res.output


def test_every_command_takes_the_sam2_names() -> None:
    for name in SAM2_NAMES:
        assert model_problems(name, None) == []
        assert model_problems(name, Path("x.pt"), ("--model", "--checkpoint")) == []
    from sumseg.config import load_config, load_refiner_config

    assert load_refiner_config(None, ["model.name=sam2_tiny", "data.labelled=[x]"]).model.name == "sam2_tiny"
    cfg = load_config(None, ["model.name=sam2.1_hiera_b+", "data.labelled=[{path: x}]", "data.pseudo_labels=pl"])
    assert cfg.model.name == "sam2.1_hiera_b+"


def _world(root: Path) -> Path:
    sizes = {s: 0 for s in SPLITS} | {"task1_train": 2, "pretrain": 2}
    write_world(root, seed=0, sizes=sizes, image_size=64, workers=1, progress=False)
    return root


def test_the_method_end_to_end_on_sam2_tiny(tmp_path: Path) -> None:
    world, pl = _world(tmp_path / "world"), tmp_path / "pl"
    out = _ok(["pseudo-label", "--images", str(world / "pretrain"), "--out", str(pl), "--model", "sam2_tiny",
               "--points-per-side", "4", "--points-per-batch", "16", "--iou-thresh", "q0.3", "--stability-thresh", "0",
               "--min-area-ratio", "0", "--max-area-ratio", "2", "--calibration-images", "0",
               "--cache", str(tmp_path / "cache"), "--no-progress"])
    meta = json.loads((pl / "meta.json").read_text())
    assert meta["model"] == "sam2_tiny" and meta["frame"] == "squash", out
    assert sum(json.loads(p.read_text())["complete"] * len(json.loads(p.read_text())["images"])
               for p in (pl / "index").glob("*.json")) == 2
    labelled = f"[{world / 'task1_train'}]"
    _ok(["refiner", "train", "--config", "configs/refiner_tiny.yaml", "model.name=sam2_tiny",
         f"data.labelled={labelled}", "data.embedding_cache=null", "data.masks_per_image=2", "data.images_per_step=1",
         "inputs.min_iou=0.0", "optim.steps=2", "optim.warmup=0", "run.log_every=1", f"run.out={tmp_path / 'ref'}",
         "run.progress=false"])
    out = _ok(["uncertainty", "--pseudo-labels", str(pl), "--refiner", str(tmp_path / "ref" / "last.ckpt"),
               "--cache", str(tmp_path / "cache"), "--no-progress"])  # the refiner's encoder: sam2_tiny's, frozen
    assert "U maps: 2 of 2 images" in out and " 0 masks" not in out, out
    run = tmp_path / "sum"
    _ok(["train", "--config", "configs/tiny_sum.yaml", "model.name=sam2_tiny", "model.checkpoint=null",
         f"data.labelled=[{{path: {world / 'task1_train'}, task: 1}}]", f"data.pseudo_labels={pl}",
         f"data.embedding_cache={tmp_path / 'cache'}", "data.masks_per_image=2", "data.images_per_step=2",
         "method=sum", "mode=decoder", "rounds.corrections=1", "optim.steps=2", "optim.warmup=0", "run.device=cpu",
         "run.progress=false", "run.log_every=1", f"run.out={run}"])
    assert (run / "last.ckpt").is_file()
    _ok(["eval", "--datasets", str(world / "task1_train"), "--out", str(tmp_path / "eval"), "--checkpoint",
         str(run / "last.ckpt"), "--model", "sam2_tiny", "--rounds", "2", "--limit", "2", "--no-progress"])
    assert (tmp_path / "eval" / "results.json").is_file()
    _ok(["export", "--checkpoint", str(run / "last.ckpt"), "--task", "1", "--format", "hf", "--out",
         str(tmp_path / "hf")])
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "sam2"
