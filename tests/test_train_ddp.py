"""``sumseg train`` under ``torchrun --nproc_per_node 2`` (gloo, CPU, one thread each): it finishes,
rank 0 alone logs and checkpoints, and its checkpoint loads with ``build_model`` and evaluates.

Replicas: at every save the loop compares a digest of every trained tensor across the ranks and
stops the run if they differ (tests/test_train_loop.py checks the digest sees one ulp), so a
finished run means rank 0 and rank 1 held bit-identical weights after steps 1 and 2 — although
each rank drew its own images and prompts, i.e. only DDP's gradient averaging kept them together.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from sumseg import build_model
from sumseg.evaluate.run import EvalSettings, evaluate
from tests.test_train_resume import ENV, ROOT, tiny_train_config
from tests.train_fixtures import tiny_world


def test_torchrun_two_gloo_ranks_train_and_the_rank0_checkpoint_evaluates(tmp_path: Path) -> None:
    world = tiny_world(tmp_path / "world", labelled=3, unlabelled=0)
    config = tiny_train_config(tmp_path / "train.yaml", world, steps=3)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sumseg", "train", "--config", str(config), f"run.out={out}"]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # one writer: rank 0
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert len(list((out / "tensorboard").iterdir())) == 1
    assert [p.name for p in (out / "state").iterdir()] == ["step_00000002.pt"]

    model = build_model(None, out / "last.ckpt")
    init = build_model("tiny").state_dict()
    trained = model.state_dict()
    assert not torch.equal(trained["sam.image_encoder.patch_embed.proj.weight"],
                           init["sam.image_encoder.patch_embed.proj.weight"])  # the encoder trained too
    results, skipped = evaluate(model, {"task1": world / "task1_train"},
                                EvalSettings(rounds=2, limit=2, overlays=0), tmp_path / "eval", progress=False)
    clicks = results["task1"]["clicks"]
    assert clicks["n"] == 2 and skipped == {"task1": 0}
    assert all(0 <= v <= 1 for v in clicks["miou"]) and len(clicks["miou"]) == 2
