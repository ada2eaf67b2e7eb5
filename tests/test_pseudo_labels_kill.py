"""A ``sumseg pseudo-label`` run SIGKILLed at every phase (after calibrating, before meta.json; inside
meta.json's atomic write; after meta.json, before the first image; between an image's arrays and its
JSON; inside an image JSON's atomic write; just before the final index marks the shard complete)
leaves a folder that the same command resumes, and the resumed store equals an uninterrupted run's
byte for byte (indexes included).

The killed run is the CLI (``sumseg.cli.app``) in a forked child of this process: the same modules,
thread count and float operations as the resume here, without a second interpreter's start-up."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sumseg.models.sum_sam import SumSam
from sumseg.pipeline.pseudo_label_run import run_pseudo_labels
from sumseg.pipeline.store import open_store
from tests import test_pseudo_labels as base

GRID, _settings = base.GRID, base._settings
sharp, images, checkpoint, single_run = base.sharp, base.images, base.checkpoint, base.single_run  # its fixtures


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _nth(n: int) -> Callable[..., bool]:
    """A predicate that is true on its n-th call only."""
    calls = [0]

    def when(*_: Any, **__: Any) -> bool:
        calls[0] += 1
        return calls[0] == n
    return when


def _wrap(fn: Callable[..., Any], when: Callable[..., bool], before: bool) -> Callable[..., Any]:
    """``fn`` that SIGKILLs the process before (or after) a call for which ``when(*args)`` is true."""
    def wrapped(*a: Any, **k: Any) -> Any:
        if before and when(*a, **k):
            _die()
        out = fn(*a, **k)
        if not before and when(*a, **k):
            _die()
        return out
    return wrapped


def _dying_atomic(real: Callable[..., Any], nth_json: int) -> Callable[..., Any]:
    """``atomic_path`` that SIGKILLs after the n-th JSON's temporary file is written, before its rename."""
    when = _nth(nth_json)

    @contextlib.contextmanager
    def dying(target: Any) -> Iterator[Path]:
        with real(target) as tmp:
            yield tmp
            if str(target).endswith(".json") and when():
                _die()
    return dying


def _arm(phase: str) -> None:
    """Patch the pipeline (in the child) so that it SIGKILLs itself at ``phase``."""
    import sumseg.pipeline.pseudo_label_run as run
    import sumseg.pipeline.store as store

    if phase == "calibrated":
        run.calibrate = _wrap(run.calibrate, lambda *a, **k: True, before=False)
    elif phase == "meta-written":
        run.read_entry = _wrap(run.read_entry, lambda *a, **k: True, before=True)
    elif phase == "arrays-not-json":
        store.save_tensors = _wrap(store.save_tensors, _nth(2), before=False)
    elif phase == "before-marker":
        run.write_index = _wrap(run.write_index, lambda *a, **k: bool(k.get("complete")), before=True)
    elif phase in ("inside-meta-write", "inside-image-write"):
        import sumseg.atomic as atomic  # the store's and the run's JSON go through write_json → atomic_path

        atomic.atomic_path = _dying_atomic(atomic.atomic_path, 1 if phase == "inside-meta-write" else 2)


def killed_cli(arm: Callable[[], None], argv: list[str], log: Path) -> int:
    """Run ``sumseg <argv>`` in a forked child, ``arm()`` first (it patches where the child dies); its wait
    status. The refiner's kill test uses it too."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            arm()
            from sumseg.cli import app
            app(argv, prog_name="sumseg")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 4
        except BaseException:  # noqa: BLE001 - report, then exit the child whatever happened
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


PHASES = ["calibrated", "inside-meta-write", "meta-written", "arrays-not-json", "inside-image-write",
          "before-marker"]


def _all_files(root: Path) -> dict[str, bytes]:
    """Every non-hidden file of a store, indexes included, by relative path (hidden: locks, temporary files)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


@pytest.mark.parametrize("phase", PHASES)
def test_kill_at_every_phase_then_rerun_equals_uninterrupted(tmp_path: Path, sharp: SumSam, checkpoint: Path,
                                                             images: Path, single_run: Path, phase: str) -> None:
    out = tmp_path / "pl"
    cli = ["pseudo-label", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
           "--points-per-side", str(GRID), "--iou-thresh", "q0.6", "--stability-thresh", "q0.4", "--no-progress"]
    status = killed_cli(lambda: _arm(phase), cli, tmp_path / "child.log")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (tmp_path / "child.log").read_text()
    assert out.is_dir() and _all_files(out) != _all_files(single_run)  # killed before the end
    run_pseudo_labels(sharp, base._config(images, out, _settings()))  # the same command, resumed
    assert _all_files(out) == _all_files(single_run)
    assert open_store(out).complete
