"""The `sumseg` command: help, exit codes, export end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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
    """Commands whose help says "not built yet" (the set shrinks as parts land) exit 2 saying so."""
    for cmd in (["pseudo-label"], ["refiner", "train"], ["uncertainty"], ["train"], ["pretrain"]):
        if "not built yet" not in runner.invoke(app, [*cmd, "--help"]).output:
            continue  # built since
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2 and "not built yet" in res.output, cmd


def test_export_command(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "c.ckpt", randomise_task_prompts(build_model("tiny")))
    res = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--task", "1", "--out", str(tmp_path / "s.pth")])
    assert res.exit_code == 0, res.output
    assert "model tiny, task 1" in res.output and "verified" in res.output
    build_sam("tiny").load_state_dict(torch.load(tmp_path / "s.pth", weights_only=True), strict=True)
    # the loading recipe the command prints runs as printed (segment_anything has no tiny builder)
    recipe = res.output.split("load it with ", 1)[1].split(" (segment_anything's own classes", 1)[0]
    assert recipe.startswith("sam = sumseg.models.build_sam('tiny'); sam.load_state_dict(torch.load(")
    scope: dict = {}
    exec("import torch, sumseg.models\n" + recipe, scope)  # noqa: S102 - the command's own output
    assert type(scope["sam"]).__module__.startswith("segment_anything.")


def test_export_errors_are_clear(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "c.ckpt", build_model("tiny"))
    res = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--task", "9", "--out", str(tmp_path / "s.pth")])
    assert "c.ckpt: unknown task id 9" in _error_line(res)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 100)
    res = runner.invoke(app, ["export", "--checkpoint", str(bad), "--task", "1", "--out", str(tmp_path / "s.pth")])
    assert res.exit_code == 1 and str(bad) in res.output and "not a readable checkpoint" in res.output
    assert not (tmp_path / "s.pth").exists()


def _error_line(res) -> str:  # noqa: ANN001 - click's Result
    """The single line a failed command prints (no traceback, nothing else)."""
    assert res.exit_code == 1 and res.exception is None or isinstance(res.exception, SystemExit), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_export_refuses_out_equal_to_checkpoint(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "c.ckpt", randomise_task_prompts(build_model("tiny")))
    before = ckpt.read_bytes()
    res = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--task", "1", "--out", str(ckpt)])
    assert "would overwrite the input" in _error_line(res)
    assert ckpt.read_bytes() == before


def test_export_fails_above_its_tolerance(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "c.ckpt", randomise_task_prompts(build_model("tiny")))
    args = ["export", "--checkpoint", str(ckpt), "--task", "1", "--out", str(tmp_path / "s.pth")]
    assert "above the tolerance 1e-09" in _error_line(runner.invoke(app, [*args, "--tolerance", "1e-9"]))
    assert not (tmp_path / "s.pth").exists()
    res = runner.invoke(app, [*args, "--tolerance", "-1"])
    assert "--tolerance must lie in [0, 1000], got -1.0" in _error_line(res)
    assert runner.invoke(app, args).exit_code == 0  # the default tolerance (1e-4) holds


def test_export_of_a_plain_pth_takes_model(tmp_path: Path) -> None:
    torch.save(build_sam("tiny").state_dict(), tmp_path / "plain.pth")
    args = ["export", "--checkpoint", str(tmp_path / "plain.pth"), "--task", "0", "--out", str(tmp_path / "s.pth")]
    assert "pass a model name" in _error_line(runner.invoke(app, args))
    res = runner.invoke(app, [*args, "--model", "tiny"])
    assert res.exit_code == 0 and "model tiny, task 0" in res.output, res.output


def test_output_and_checkpoint_problems_are_one_line(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "c.ckpt", build_model("tiny"))
    (tmp_path / "folder.pth").mkdir()
    (tmp_path / "ckpt_dir").mkdir()
    args = ["export", "--task", "1", "--no-verify"]
    res = runner.invoke(app, [*args, "--checkpoint", str(tmp_path / "ckpt_dir"), "--out", str(tmp_path / "s.pth")])
    assert "ckpt_dir: is a folder, not a checkpoint file" in _error_line(res)
    res = runner.invoke(app, [*args, "--checkpoint", str(ckpt), "--out", str(tmp_path / "folder.pth")])
    assert "folder.pth: is a folder" in _error_line(res)
    res = runner.invoke(app, [*args, "--checkpoint", str(ckpt), "--out", str(ckpt / "s.pth")])
    assert "its folder" in _error_line(res) and "c.ckpt: is a file, not a folder" in _error_line(res)


def test_model_flags_follow_the_one_rule(tmp_path: Path) -> None:
    """--model / --checkpoint: the rule of every command (model_names.model_problems), worded with the flags."""
    base = ["pseudo-label", "--images", str(tmp_path), "--out", str(tmp_path / "pl")]
    for extra, says in [([], "--model may be omitted only with a --checkpoint"),
                        (["--model", "tiny_foundation", "--checkpoint", "x.ckpt"],
                         "--checkpoint must be omitted with --model tiny_foundation"),
                        (["--model", "vit_x"], "--model must be one of vit_h, vit_l, vit_b, tiny, ")]:
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 1 and says in res.output, res.output
    assert "tiny_foundation" in runner.invoke(app, ["eval", "--help"]).output


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command and group under ``cmd`` (typer's click objects), with its argument path."""
    out = [(path, cmd)]
    for name, sub in getattr(cmd, "commands", {}).items():
        out += _commands(sub, (*path, name))
    return out


def test_help_at_80_columns_shows_every_flag_in_full() -> None:
    """Every option of every command appears whole in its --help at 80 columns (no "--points-per-si…")."""
    import re

    import typer.main

    commands = _commands(typer.main.get_command(app))
    assert len(commands) >= 12
    for path, cmd in commands:
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert res.exit_code == 0, (path, res.output)
        assert "…" not in res.output and max(map(len, res.output.splitlines())) <= 80, path
        names = [o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
        for name in names:
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", res.output), (path, name)
