"""The `sumseg` command: help, exit codes, export end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from sumseg import build_model, save_checkpoint
from sumseg.cli import app
from sumseg.models import build_sam
from tests.conftest import randomise_task_prompts

runner = CliRunner()
DESIGN_COMMANDS = ["pseudo-label", "refiner", "uncertainty", "train", "eval", "export", "demo", "pretrain", "data"]


def test_help_lists_every_design_command() -> None:
    out = subprocess.run([sys.executable, "-m", "sumseg", "--help"], capture_output=True, text=True, check=True)
    for cmd in DESIGN_COMMANDS:
        assert f" {cmd} " in out.stdout, cmd


def test_unbuilt_commands_say_so_and_fail() -> None:
    for cmd in (["pseudo-label"], ["refiner", "train"], ["uncertainty"], ["train"], ["pretrain"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2 and "not built yet" in res.output, cmd


def test_export_command(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "c.ckpt", randomise_task_prompts(build_model("tiny")))
    res = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--task", "1", "--out", str(tmp_path / "s.pth")])
    assert res.exit_code == 0, res.output
    assert "model tiny, task 1" in res.output and "verified" in res.output
    build_sam("tiny").load_state_dict(torch.load(tmp_path / "s.pth", weights_only=True), strict=True)


def test_export_errors_are_clear(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "c.ckpt", build_model("tiny"))
    res = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--task", "9", "--out", str(tmp_path / "s.pth")])
    assert res.exit_code == 1 and "unknown task id(s) [9]" in res.output
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 100)
    res = runner.invoke(app, ["export", "--checkpoint", str(bad), "--task", "1", "--out", str(tmp_path / "s.pth")])
    assert res.exit_code == 1 and str(bad) in res.output and "not a readable checkpoint" in res.output
    assert not (tmp_path / "s.pth").exists()
