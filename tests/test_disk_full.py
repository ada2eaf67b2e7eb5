"""Issue 17, class 2: a full disk, a bad device, a damaged resume state and NaN in JSON end in one
sumseg error line naming the file and the cause, never a traceback; a rerun after a full disk
finishes with the result of an uninterrupted run.

The full disk is a per-process file-size limit (``RLIMIT_FSIZE`` with ``SIGXFSZ`` ignored): a write
past the limit fails with EFBIG, like ENOSPC on a full disk, in the CLI's own subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sumseg import build_model
from sumseg.atomic import atomic_path, writing
from sumseg.cli import app
from sumseg.errors import ConfigError, WriteError
from sumseg.models.checkpoint import read_checkpoint, save_checkpoint
from sumseg.train.distributed import resolve_device
from tests.test_pseudo_labels import sharpened_tiny, write_images
from tests.train_fixtures import overrides, world_and_store

LIMITED = ("import resource, signal, sys\n"
           "n = int(sys.argv.pop(1))\n"
           "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
           "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))\n"
           "from sumseg.cli import app\n"
           "app(sys.argv[1:], prog_name='sumseg')\n")
PL_ARGS = ["--points-per-side", "8", "--iou-thresh", "q0.6", "--stability-thresh", "q0.4", "--no-progress"]


def _full_disk(args: list[str], limit: int) -> str:
    """Run ``sumseg ARGS`` with files limited to ``limit`` bytes; assert one error line, return it."""
    env = os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())}  # same float ops as this process
    proc = subprocess.run([sys.executable, "-c", LIMITED, str(limit), *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.fullmatch(r"error: \S+: cannot write it \(File too large.*\)", lines[0]), lines
    return lines[0]


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, locks left out; no temporary file may be there."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and not p.name.endswith(".lock")}
    assert not [f for f in files if f.endswith(".tmp")], files.keys()
    return files


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(images, foundation checkpoint, an uninterrupted pseudo-label store)."""
    root = tmp_path_factory.mktemp("full")
    images = write_images(root / "images")
    foundation = save_checkpoint(root / "sharp.safetensors", sharpened_tiny())
    _ok(["pseudo-label", "--checkpoint", str(foundation), "--images", str(images), "--out", str(root / "whole"),
         *PL_ARGS])
    return images, foundation, root / "whole"


def test_pseudo_label_and_uncertainty_on_a_full_disk(stores: tuple[Path, Path, Path]) -> None:
    images, foundation, whole = stores
    out = whole.parent / "full"
    args = ["pseudo-label", "--checkpoint", str(foundation), "--images", str(images), "--out", str(out), *PL_ARGS]
    line = _full_disk(args, 3000)  # meta.json fits, an image's arrays do not
    assert f"{out / 'labels'}/img" in line
    _ok(args)
    assert _files(out) == _files(whole)

    refiner = save_checkpoint(whole.parent / "refiner.safetensors", sharpened_tiny(30.0))
    for name in ("u_whole", "u_full"):
        shutil.copytree(whole, whole.parent / name)
    u_args = ["uncertainty", "--refiner", str(refiner), "--no-progress", "--pseudo-labels"]
    _ok([*u_args, str(whole.parent / "u_whole")])
    line = _full_disk([*u_args, str(whole.parent / "u_full")], 1500)  # uncertainty.json fits, a U map not
    assert ".uncertainty.safetensors: cannot write it" in line
    _ok([*u_args, str(whole.parent / "u_full")])
    assert _files(whole.parent / "u_full") == _files(whole.parent / "u_whole")


