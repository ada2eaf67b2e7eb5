"""A ``sumseg refiner train`` run SIGKILLed at every phase (during a step before the first save; inside the
resume state's atomic write; after the state, before ``last.ckpt``; inside ``last.ckpt``'s atomic write;
after the second ``last.ckpt``, before the old state is removed; after a metrics row that no save
covers) leaves a folder the same command resumes, and the resumed ``last.ckpt`` equals an uninterrupted
run's (every tensor bit for bit, the step, the saved config but ``run.out``), with one metrics row per step
(issue 17, class 5).

The killed run is the CLI in a forked child of this process (the pattern of tests/test_pseudo_labels_kill.py).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sumseg.cli import app
from sumseg.data.synthetic_world import SPLITS, write_world
from sumseg.models.checkpoint import read_checkpoint
from tests.test_pseudo_labels_kill import _nth, _wrap, killed_cli

PHASES = ["mid-step", "inside-state-write", "state-not-ckpt", "inside-ckpt-write", "ckpt-not-cleanup",
          "row-not-saved"]


def _args(world: Path, out: Path) -> list[str]:
    return ["refiner", "train", "model.name=tiny", f"data.labelled=[{world}]", "data.embedding_cache=null",
            "data.images_per_step=1", "data.masks_per_image=2", "inputs.min_iou=0.0", "optim.steps=4",
            "optim.warmup=0", "run.save_every=2", "run.log_every=1", "run.progress=false", "run.device=cpu",
            f"run.out={out}"]


def _arm(phase: str) -> None:
    """Patch the loop (in the child) so that it SIGKILLs itself at ``phase``."""
    import sumseg.models.checkpoint as checkpoint
    import sumseg.train.loop as loop
    import sumseg.train.progress as progress

    if phase == "mid-step":
        loop.save_run = _wrap(loop.save_run, lambda *a, **k: True, before=True)
    elif phase == "inside-state-write":  # the loop's one atomic write is the state's
        loop.atomic_path = _dying_atomic_any(loop.atomic_path)
    elif phase == "state-not-ckpt":
        loop.save_checkpoint = _wrap(loop.save_checkpoint, _nth(1), before=True)
    elif phase == "inside-ckpt-write":
        checkpoint.atomic_path = _dying_atomic_any(checkpoint.atomic_path)
    elif phase == "ckpt-not-cleanup":
        loop.save_checkpoint = _wrap(loop.save_checkpoint, _nth(2), before=False)
    elif phase == "row-not-saved":
        progress.append_metrics = _wrap(progress.append_metrics, _nth(3), before=False)


def _die_after(real, target):  # noqa: ANN001, ANN202 - a context manager like atomic_path
    """``atomic_path(target)`` that SIGKILLs once the temporary file is written, before the rename."""
    import contextlib

    @contextlib.contextmanager
    def dying():  # noqa: ANN202
        with real(target) as tmp:
            yield tmp
            os.kill(os.getpid(), signal.SIGKILL)
    return dying()


def _dying_atomic_any(real):  # noqa: ANN001, ANN202
    return lambda target: _die_after(real, target)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_world(root, seed=0, sizes={s: 2 if s == "task1_train" else 0 for s in SPLITS}, workers=1, progress=False)
    return root / "task1_train"


@pytest.fixture(scope="module")
def whole(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "r"
    res = CliRunner().invoke(app, _args(world, out))
    assert res.exit_code == 0, res.output
    return out


def _without_out(config: dict) -> dict:
    """A saved config without ``run.out`` (the two runs' folders differ, nothing else may)."""
    inner = config["refiner"]
    return {"refiner": {**inner, "run": {k: v for k, v in inner["run"].items() if k != "out"}}}


def _steps(run: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("phase", PHASES)
def test_refiner_killed_at_every_phase_resumes_to_the_uninterrupted_run(world: Path, whole: Path, tmp_path: Path,
                                                                        phase: str) -> None:
    out = tmp_path / "r"
    status = killed_cli(lambda: _arm(phase), _args(world, out), tmp_path / "child.log")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (tmp_path / "child.log").read_text()
    done = out / "last.ckpt"
    if phase != "ckpt-not-cleanup":  # that one is killed after the last checkpoint, before the old state goes
        assert not done.exists() or read_checkpoint(done)[1].step < 3  # type: ignore[union-attr] - before the end
    res = CliRunner().invoke(app, _args(world, out))  # the same command, resumed
    assert res.exit_code == 0, res.output
    (a, meta_a), (b, meta_b) = read_checkpoint(out / "last.ckpt"), read_checkpoint(whole / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert meta_a is not None and meta_b is not None and meta_a.step == meta_b.step == 3
    assert _without_out(meta_a.config) == _without_out(meta_b.config)
    assert _steps(out) == _steps(whole) == [0, 1, 2, 3]
    assert (out / "state" / "step_00000003.pt").is_file()  # the resume state of the last checkpoint


def test_a_rerun_with_another_config_is_refused_like_train(world: Path, tmp_path: Path) -> None:
    """Before: the refiner resumed (or reported "already trained") whatever its config now said."""
    out = tmp_path / "r"
    args = _args(world, out)
    assert CliRunner().invoke(app, [*args[:-2], "optim.steps=2", args[-1]]).exit_code == 0
    res = CliRunner().invoke(app, [*args[:-2], "optim.steps=2", "inputs.min_iou=0.5", args[-1]])
    assert res.exit_code == 1
    assert res.output.strip() == (f"error: {out / 'last.ckpt'}: this run was started with another config "
                                  "(inputs.min_iou: 0.0 -> 0.5); rerun with the same config to resume, or choose "
                                  "another run.out")
    res = CliRunner().invoke(app, [*args[:-2], "optim.steps=2", "run.log_every=2", "run.progress=true", args[-1]])
    assert res.exit_code == 0 and "already trained" in res.output, res.output  # RESUME_FREE keys may change
