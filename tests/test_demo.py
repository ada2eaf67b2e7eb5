"""`sumseg demo` (smoke stage): every built stage runs end to end on the synthetic world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sumseg.cli import app
from sumseg.models import build_sam


def test_demo_refuses_a_bad_out_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "file"), "--no-progress"])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"error: --out {tmp_path / 'file'}: is a file, not a folder"], res.output


@pytest.mark.slow  # ~a third of the suite; every stage it runs has its own fast tests
def test_demo_runs_every_stage(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--rounds", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(data) == {"task1_test", "task3_test", "general_test"}
    assert data["task1_test"]["clicks"]["n"] == 6  # one salient object per image
    assert data["general_test"]["box"]["n"] > data["task1_test"]["box"]["n"]  # parts + entities
    diff = float(res.output.split("max |logit diff| = ")[1].split()[0])
    assert diff <= 1e-5
    build_sam("tiny").load_state_dict(torch.load(tmp_path / "tiny_task1_stock.pth", weights_only=True), strict=True)
    assert (tmp_path / "eval" / "iou_vs_clicks.png").is_file()
