"""A short tiny SUM run lowers the loss of a fixed batch, and its logged loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sumseg import build_model
from sumseg.config import load_config
from sumseg.models.sum_sam import SumSam
from sumseg.prompts.sampler import UncertaintySampler
from sumseg.train.batch import MaskBatch
from sumseg.train.distributed import Replica
from sumseg.train.schedule import step_generator
from sumseg.train.step import InteractiveStep
from sumseg.train.train_run import build_training, train
from tests.train_fixtures import overrides, world_and_store

CPU = Replica(0, 1, 0, torch.device("cpu"))


def fixed_loss(model: SumSam, batch: MaskBatch, like: InteractiveStep) -> float:
    """The loss of a step set up as ``like`` on ``batch`` with the prompts of draw 0, no gradients."""
    with torch.no_grad():
        step = InteractiveStep(model, like.corrections, like.final_round, like.loss, like.use_task, like.task_rounds,
                               like.resolution)
        out = step(batch, UncertaintySampler(step_generator(0, 0, 0)))
    return float(out["loss"])


def test_short_tiny_run_lowers_the_loss(tmp_path: Path) -> None:
    world, store = world_and_store(tmp_path)
    cfg = load_config(None, overrides(world, store, tmp_path / "run", "optim.steps=6", "data.masks_per_image=4"))
    setup = build_training(cfg, CPU)
    batch, _ = setup.inputs(0, CPU)
    before = fixed_loss(setup.model, batch, setup.module)
    train(cfg)
    after = fixed_loss(build_model(None, tmp_path / "run" / "last.ckpt"), batch, setup.module)
    assert after < 0.8 * before, (before, after)
    logged = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 6 and logged[0] == pytest.approx(before, rel=1e-4)  # step 0 trains on that very batch
    assert sum(logged[-3:]) / 3 < logged[0]