def test_train_and_export_on_a_full_disk(tmp_path: Path) -> None:
    world, store = world_and_store(tmp_path)
    base = overrides(world, store, tmp_path / "whole", "run.save_every=2")
    _ok(["train", *base])
    args = ["train", *overrides(world, store, tmp_path / "full", "run.save_every=2")]
    line = _full_disk(args, 100_000)  # config files and metric rows fit, the resume state does not
    assert f"{tmp_path / 'full' / 'state'}/step_" in line
    _ok(args)
    assert _equal(_tensors(tmp_path / "full" / "last.ckpt"), _tensors(tmp_path / "whole" / "last.ckpt"))
    rows = [json.loads(ln) for ln in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # the failed run's rows are redone, not doubled

    ckpt = tmp_path / "whole" / "last.ckpt"
    e_args = ["export", "--checkpoint", str(ckpt), "--task", "1", "--no-verify", "--out"]
    _ok([*e_args, str(tmp_path / "e_whole" / "sam.pth")])
    line = _full_disk([*e_args, str(tmp_path / "e_full" / "sam.pth")], 10_000)
    assert f"{tmp_path / 'e_full' / 'sam.pth'}: cannot write it" in line
    assert list((tmp_path / "e_full").iterdir()) == []  # no temporary file left
    _ok([*e_args, str(tmp_path / "e_full" / "sam.pth")])
    a = torch.load(tmp_path / "e_full" / "sam.pth", weights_only=True)
    assert _equal(a, torch.load(tmp_path / "e_whole" / "sam.pth", weights_only=True))

    state = next((tmp_path / "whole" / "state").glob("step_*.pt"))  # a damaged resume state is named
    state.write_bytes(state.read_bytes()[:1000])
    res = CliRunner().invoke(app, ["train", *base])  # a finished run reads its state too
    assert res.exit_code == 1, res.output
    assert res.output.startswith(f"error: {state}: damaged resume state (truncated or corrupt")


def test_failed_writes_name_the_target_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match=r"a\.json: cannot write it \(it would hold a non-finite number"):
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text(json.dumps({"iou": float("nan")}, allow_nan=False))
    with pytest.raises(WriteError, match=r"b\.txt: cannot write it \(No space left on device\)"):
        with writing(tmp_path / "b.txt"):
            raise OSError(28, os.strerror(28))
    with pytest.raises(KeyError):  # not a write failure: unchanged
        with atomic_path(tmp_path / "c.txt"):
            raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_an_unwritable_folder_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    res = CliRunner().invoke(app, ["export", "--checkpoint", str(save_checkpoint(tmp_path / "c.ckpt",
                                   build_model("tiny"))), "--task", "1", "--no-verify", "--out",
                                   str(tmp_path / "ro" / "sam.pth")])
    assert res.exit_code == 1 and "Permission denied" in res.output and "Traceback" not in res.output


