"""`sumseg data inspect` and `sumseg data synth`: output and exit codes."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sumseg.cli import app
from tests.test_data_readers import BENCHMARKS, save_rgb

runner = CliRunner()


def test_synth_then_inspect(tmp_path: Path) -> None:
    out = tmp_path / "world"
    args = [
        "data",
        "synth",
        "--out",
        str(out),
        "--pretrain",
        "4",
        "--unlabeled",
        "2",
        "--task-train",
        "2",
        "--test",
        "1",
        "--workers",
        "1",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "pretrain: 4 images" in res.output and "wrote the synthetic world" in res.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "(0 written, 4 unchanged)" in again.output
    res = runner.invoke(app, ["data", "inspect", str(out)])
    assert res.exit_code == 0, res.output
    assert "format coco-splits, 16 images" in res.output
    assert "task 1 salient" in res.output and "mask area / image area" in res.output
    assert "problems: 0" in res.output


def test_inspect_lists_problems_and_fails(tmp_path: Path) -> None:
    save_rgb(tmp_path / "u" / "a.png")
    (tmp_path / "u" / "b.png").write_bytes(b"junk")
    res = runner.invoke(app, ["data", "inspect", str(tmp_path / "u")])
    assert res.exit_code == 1
    assert "problems: 1" in res.output and "b.png: unreadable or corrupt image" in res.output
    strict = runner.invoke(app, ["data", "inspect", "--strict", str(tmp_path / "u")])
    assert strict.exit_code == 1 and "error:" in strict.output and "b.png" in strict.output


def test_inspect_missing_path_and_bad_synth_args(tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "inspect", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no such file or folder" in res.output
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "w"), "--image-size", "16"])
    assert res.exit_code == 1 and "--image-size must lie in [64, 4096], got 16" in res.output


def test_inspect_grabcut() -> None:
    if not (BENCHMARKS / "GrabCut").is_dir():
        pytest.skip(f"benchmarks not found at {BENCHMARKS}")
    res = runner.invoke(app, ["data", "inspect", str(BENCHMARKS / "GrabCut")])
    assert res.exit_code == 0, res.output
    assert "format ritm:GrabCut, 50 images, 50 masks, 50 with an ignore map" in res.output


def test_synth_refuses_negative_workers_and_a_bad_out(tmp_path: Path) -> None:
    args = ["data", "synth", "--pretrain", "1", "--unlabeled", "0", "--task-train", "0", "--test", "0"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "w"), "--workers", "-2"])
    assert res.exit_code == 1 and "error: --workers must lie in [0, 256], got -2" in res.output
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "file"), "--workers", "1"])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"error: --out {tmp_path / 'file'}: is a file, not a folder"], res.output


def test_write_world_refuses_negative_workers_and_locks_its_folder(tmp_path: Path) -> None:
    from sumseg.data.synthetic_world import SPLITS, write_world
    from sumseg.errors import ConfigError
    from sumseg.outputs import OutputError

    sizes = {s: 1 if s == "pretrain" else 0 for s in SPLITS}
    with pytest.raises(ConfigError, match=r"^workers must lie in \[0, 256\], got -2$"):
        write_world(tmp_path / "w", sizes=sizes, workers=-2, progress=False)
    (tmp_path / "w").mkdir()
    with open(tmp_path / "w" / ".sumseg.lock", "w") as other:  # another writer of the same folder
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(OutputError, match="another sumseg run is writing to this folder"):
            write_world(tmp_path / "w", sizes=sizes, workers=1, progress=False)
    assert write_world(tmp_path / "w", sizes=sizes, workers=1, progress=False)["pretrain"]["images"] == 1


def test_synth_shift_flags(tmp_path: Path) -> None:
    """--shift-contrast / --shift-noise draw the unlabelled split in the shifted domain (the pretrain split
    stays as it was); a contrast of 0 is refused by its flag's name before anything is written."""
    args = ["data", "synth", "--pretrain", "1", "--unlabeled", "1", "--task-train", "0", "--test", "0",
            "--workers", "1"]
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "plain")])
    shifted = runner.invoke(app, [*args, "--out", str(tmp_path / "shifted"), "--shift-contrast", "0.5",
                                  "--shift-noise", "6"])
    assert plain.exit_code == 0 and shifted.exit_code == 0, shifted.output
    image = "unlabeled/images/000000.png"
    assert (tmp_path / "plain" / image).read_bytes() != (tmp_path / "shifted" / image).read_bytes()
    assert (tmp_path / "plain" / "pretrain/images/000000.png").read_bytes() == (
        tmp_path / "shifted" / "pretrain/images/000000.png").read_bytes()
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--shift-contrast", "0"])
    assert bad.exit_code == 1 and "--shift-contrast must lie in (0, 1], got 0.0" in bad.output
    assert not (tmp_path / "bad").exists()
