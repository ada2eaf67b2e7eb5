"""Exact export: the stock loader's predictions equal sumseg's task-T predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from sumseg import SumPredictor, build_model, save_checkpoint
from sumseg.errors import CheckpointError, ConfigError
from sumseg.models import build_sam
from sumseg.models.export import (
    ExportVerificationError,
    export_checkpoint,
    verify_export,
)
from sumseg.outputs import OutputError
from tests.conftest import randomise_task_prompts

TOL = 1e-5


@pytest.mark.parametrize("task", [1, 3])
def test_tiny_export_round_trip(tmp_path: Path, rgb_image: np.ndarray, task: int) -> None:
    model = randomise_task_prompts(build_model("tiny"))
    ckpt = save_checkpoint(tmp_path / "sum.ckpt", model)
    assert export_checkpoint(ckpt, task, tmp_path / "sam.pth") == ("tiny", None)
    stock = build_sam("tiny", seed=123)  # other weights until the export is loaded
    stock.load_state_dict(torch.load(tmp_path / "sam.pth", weights_only=True), strict=True)
    assert verify_export(model, stock, rgb_image, task) <= TOL
    # the check can fail: stock SAM without the folded task prompt is far from task-T outputs
    assert verify_export(model, model.sam, rgb_image, task) > 1e-3
    # and a model with the prompt but another task is far too
    assert verify_export(model, stock, rgb_image, 2) > 1e-3


def test_export_changes_only_the_two_folded_tensors() -> None:
    model = randomise_task_prompts(build_model("tiny"))
    before = {k: v.clone() for k, v in model.sam.state_dict().items()}
    state = model.stock_state_dict(2)
    changed = sorted(k for k in state if not torch.equal(state[k], before[k]))
    assert changed == ["prompt_encoder.mask_downscaling.6.bias", "prompt_encoder.no_mask_embed.weight"]
    assert all(torch.equal(v, before[k]) for k, v in model.sam.state_dict().items())  # model untouched
    e = model.task_prompts.embedding(2).detach()
    for key in changed:
        assert torch.equal(state[key].reshape(-1), (before[key] + e).reshape(-1))


def test_hq_export_round_trip(tmp_path: Path, rgb_image: np.ndarray) -> None:
    hq = pytest.importorskip("segment_anything_hq")
    model = randomise_task_prompts(build_model("hq_tiny"))
    state = model.stock_state_dict(1)
    stock = build_sam("hq_tiny", seed=9)
    stock.load_state_dict(state, strict=True)
    a, b = SumPredictor(model, task=1), hq.SamPredictor(stock.eval())
    a.set_image(rgb_image)
    b.set_image(rgb_image)
    kw = dict(point_coords=np.array([[50, 60]]), point_labels=np.array([1]), multimask_output=False, return_logits=True)
    diffs = [np.abs(x - y).max() for x, y in zip(a.predict(**kw), b.predict(**kw, hq_token_only=False), strict=True)]
    assert max(diffs) <= TOL


@pytest.mark.slow
def test_vit_b_export_round_trip_with_stock_loader(tmp_path: Path) -> None:
    model = randomise_task_prompts(build_model("vit_b"), seed=3)
    ckpt = save_checkpoint(tmp_path / "sum_vit_b.ckpt", model)
    export_checkpoint(ckpt, 1, tmp_path / "sam_vit_b.pth")
    stock = sam_model_registry["vit_b"](checkpoint=str(tmp_path / "sam_vit_b.pth"))
    image = (np.random.default_rng(1).random((300, 400, 3)) * 255).astype(np.uint8)
    assert verify_export(model, stock, image, 1) <= TOL


def test_nan_outputs_fail_the_check(rgb_image: np.ndarray) -> None:
    model = randomise_task_prompts(build_model("tiny"))
    stock = build_sam("tiny")
    stock.load_state_dict(model.stock_state_dict(1), strict=True)
    with torch.no_grad():
        model.task_prompts.task_embeddings[1, 0] = float("nan")  # task 1's outputs become NaN
    diff = verify_export(model, stock, rgb_image, 1)
    assert not diff <= 1e-5  # NaN, never hidden by max()


def test_export_above_tolerance_fails_and_writes_nothing(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "sum.ckpt", randomise_task_prompts(build_model("tiny")))
    (tmp_path / "old.pth").write_bytes(b"an earlier export")
    # float rounding of the fold gives ~2e-7 for these prompts (under the default 1e-4, tested in test_cli)
    with pytest.raises(ExportVerificationError, match=r"old\.pth: .*max \|logit diff\| .* above the tolerance 1e-09"):
        export_checkpoint(ckpt, 1, tmp_path / "old.pth", verify=True, tolerance=1e-9)
    assert (tmp_path / "old.pth").read_bytes() == b"an earlier export"  # left as it was


def test_export_refuses_to_overwrite_its_checkpoint(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "sum.ckpt", randomise_task_prompts(build_model("tiny")))
    before = ckpt.read_bytes()
    (tmp_path / "link.ckpt").symlink_to(ckpt)
    for out in (ckpt, tmp_path / "link.ckpt", tmp_path / "." / "sum.ckpt"):
        with pytest.raises(OutputError, match="would overwrite the input"):
            export_checkpoint(ckpt, 1, out)
    assert ckpt.read_bytes() == before


def test_export_of_a_plain_state_dict_takes_a_model_name(tmp_path: Path, rgb_image: np.ndarray) -> None:
    torch.save(build_sam("tiny", seed=4).state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="pass a model name"):
        export_checkpoint(tmp_path / "plain.pth", 1, tmp_path / "out.pth")
    assert export_checkpoint(tmp_path / "plain.pth", 1, tmp_path / "out.pth", model="tiny", verify=True)[0] == "tiny"
    # a plain state_dict has zero task prompts: the export equals the input
    assert all(torch.equal(a, b) for a, b in zip(torch.load(tmp_path / "out.pth").values(),
                                                 torch.load(tmp_path / "plain.pth").values(), strict=True))


def test_unknown_task_names_the_checkpoint(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "sum.ckpt", build_model("tiny"))
    with pytest.raises(ConfigError, match=r"sum\.ckpt: .*unknown task id 9"):
        export_checkpoint(ckpt, 9, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()
