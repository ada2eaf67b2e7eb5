"""A LoRA run stopped by a bad file mid-run resumes, after the file is fixed, to the uninterrupted
run's weights bit for bit (the checkpoint holds merged weights; the adapters come from the state file)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch

from sumseg.config import load_config
from sumseg.errors import DataError
from sumseg.models.checkpoint import read_checkpoint
from sumseg.pipeline.store import open_store
from sumseg.train.schedule import image_at, slot_source
from sumseg.train.sources import PseudoLabelSource
from sumseg.train.train_run import train
from tests.train_fixtures import overrides, world_and_store

HALF = Fraction(1, 2)


def test_lora_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    world, store = world_and_store(tmp_path)
    settings = ("mode=lora", "optim.steps=3", "run.save_every=1", "rounds.corrections=0", "rounds.final_round=false")
    train(load_config(None, overrides(world, store, tmp_path / "straight", *settings)))

    # the pseudo-labelled image of step 2 (slot 4 of 2 images per step, 1:1) is not drawn before it
    which, position = slot_source(4, HALF)
    assert which == 1 and all(slot_source(p, HALF) != (1, position) for p in range(4))
    source = PseudoLabelSource(open_store(store), 2, 256, True)
    u_file = source.store.uncertainty_path(source.index[image_at(0 + 1, position, len(source))])
    good = u_file.read_bytes()
    u_file.write_bytes(good[:50])
    cfg = load_config(None, overrides(world, store, tmp_path / "broken", *settings))
    with pytest.raises(DataError, match="unreadable"):
        train(cfg)
    _, meta = read_checkpoint(tmp_path / "broken" / "last.ckpt")
    assert meta is not None and meta.step == 1
    u_file.write_bytes(good)
    train(cfg)  # the same command resumes at step 2

    straight, m1 = read_checkpoint(tmp_path / "straight" / "last.ckpt")
    resumed, m2 = read_checkpoint(tmp_path / "broken" / "last.ckpt")
    assert m1 is not None and m2 is not None and m1.step == m2.step == 2
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
