"""SAM 1 in the Hugging Face layout: the key mapping, reading SamModel folders, ``export --format hf``.

On the tiny config with random weights; the HF side is transformers' own ``SamModel`` (skipped without it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every load here is of a local folder
transformers = pytest.importorskip("transformers")

from sumseg import build_model, save_checkpoint  # noqa: E402
from sumseg.cli import app  # noqa: E402
from sumseg.errors import CheckpointError, ConfigError, DataError  # noqa: E402
from sumseg.models import build_sam  # noqa: E402
from sumseg.models.export import ExportVerificationError  # noqa: E402
from sumseg.models.hf_export import export_hf, preprocess_image, verify_hf_export, write_hf_folder  # noqa: E402
from sumseg.models.hf_sam import (  # noqa: E402
    HF_TIED_POS_KEY,
    KEY_RULES,
    arch_of_config,
    hf_config,
    hf_to_sam_key,
    hf_to_sam_state,
    sam_to_hf_key,
    sam_to_hf_state,
)
from sumseg.models.registry import ARCHS  # noqa: E402
from tests.conftest import randomise_task_prompts  # noqa: E402

TOL = 1e-5
SamModel = transformers.SamModel


def _random_sam(seed: int = 5) -> torch.nn.Module:
    """The tiny SAM with every tensor random (rel-pos tables and pos_embed are zeros at init)."""
    sam = build_sam("tiny", seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sam.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + p)
    return sam.eval()


def test_round_trip_through_sammodel_gives_equal_state_dicts() -> None:
    sam = _random_sam()
    state = sam.state_dict()
    hf_state = sam_to_hf_state(state)
    hf = SamModel(transformers.SamConfig(**hf_config(ARCHS["tiny"])))
    want = hf.state_dict()
    assert set(want) == set(hf_state) | {HF_TIED_POS_KEY}  # every SamModel tensor, the tied copy aside
    assert all(want[k].shape == v.shape for k, v in hf_state.items())
    hf.load_state_dict(hf_state, strict=False)  # the tied copy follows its source
    back = hf_to_sam_state(hf.state_dict(), "test")
    assert set(back) == set(state) and all(torch.equal(back[k], v) for k, v in state.items())
    # the table is one-to-one both ways, key by key, and knows the official sizes' keys too
    assert all(hf_to_sam_key(sam_to_hf_key(k) or "") == k for k in build_sam("vit_b").state_dict())
    assert len({h for _, h in KEY_RULES}) == len(KEY_RULES)
    assert sam_to_hf_key("mask_decoder.hf_token.weight") is None  # HQ-SAM's own tensors


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_official_sizes_map_onto_sammodel_and_their_configs_read_back(name: str) -> None:
    from sumseg.models.registry import official_builder

    with torch.device("meta"):  # shapes only: no weights are made
        sam = official_builder(name)(checkpoint=None)
        hf = transformers.SamModel(transformers.SamConfig(**hf_config(ARCHS[name])))
    ours, want = sam_to_hf_state(sam.state_dict()), hf.state_dict()
    assert set(want) == set(ours) | {HF_TIED_POS_KEY}
    assert all(want[k].shape == v.shape for k, v in ours.items())
    written = json.loads(hf.config.to_json_string())
    assert arch_of_config(written, "x") == name
    written["mask_decoder_config"]["layer_norm_eps"] = 1e-6  # as the published folders say: still that model
    assert arch_of_config(written, "x") == name


def test_configs_that_leave_out_transformers_defaults_read_back() -> None:
    assert arch_of_config({"model_type": "sam"}, "x") == "vit_b"  # SamConfig()'s sizes are vit_b's
    huge = {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16,
            "global_attn_indexes": [7, 15, 23, 31]}
    assert arch_of_config({"vision_config": huge}, "x") == "vit_h"  # mlp_dim follows hidden_size * mlp_ratio


def test_written_folder_is_what_save_pretrained_writes(tmp_path: Path) -> None:
    model = randomise_task_prompts(build_model("tiny"))
    write_hf_folder(tmp_path, model, 2)
    hf = SamModel.from_pretrained(tmp_path)
    hf.save_pretrained(tmp_path / "theirs")
    ours, theirs = load_file(tmp_path / "model.safetensors"), load_file(tmp_path / "theirs" / "model.safetensors")
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    cfg = json.loads((tmp_path / "theirs" / "config.json").read_text())
    for part in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
        assert {k: cfg[part].get(k) for k in hf_config(ARCHS["tiny"])[part]} == hf_config(ARCHS["tiny"])[part]


def _sessions(model, hf, image: np.ndarray, task: int, rounds: int = 3) -> float:  # noqa: ANN001
    """An independent interactive check (one box+point session, mask fed back) alongside verify_hf_export."""
    x, hw_in = preprocess_image(model, image)
    feats, emb = model.encode(x), hf.get_image_embeddings(x)
    pts, labels = torch.tensor([[[120.0, 90.0]]]), torch.tensor([[1]])
    box = torch.tensor([[20.0, 30.0, 200.0, 170.0]])
    low_a = low_b = None
    diffs = []
    for r in range(rounds):
        a_low, a_iou = model.decode(feats, (pts, labels), box, low_a, task, multimask=r == 0)
        b = hf(image_embeddings=emb, input_points=pts[None], input_labels=labels[None], input_boxes=box[None],
               input_masks=low_b, multimask_output=r == 0)
        assert b.pred_masks.shape[1:] == (1, a_low.shape[1], 64, 64)
        diffs += [(a_low - b.pred_masks[0]).abs().max(), (a_iou - b.iou_scores[0]).abs().max(),
                  (model.upscale(a_low, hw_in, image.shape[:2]) - model.upscale(b.pred_masks[0], hw_in,
                                                                                 image.shape[:2])).abs().max()]
        k = int(a_iou[0].argmax())
        low_a, low_b = a_low[:, k : k + 1], b.pred_masks[0][:, k : k + 1]
        pts = torch.cat([pts, torch.tensor([[[30.0 + 50 * r, 150.0 - 40 * r]]])], 1)
        labels = torch.cat([labels, torch.tensor([[r % 2]])], 1)
    return float(max(diffs))


@torch.no_grad()
def test_exported_folder_loads_with_from_pretrained_and_predicts_the_same(tmp_path: Path,
                                                                         rgb_image: np.ndarray) -> None:
    model = randomise_task_prompts(build_model("tiny"))
    model.sam.load_state_dict(_random_sam().state_dict())
    ckpt = save_checkpoint(tmp_path / "sum.ckpt", model)
    name, diff = export_hf(ckpt, 1, tmp_path / "hf_task1", verify=True)
    assert name == "tiny" and diff is not None and diff <= TOL
    assert sorted(p.name for p in (tmp_path / "hf_task1").iterdir()) == ["config.json", "model.safetensors"]
    hf = SamModel.from_pretrained(tmp_path / "hf_task1").eval()  # plain transformers, nothing of sumseg's
    assert _sessions(model, hf, rgb_image, 1) <= TOL
    # the checks can fail: the same folder is far from another task, and an unfolded SamModel from task 1
    assert _sessions(model, hf, rgb_image, 2) > 1e-3
    unfolded = tmp_path / "plain"
    unfolded.mkdir()
    write_hf_folder(unfolded, build_model(None, ckpt), 0)
    assert verify_hf_export(model, SamModel.from_pretrained(unfolded).eval(), rgb_image, 1) > 1e-3
    before = (tmp_path / "hf_task1" / "model.safetensors").read_bytes()
    with pytest.raises(ExportVerificationError, match="nothing was written"):
        export_hf(ckpt, 2, tmp_path / "hf_task1", verify=True, tolerance=0.0)
    assert (tmp_path / "hf_task1" / "model.safetensors").read_bytes() == before  # the earlier export, untouched
    export_hf(ckpt, 2, tmp_path / "hf_task1")  # an earlier export is replaced whole
    assert (tmp_path / "hf_task1" / "model.safetensors").read_bytes() != before
    assert _sessions(model, SamModel.from_pretrained(tmp_path / "hf_task1").eval(), rgb_image, 2, rounds=2) <= TOL
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@torch.no_grad()
def test_hf_folder_reads_back_with_the_logits_of_its_source(tmp_path: Path, rgb_image: np.ndarray) -> None:
    sam = _random_sam(seed=8)
    torch.save(sam.state_dict(), tmp_path / "sam_tiny.pth")
    hf = SamModel(transformers.SamConfig(**hf_config(ARCHS["tiny"])))
    hf.load_state_dict(sam_to_hf_state(sam.state_dict()), strict=False)
    hf.save_pretrained(tmp_path / "hf")  # transformers' own writer
    hf.save_pretrained(tmp_path / "shards", max_shard_size="1MB")
    assert (tmp_path / "shards" / "model.safetensors.index.json").is_file()
    from_pth = build_model("tiny", tmp_path / "sam_tiny.pth")
    for from_hf in (build_model("tiny", tmp_path / "hf"), build_model(None, tmp_path / "hf"),
                    build_model(None, tmp_path / "shards")):
        assert from_hf.name == "tiny"
        a, b = from_pth.sam.state_dict(), from_hf.sam.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        x, _ = preprocess_image(from_pth, rgb_image)
        fa, fb = from_pth.encode(x), from_hf.encode(x)
        pts = (torch.tensor([[[100.0, 80.0], [40.0, 60.0]]]), torch.tensor([[1, 0]]))
        assert all(torch.equal(p, q) for p, q in zip(from_pth.decode(fa, pts, multimask=True),
                                                      from_hf.decode(fb, pts, multimask=True), strict=True))
    with pytest.raises(CheckpointError, match=r"describes a 'tiny' model, not 'vit_b'"):
        build_model("vit_b", tmp_path / "hf")


def _folder(root: Path, name: str, config: object | None, weights: dict | None = None) -> Path:
    folder = root / name
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights is not None:
        save_file(weights, str(folder / "model.safetensors"))
    return folder


def test_bad_folders_raise_data_errors_naming_the_folder(tmp_path: Path) -> None:
    good = hf_config(ARCHS["tiny"])
    state = sam_to_hf_state(build_sam("tiny").state_dict())
    other_size = {**good, "vision_config": {**good["vision_config"], "num_hidden_layers": 5}}
    bad_pos = {**state, HF_TIED_POS_KEY: state["shared_image_embedding.positional_embedding"] + 1}
    (tmp_path / "pytorch").mkdir()
    (tmp_path / "pytorch" / "pytorch_model.bin").write_bytes(b"x")
    (tmp_path / "pytorch" / "config.json").write_text(json.dumps(good))
    cases = {
        _folder(tmp_path, "empty", None): r"empty: is a folder, not a checkpoint file.*no config.json.*holds nothing",
        _folder(tmp_path, "sam2", {"model_type": "sam2", "architectures": ["Sam2Model"]}):
            r"sam2: a Sam2Model folder \(sam2.1_hiera_t\) without model.safetensors",  # read as SAM 2
        _folder(tmp_path, "hq", {"model_type": "sam_hq"}): r"hq: .*HQ-SAM folders are not supported yet",
        _folder(tmp_path, "untyped", {}): r"untyped: holds a config.json without a model_type, not a SAM 1",
        _folder(tmp_path, "junk", "{not json"): r"junk/config.json: unreadable config",
        _folder(tmp_path, "no_weights", good): r"no_weights: no model.safetensors .*holds config.json",
        tmp_path / "pytorch": r"never unpickles pytorch_model.bin",
        _folder(tmp_path, "size", other_size): r"no registry model for; closest is 'tiny'.*num_hidden_layers: 5",
        _folder(tmp_path, "torn", good, {"x": torch.zeros(1)}): r"torn: checkpoint does not fit model 'tiny'",
        _folder(tmp_path, "tied", good, bad_pos): r"tied: .*its tied copy .* differ",
    }
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.json").write_text(json.dumps(good))
    (tmp_path / "damaged" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    cases[tmp_path / "damaged"] = r"damaged/model.safetensors: damaged safetensors file"
    for folder, message in cases.items():
        kind = CheckpointError if folder.name == "torn" else DataError  # a folder of the wrong weights
        with pytest.raises(kind, match=message):
            build_model(None, folder)


def test_cli_export_format_hf(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "sum.ckpt", randomise_task_prompts(build_model("tiny")))
    args = ["export", "--checkpoint", str(ckpt), "--task", "3", "--format", "hf"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "t3")])
    assert res.exit_code == 0, res.output
    assert "SamModel.from_pretrained" in res.output and "verified" in res.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "busy"), "--no-verify"])
    assert res.exit_code == 1 and "holds other files (notes.txt)" in res.output
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x"), "--format", "onnx"])
    assert res.exit_code == 1 and "--format must be sam or hf" in res.output


def test_hq_sam_has_no_sammodel_export(tmp_path: Path) -> None:
    pytest.importorskip("segment_anything_hq")
    ckpt = save_checkpoint(tmp_path / "hq.ckpt", build_model("hq_tiny"))
    with pytest.raises(ConfigError, match=r"HQ-SAM model \(hq_tiny\) has no SamModel layout"):
        export_hf(ckpt, 0, tmp_path / "hq_hf")
    assert not (tmp_path / "hq_hf").exists()
