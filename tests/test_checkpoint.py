"""Checkpoint format, atomic writes, safe loading and clear errors for the wrong file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sumseg import build_model, load_checkpoint, save_checkpoint
from sumseg.errors import CheckpointError, ConfigError
from sumseg.models import MODEL_NAMES, build_sam, read_checkpoint
from tests.conftest import randomise_task_prompts


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_registry_names_and_unknown_name() -> None:
    assert {"vit_h", "vit_l", "vit_b", "tiny", "hq_vit_h", "hq_vit_l", "hq_vit_b"} <= set(MODEL_NAMES)
    with pytest.raises(ConfigError, match="unknown model 'vit_x'.*vit_b"):
        build_sam("vit_x")


def test_tiny_configuration() -> None:
    sam = build_sam("tiny")
    assert sam.image_encoder.img_size == 256
    assert sam.prompt_encoder.image_embedding_size == (16, 16)
    assert len(sam.image_encoder.blocks) == 4
    assert type(sam).__module__.startswith("segment_anything.")  # the official classes


def test_official_builder_parameter_layout() -> None:
    from segment_anything import sam_model_registry

    ours, stock = build_sam("vit_b").state_dict(), sam_model_registry["vit_b"]().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in stock.items()}


def test_round_trip_keeps_weights_tasks_and_metadata(tmp_path: Path) -> None:
    model = randomise_task_prompts(build_model("tiny", tasks=(0, 1, 4)))
    path = save_checkpoint(tmp_path / "m.ckpt", model, step=17, config={"lr": 1e-5})
    loaded, meta = load_checkpoint(path)
    assert _same_weights(model, loaded)
    assert meta.model == "tiny" and meta.task_ids == [0, 1, 4] and meta.step == 17
    assert meta.config == {"lr": 1e-5} and meta.sumseg_version and meta.arch["image_size"] == 256
    assert loaded.task_prompts.task_ids == (0, 1, 4) and not loaded.training
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # no temp files left


def test_official_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    sam = build_sam("tiny", seed=5)
    torch.save(sam.state_dict(), tmp_path / "sam_tiny.pth")
    model = build_model("tiny", checkpoint=tmp_path / "sam_tiny.pth")
    assert _same_weights(model.sam, sam)
    assert not model.task_prompts.task_embeddings.any()


def test_failed_write_leaves_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    model = build_model("tiny")
    path = save_checkpoint(tmp_path / "m.ckpt", model, step=1)
    before = path.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("sumseg.models.checkpoint.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.ckpt"]


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", build_model("tiny"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path}.*damaged safetensors.*truncated"):
        load_checkpoint(path)
    pth = tmp_path / "sam.pth"
    torch.save(build_sam("tiny").state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=rf"{pth}: not a readable checkpoint"):
        build_model("tiny", pth)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_random_file_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    rng = np.random.default_rng(0)
    for _ in range(200):  # random bytes break the restricted unpickler in many different ways
        junk.write_bytes(rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError, match=rf"{junk}: not a readable checkpoint"):
            read_checkpoint(junk)
    with pytest.raises(CheckpointError, match="not found"):
        build_model("tiny", tmp_path / "nope.pth")


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["SUMSEG_TEST_MARKER"]),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_never_run(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SUMSEG_TEST_MARKER", str(marker))
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"x": _Payload()}, f)
    with pytest.raises(CheckpointError, match=str(evil)):
        build_model("tiny", evil)
    assert not marker.exists()


def test_checkpoint_of_another_model_names_model_and_keys(tmp_path: Path) -> None:
    pth = tmp_path / "tiny.pth"
    torch.save(build_sam("tiny").state_dict(), pth)
    with pytest.raises(CheckpointError) as e:
        build_model("vit_b", pth)
    msg = str(e.value)
    assert f"{pth}: checkpoint does not fit model 'vit_b'" in msg
    assert "it looks like a 'tiny' checkpoint" in msg
    assert "image_encoder.pos_embed: checkpoint (1, 16, 16, 96) vs model (1, 64, 64, 768)" in msg
    assert "missing keys: image_encoder.blocks.4." in msg
    # HQ weights given as plain SAM: unexpected HQ keys are named
    hq = tmp_path / "hq_tiny.pth"
    torch.save(build_sam("hq_tiny").state_dict(), hq)
    with pytest.raises(CheckpointError, match=r"looks like a 'hq_tiny'.*unexpected keys: mask_decoder\.hf_token"):
        build_model("tiny", hq)


def test_sumseg_checkpoint_given_as_another_model(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", build_model("tiny"))
    with pytest.raises(CheckpointError, match=r"holds a 'tiny' model, not 'vit_b'"):
        build_model("vit_b", path)
    state, meta = read_checkpoint(path)
    assert meta is not None and "task_prompts.task_embeddings" in state


def test_atomic_files_get_the_usual_mode(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", build_model("tiny"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_checkpoint_naming_an_unknown_model(tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file, save_file

    path = save_checkpoint(tmp_path / "m.ckpt", build_model("tiny"))
    _, meta = read_checkpoint(path)
    meta.model = "vit_z"
    header = {"format": "sumseg-checkpoint", "format_version": "1", "sumseg": json.dumps(meta.__dict__)}
    save_file(load_file(path), path, metadata=header)
    with pytest.raises(CheckpointError, match=rf"{path}: model 'vit_z' is not one sumseg knows"):
        load_checkpoint(path)


def test_model_names_follow_one_rule() -> None:
    """build_model, the configs and the CLI share sumseg.model_names.model_problems."""
    from sumseg.model_names import MODEL_CHOICES, PRETRAINED, model_problems

    assert "tiny_foundation" in MODEL_CHOICES and PRETRAINED["tiny_foundation"].is_file()
    with pytest.raises(ConfigError, match="name must be one of vit_h, .*, tiny_foundation, got 'vit_x'"):
        build_model("vit_x")
    with pytest.raises(ConfigError, match="name may be omitted only with a checkpoint"):
        build_model()
    with pytest.raises(ConfigError, match="checkpoint must be omitted with name tiny_foundation .*give name tiny"):
        build_model("tiny_foundation", "some.ckpt")
    assert model_problems("tiny_foundation", None) == [] and model_problems(None, "a.ckpt") == []
    assert model_problems("tiny", None, ("--model", "--checkpoint")) == []
    assert model_problems(None, None, ("--model", "--checkpoint")) == [
        ("--model", "--model may be omitted only with a --checkpoint")]


def test_the_same_weights_give_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    # safetensors writes several metadata keys in a varying order; sumseg writes one, so a checkpoint's
    # bytes are a function of its weights and metadata (a resumed run's files equal an uninterrupted one's)
    import subprocess
    import sys

    code = ("import sys; from sumseg import build_model, save_checkpoint; "
            "save_checkpoint(sys.argv[1], build_model('tiny_foundation'), step=3, config={'a': 1, 'b': [1, 2]})")
    for i in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{i}.ckpt")], check=True)
    assert len({(tmp_path / f"{i}.ckpt").read_bytes() for i in range(3)}) == 1
    # version 1 files (three header keys, as the shipped tiny_foundation) are still read
    from sumseg.model_names import PRETRAINED
    from sumseg.models.checkpoint import read_meta

    meta = read_meta(PRETRAINED["tiny_foundation"])
    assert meta is not None and meta.model == "tiny"
