"""Property-based bad input for checkpoints: random bytes, mutated bytes, mutated safetensors headers.

Each case ends in a CheckpointError whose message starts with the file's path, or in a loaded
model whose weights are finite, whose metadata is well-typed, and, when only the header's
metadata was edited, whose weights are exactly the saved ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sumseg import build_model, load_checkpoint, save_checkpoint
from sumseg.errors import CheckpointError
from sumseg.models.checkpoint import CheckpointMeta
from sumseg.tasks import TASK_ID_LIMIT
from tests.conftest import randomise_task_prompts
from tests.test_hostile_data import mutate, mutate_doc, suite

Saved = tuple[bytes, dict[str, torch.Tensor]]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("hostile_checkpoints")


@pytest.fixture(scope="module")
def saved(work: Path) -> Saved:
    model = randomise_task_prompts(build_model("tiny", tasks=(0, 1, 5)))
    path = save_checkpoint(work / "ok.ckpt", model, step=3, config={"lr": 1e-5})
    return path.read_bytes(), {k: v.clone() for k, v in model.state_dict().items()}


def _split(raw: bytes) -> tuple[dict, bytes]:
    """A safetensors file's header (parsed) and its data bytes."""
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


def _load(path: Path) -> tuple[torch.nn.Module, CheckpointMeta | None] | None:
    """The loaded model and metadata, or None after a CheckpointError naming ``path``."""
    try:
        return load_checkpoint(path, None if path.suffix == ".ckpt" else "tiny")
    except CheckpointError as e:
        assert str(e).startswith(str(path)), str(e)
        return None


def _check(loaded: tuple[torch.nn.Module, CheckpointMeta | None], state: dict[str, torch.Tensor] | None) -> None:
    model, meta = loaded
    got = model.state_dict()
    assert all(bool(torch.isfinite(v).all()) for v in got.values() if v.is_floating_point())
    if meta is not None:
        assert isinstance(meta.model, str) and isinstance(meta.config, dict) and isinstance(meta.arch, dict)
        assert all(type(t) is int and 0 <= t < TASK_ID_LIMIT for t in meta.task_ids)
        assert type(meta.step) is int and meta.step >= 0
        assert list(model.task_prompts.task_ids) == meta.task_ids
    if state is not None:
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


@suite(60)
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".ckpt", ".pth"]))
def test_random_bytes_as_checkpoints(work: Path, data: bytes, suffix: str) -> None:
    path = work / f"random{suffix}"
    path.write_bytes(data)
    assert _load(path) is None


@suite(40)
@given(st.data())
def test_mutated_checkpoint_bytes(work: Path, saved: Saved, data: st.DataObject) -> None:
    raw, _ = saved
    head = 8 + int.from_bytes(raw[:8], "little")
    in_header = data.draw(st.booleans())  # half the cases hit the small JSON header
    mutated = mutate(raw[:head], data.draw) + raw[head:] if in_header else mutate(raw, data.draw)
    path = work / "mutated.ckpt"
    path.write_bytes(mutated)
    loaded = _load(path)
    if loaded is not None:
        _check(loaded, None)


@suite(50)
@given(st.data())
def test_mutated_checkpoint_headers(work: Path, saved: Saved, data: st.DataObject) -> None:
    raw, state = saved
    header, blob = _split(raw)
    meta_only = data.draw(st.booleans())
    if meta_only:  # the sumseg metadata: model, task ids, step, config, version, arch
        header["__metadata__"]["sumseg"] = json.dumps(mutate_doc(json.loads(header["__metadata__"]["sumseg"]),
                                                                 data.draw))  # fmt: skip
    else:  # anything: tensor dtypes, shapes, offsets, the format fields
        header = mutate_doc(header, data.draw)
    path = work / "header.ckpt"
    path.write_bytes(_join(header, blob))
    loaded = _load(path)
    if loaded is not None:
        _check(loaded, state if meta_only else None)
