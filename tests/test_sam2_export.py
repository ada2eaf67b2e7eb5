"""``sumseg export --format hf`` of a task-conditioned SumSam2 → a ``Sam2Model`` folder per task, loaded with
plain ``Sam2Model.from_pretrained`` (tiny SAM 2 config, random weights and task prompts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from sumseg import save_checkpoint  # noqa: E402
from sumseg.cli import app  # noqa: E402
from sumseg.models.hf_export import export_hf  # noqa: E402
from tests.test_sum_sam2 import _first_prompts, _image, _model, _session  # noqa: E402

TOL = 1e-5


def test_sam2_hf_export_per_task_is_plain_sam2model(tmp_path: Path) -> None:
    model = _model((0, 1, 2))
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model)
    name, diff = export_hf(ckpt, 2, tmp_path / "task2", verify=True)
    assert name == "sam2_tiny" and diff is not None and diff <= TOL
    assert {p.name for p in (tmp_path / "task2").iterdir()} == {"config.json", "model.safetensors"}
    res = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "--task", "1", "--format", "hf",
                                   "--out", str(tmp_path / "task1")])
    assert res.exit_code == 0, res.output
    assert "verified" in res.output and "transformers.Sam2Model.from_pretrained" in res.output
    with torch.no_grad():
        x = model.preprocess(_image(4))
        for task in (1, 2):
            hf = transformers.Sam2Model.from_pretrained(str(tmp_path / f"task{task}")).eval()
            for multimask in (True, False):
                same = max(_session(model, hf, x, first, task, multimask) for first in _first_prompts())
                other = max(_session(model, hf, x, first, 3 - task, multimask) for first in _first_prompts())
                assert same <= TOL, (task, multimask, same)
                assert other > 1e-3  # the folder holds its own task, not the other
