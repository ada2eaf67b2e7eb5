"""The demo's ``sum_true_u`` diagnostic: SUM trained on the pseudo-labels' true U maps (a hand-worked
map, the store copy against the synthetic truth, the run and its claims in the report)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sumseg.cli import app
from sumseg.data.synthetic import AppearanceShift
from sumseg.demo.stats import store_stats, true_masks
from sumseg.demo.true_uncertainty import DONE, true_uncertainty
from sumseg.pipeline.store import open_store

METHODS = "self_training,sum,sum_true_u"


def test_true_u_is_the_share_of_wrong_pixels_per_lowres_cell() -> None:
    truth = np.zeros((2, 16, 16), bool)
    truth[0, :8, :8] = True  # an 8×8 object
    truth[1, 8:, 8:] = True  # another, disjoint
    masks = np.stack([truth[0].copy(), truth[1].copy()])
    masks[0, 8:12, 0:4] = True  # 16 extra pixels: exactly low-res cell (2, 0) of the 4×4 grid (S = 16)
    masks[1, 8:10, 8:12] = False  # 8 missing pixels: the top half of cell (2, 2)
    u = true_uncertainty(masks, truth, "longest_side", 16)
    assert u.shape == (2, 4, 4)
    expected = torch.zeros(2, 4, 4)
    expected[0, 2, 0] = 1.0
    expected[1, 2, 2] = 0.5
    assert torch.allclose(u, expected, atol=1e-6)
    # a label matching no true mask well is wrong where it differs from the one it overlaps most
    wrong = np.zeros((1, 16, 16), bool)
    wrong[0, 4:12, 4:12] = True  # 16 px in object 0, 16 in object 1, 32 outside
    u = true_uncertainty(wrong, truth, "longest_side", 16)
    assert float(u.sum()) * 16 == pytest.approx(np.sum(wrong[0] != truth[0]))  # matched object 0 (first of a tie)


@pytest.fixture(scope="module")
def true_u_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick demo of SUM, self-training and the diagnostic."""
    out = tmp_path_factory.mktemp("demo_true_u")
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--workers", "0", "--methods", METHODS])
    assert res.exit_code == 0, res.output
    return out


def test_true_u_store_holds_the_truth_and_leaves_the_refiners_maps(true_u_run: Path) -> None:
    out = true_u_run
    store, copy = open_store(out / "pseudo_labels"), open_store(out / "pseudo_labels_true_u")
    assert [e.num_masks for e in copy.images] == [e.num_masks for e in store.images] and sum(
        e.num_masks for e in store.images) > 0
    settings = json.loads((out / "settings.json").read_text())["settings"]
    seed, shift = settings["world_seed"], AppearanceShift(**settings["shift"])
    differs = False
    for i, e in enumerate(store.images):
        if not e.num_masks:
            continue
        assert np.array_equal(copy.masks(i), store.masks(i))
        u = true_uncertainty(store.masks(i), true_masks(store, i, seed, shift)[0], store.frame, store.image_size)
        stored = copy.uncertainty_u8(i)
        assert stored is not None and torch.equal(stored, torch.round(u * 255).to(torch.uint8))
        refiner_u = store.uncertainty_u8(i)
        assert refiner_u is not None
        differs |= not torch.equal(refiner_u, stored)
    assert differs  # the refiner's maps stay in the original store
    stats = store_stats(out / "pseudo_labels_true_u", seed, 0.6, shift)
    if stats["wrong_pixels"]:  # every wrong pixel carries U > 0 in its cell, and right pixels far less
        assert stats["mean_u_wrong"] > 0.5 > stats["mean_u_right"]
        assert stats["u_weight_on_wrong"] > 0.5  # the true U takes its weight from wrong pixels
    assert json.loads((out / "pseudo_labels_true_u" / DONE).read_text())["masks"] == stats["masks"]


def test_true_u_run_is_sum_on_the_copy_and_is_reported(true_u_run: Path) -> None:
    out = true_u_run
    cfg = (out / "runs" / "sum_true_u-s0" / "config.yaml").read_text()
    assert "method: sum\n" in cfg and "pseudo_labels_true_u" in cfg
    report = json.loads((out / "report.json").read_text())
    assert list(report) == ["foundation", "self_training", "sum", "sum_true_u"]
    claims = [c["claim"] for c in json.loads((out / "claims.json").read_text())["claims"]]
    assert sum("true U map beats SUM" in c for c in claims) == 2  # at 1 and 3 clicks
    assert sum("true U map beats self-training" in c for c in claims) == 2
    shutil.rmtree(out / "pseudo_labels_true_u" / "labels")  # a damaged copy is made again on resume
    (out / "pseudo_labels_true_u" / DONE).write_text("{truncated")  # a damaged marker is no reason to stop
    before = (out / "report.json").read_text()
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--workers", "0", "--methods", METHODS])
    assert res.exit_code == 0, res.output
    assert (out / "pseudo_labels_true_u" / DONE).is_file()
    assert (out / "report.json").read_text() == before  # the same maps again: the run was not retrained
