"""``sumseg train`` killed with SIGKILL mid-run and rerun ends bit for bit where an uninterrupted run
ends; while it trains, a second run into its folder (from the test's process) is refused.

Real processes on the tiny model, full mode (every weight trains), one image and two masks per step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sumseg.errors import ConfigError
from sumseg.models.checkpoint import read_checkpoint
from sumseg.train.loop import run_lock
from tests.train_fixtures import tiny_world

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
STEPS = 6


def tiny_train_config(path: Path, world: Path, steps: int = STEPS) -> Path:
    """A ``sumseg train`` YAML: the tiny model from random weights, vanilla, full mode, 1 image × 2 masks
    per step, 1 correction round, a save every 2 steps."""
    path.write_text(f"""\
model: {{name: tiny}}
data:
  labelled: [{{path: {world / 'task1_train'}, task: 1}}]
  masks_per_image: 2
  images_per_step: 1
method: vanilla
mode: full
rounds: {{corrections: 1, final_round: false}}
optim: {{lr: 1.0e-4, steps: {steps}}}
run: {{save_every: 2, log_every: 1, device: cpu, progress: false}}
""")
    return path


def sumseg_train(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sumseg", "train", "--config", str(config), f"run.out={out}"]


def test_sigkill_then_rerun_equals_an_uninterrupted_run_and_a_busy_folder_is_refused(tmp_path: Path) -> None:
    world = tiny_world(tmp_path / "world", labelled=3, unlabelled=0)
    config = tiny_train_config(tmp_path / "train.yaml", world)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    reference = subprocess.Popen(sumseg_train(config, ref), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    run = subprocess.Popen(sumseg_train(config, killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "last.ckpt").exists():  # the first save (step 1) is committed
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(ConfigError, match=f"{killed} is in use by another training run"):
        with run_lock(killed):  # a second run into the folder, from this process
            pass
    assert run.poll() is None  # the first one was training all along
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    _, meta = read_checkpoint(killed / "last.ckpt")
    assert meta is not None and meta.step < STEPS - 1  # killed mid-way
    rerun = subprocess.run(sumseg_train(config, killed), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-2000:]
    a, b = read_checkpoint(ref / "last.ckpt")[0], read_checkpoint(killed / "last.ckpt")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(ln) for ln in (killed / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(ln) for ln in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(STEPS))
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