def test_device_strings_name_the_key_and_what_there_is() -> None:
    with pytest.raises(ConfigError, match=r"--device must be one of auto, cpu, cuda or cuda:N, got 'xyz' "
                                          r"\(available here: cpu"):
        resolve_device("xyz", key="--device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"run.device is 'cuda' but torch sees no CUDA device \(available "
                                              r"here: cpu; no CUDA device\)"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    res = CliRunner().invoke(app, ["uncertainty", "--pseudo-labels", "x", "--refiner", "tiny", "--device", "xyz"])
    assert res.exit_code == 1 and res.output.startswith("error: --device must be one of"), res.output


def test_refiner_train_on_a_full_disk(tmp_path: Path) -> None:
    from sumseg.data.synthetic_world import SPLITS, write_world
    from tests.test_refiner_kill import _args, _steps, _without_out

    write_world(tmp_path / "w", seed=0, sizes={s: 2 if s == "task1_train" else 0 for s in SPLITS}, workers=1,
                progress=False)
    world = tmp_path / "w" / "task1_train"
    _ok(_args(world, tmp_path / "whole"))
    line = _full_disk(_args(world, tmp_path / "full"), 100_000)  # config.json and rows fit, the state does not
    assert f"{tmp_path / 'full' / 'state'}/step_" in line
    _ok(_args(world, tmp_path / "full"))
    (a, meta_a), (b, meta_b) = read_checkpoint(tmp_path / "full" / "last.ckpt"), read_checkpoint(
        tmp_path / "whole" / "last.ckpt")
    assert _equal(a, b) and meta_a is not None and meta_b is not None
    assert _without_out(meta_a.config) == _without_out(meta_b.config) and meta_a.step == meta_b.step
    assert _steps(tmp_path / "full") == _steps(tmp_path / "whole") == [0, 1, 2, 3]


def test_eval_on_a_full_disk(tmp_path: Path) -> None:
    from sumseg.data.synthetic_world import SPLITS, write_world

    write_world(tmp_path / "w", seed=0, sizes={s: 2 if s == "task1_train" else 0 for s in SPLITS}, workers=1,
                progress=False)
    args = ["eval", "--datasets", str(tmp_path / "w" / "task1_train"), "--model", "tiny_foundation", "--limit", "2",
            "--rounds", "2", "--no-progress", "--out"]
    _ok([*args, str(tmp_path / "whole")])
    line = _full_disk([*args, str(tmp_path / "full")], 6000)  # results.json fits, the plot does not
    assert f"{tmp_path / 'full' / 'iou_vs_clicks.png'}: cannot write it" in line
    _ok([*args, str(tmp_path / "full")])
    assert _files(tmp_path / "full") == _files(tmp_path / "whole")


def test_data_synth_on_a_full_disk(tmp_path: Path) -> None:
    args = ["data", "synth", "--pretrain", "0", "--unlabeled", "3", "--task-train", "0", "--test", "0",
            "--workers", "1", "--out"]
    _ok([*args, str(tmp_path / "whole")])
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", LIMITED, "4000", *args, str(tmp_path / "full")], env=env,
                          capture_output=True, text=True, timeout=300)  # a 256-px scene's PNG does not fit
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # after the progress bar
    png = rf"{tmp_path / 'full'}/unlabeled/images/00000\d\.png"
    assert re.fullmatch(rf"error: {png}: cannot write it \(File too large.*\)", last), last
    assert not list((tmp_path / "full").rglob("*.tmp"))
    _ok([*args, str(tmp_path / "full")])  # the rerun finishes what the full disk stopped
    assert _files(tmp_path / "full") == _files(tmp_path / "whole")


PRETRAIN = ("import resource, signal, sys\n"
            "from pathlib import Path\n"
            "n, out = int(sys.argv[1]), Path(sys.argv[2])\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "if n: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))\n"
            "import typer\n"
            "from sumseg.cli import _errors\n"
            "from sumseg.config.pretrain import PretrainConfig\n"
            "from sumseg.train.pretrain_run import pretrain\n"
            "try:\n"
            "    with _errors():\n"  # what `sumseg pretrain` runs, on a world of 4 images (the command's: 2,000)
            "        pretrain(out, PretrainConfig(images=4, steps=4, images_per_step=2, masks_per_image=2, warmup=1,"
            " save_every=2), progress=False)\n"
            "except typer.Exit as e:\n"
            "    sys.exit(e.exit_code)\n")


def test_pretrain_on_a_full_disk(tmp_path: Path) -> None:
    def run(limit: int, out: Path) -> subprocess.CompletedProcess:
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        return subprocess.run([sys.executable, "-c", PRETRAIN, str(limit), str(out)], env=env, capture_output=True,
                              text=True, timeout=300)

    assert run(0, tmp_path / "whole").returncode == 0
    full = run(1_000_000, tmp_path / "full")  # the world and the metric rows fit, a checkpoint does not
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert re.fullmatch(rf"error: {tmp_path / 'full'}/\S+: cannot write it \(File too large.*\)",
                        full.stderr.strip()), full.stderr
    assert run(0, tmp_path / "full").returncode == 0  # the rerun finishes the run
    assert _equal(_tensors(tmp_path / "full" / "last.ckpt"), _tensors(tmp_path / "whole" / "last.ckpt"))


@pytest.mark.slow
def test_demo_on_a_full_disk(tmp_path: Path) -> None:
    """``sumseg demo --quick`` (about 80 CPU s per run: slow): a full disk stops it with one error line
    naming the file; the rerun finishes and reports what an uninterrupted run reports."""
    args = ["demo", "--quick", "--workers", "0", "--out"]
    _ok([*args, str(tmp_path / "whole")])
    env = os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", LIMITED, "1000000", *args, str(tmp_path / "full")], env=env,
                          capture_output=True, text=True, timeout=900)  # the world fits, a checkpoint does not
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: {tmp_path / 'full'}/\S+: cannot write it \(File too large.*\)", last), last
    _ok([*args, str(tmp_path / "full")])
    for name in ("report.json", "claims.json", "runs.json", "stats.json"):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
