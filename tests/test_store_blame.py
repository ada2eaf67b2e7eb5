"""Errors about a pseudo-label store name the file that is wrong and the fix a CLI user can apply
(issue 17, class 8), and ``sumseg uncertainty`` recomputes a damaged U map and refuses to write one
from non-finite refiner logits (class 4). The store is tests/test_store_hostile.py's (no model); the
refiner is a stand-in (``refine`` and ``image_features`` patched), so each test takes well under a second."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import sumseg.pipeline.uncertainty as unc
from sumseg.config import UncertaintyConfig
from sumseg.errors import DataError
from sumseg.pipeline.pseudo_label_run import _finished
from sumseg.pipeline.store import UNCERTAINTY_FORMAT, open_store
from sumseg.tensor_files import read_tensors, save_tensors
from tests.test_store_hostile import INDEX, K, L, _write_store


class FakeRefiner(torch.nn.Module):
    """What run_uncertainty asks of a refiner besides its outputs (patched in)."""

    name, image_size, is_hq = "fake", 256, False

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _write_store(tmp_path / "pl")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRefiner:
    monkeypatch.setattr(unc, "image_features", lambda refiner, rec, cache: torch.zeros(1, 8, 4, 4))
    monkeypatch.setattr(unc, "refine", lambda refiner, emb, labels, hw: labels.logits * 0.5)
    return FakeRefiner()


def test_an_index_count_is_blamed_on_the_index(root: Path) -> None:
    path = root / INDEX
    doc = json.loads(path.read_text())
    doc["images"][0]["num_masks"] = K + 1
    path.write_text(json.dumps(doc))
    store = open_store(root)
    for read in (store.confidence, store.load, store.masks, store.logits):
        with pytest.raises(DataError, match=rf"^{path}: field 'num_masks' of 'img0' is {K + 1}, but "
                                            rf"{root}/labels/img0.json holds {K} annotations .*rerun sumseg"):
            read(0)


def test_truncated_labels_are_blamed_on_the_labels_not_the_u_map(root: Path) -> None:
    arrays = root / "labels" / "img0.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:300])
    store = open_store(root)
    with pytest.raises(DataError, match=rf"^{arrays}: unreadable safetensors file \(truncated"):
        store.confidence(0)
    arrays.unlink()
    with pytest.raises(DataError, match=rf"^{arrays}: file not found"):
        store.uncertainty_u8(0)


def test_an_unfinished_store_tells_the_cli_fix(tmp_path: Path) -> None:
    root = _write_store(tmp_path / "pl", complete=False)
    with pytest.raises(DataError, match="unfinished") as e:
        open_store(root)
    assert "rerunning the same sumseg pseudo-label command" in str(e.value) and "allow_partial" not in str(e.value)
    assert not open_store(root, allow_partial=True).complete


def test_a_json_of_another_image_is_named_on_resume(root: Path) -> None:
    assert _finished(root / "labels", "img0", 0, "img0") is not None
    with pytest.raises(DataError, match=rf"^{root}/labels/img0.json: holds image 'img0' at input position 0, "
                                        "not 'img0' at 1"):
        _finished(root / "labels", "img0", 1, "img0")


def test_a_damaged_u_map_is_recomputed_by_a_rerun(root: Path, fake: FakeRefiner) -> None:
    (root / "uncertainty.json").unlink()
    for f in (root / "labels").glob("*.uncertainty.safetensors"):
        f.unlink()
    assert unc.run_uncertainty(fake, UncertaintyConfig(str(root), progress=False)).computed_now == 2  # type: ignore[arg-type]
    u_file = root / "labels" / "img0.uncertainty.safetensors"
    good = u_file.read_bytes()
    tensors, meta = read_tensors(u_file, UNCERTAINTY_FORMAT)
    save_tensors(u_file, {"uncertainty": tensors["uncertainty"][:1]}, meta)  # right metadata, one map short
    with pytest.raises(DataError, match=rf"^{u_file}: tensor 'uncertainty' must have shape \({K}, {L}, {L}\)"):
        open_store(root).confidence(0)
    assert unc.run_uncertainty(fake, UncertaintyConfig(str(root), progress=False)).computed_now == 1  # type: ignore[arg-type]
    assert u_file.read_bytes() == good
    shutil.copy(root / "labels" / "img1.safetensors", root / "labels" / "img1.uncertainty.safetensors")  # foreign
    assert unc.run_uncertainty(fake, UncertaintyConfig(str(root), progress=False)).computed_now == 1  # type: ignore[arg-type]


def test_non_finite_refiner_logits_write_no_u_map(root: Path, fake: FakeRefiner, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    (root / "uncertainty.json").unlink()
    for f in (root / "labels").glob("*.uncertainty.safetensors"):
        f.unlink()
    monkeypatch.setattr(unc, "refine", lambda refiner, emb, labels, hw: labels.logits * float("nan"))
    with pytest.raises(DataError, match=r"img0.json: refiner fake gave \d+ non-finite logits .*U = 0"):
        unc.run_uncertainty(fake, UncertaintyConfig(str(root), progress=False))  # type: ignore[arg-type]
    assert not list((root / "labels").glob("*.uncertainty.safetensors"))


def test_a_malformed_uncertainty_json_is_named(root: Path, fake: FakeRefiner) -> None:
    (root / "uncertainty.json").write_text('{"format": "sumseg-uncertainty", "version": 1, "refiner": 3')
    with pytest.raises(DataError, match=rf"^{root}/uncertainty.json: malformed JSON"):
        unc.run_uncertainty(fake, UncertaintyConfig(str(root), progress=False))  # type: ignore[arg-type]
    (root / "uncertainty.json").write_text('{"format": "sumseg-uncertainty", "version": 1, "refiner": 3}')
    with pytest.raises(DataError, match=rf"^{root}/uncertainty.json: field 'refiner' must be a str, got 3"):
        unc.run_uncertainty(fake, UncertaintyConfig(str(root), progress=False))  # type: ignore[arg-type]
