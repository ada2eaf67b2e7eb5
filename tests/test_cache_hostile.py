"""Property-based damage to an embedding-cache folder: never a wrong embedding.

A built cache (two images) is copied and damaged — bytes of the array's header changed, the
array truncated anywhere, ``index.json`` / ``meta.json`` replaced by random bytes or by JSON
with random values. Opening it and asking for every key must end in a SumsegError whose
message starts with a path in the folder, in KeyError (the key is not there), or in the
exact embedding the undamaged cache gives. Derandomised, with a fixed example count.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sumseg.data.embedding_cache import EmbeddingCache, SamCacheEncoder
from sumseg.errors import SumsegError
from sumseg.models.registry import build_sam
from tests.test_data_cache import _array_file, _records
from tests.test_hostile_data import suite

_case = count()


class Built:
    """A template cache folder, its model and the embedding of every key."""

    def __init__(self, root: Path) -> None:
        self.sam = build_sam("tiny")
        self.template = root / "template"
        keys = EmbeddingCache(self.template, SamCacheEncoder(self.sam)).build(_records(root / "img", 2), progress=False)
        cache = EmbeddingCache(self.template, SamCacheEncoder(self.sam))
        self.expected = {k: cache.get(k) for k in keys}
        self.root = root

    def damaged(self, damage: Callable[[Path], None]) -> Path:
        folder = self.root / f"case{next(_case)}"
        shutil.copytree(self.template, folder)
        damage(folder)
        return folder

    def check(self, folder: Path) -> None:
        try:
            cache = EmbeddingCache(folder, SamCacheEncoder(self.sam))
            for key, value in self.expected.items():
                try:
                    got = cache.get(key)
                except KeyError:
                    continue
                assert torch.equal(got, value), f"wrong embedding served for {key}"
        except SumsegError as e:
            assert str(e).startswith(str(folder)), e
        finally:
            shutil.rmtree(folder)


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    with tempfile.TemporaryDirectory() as d:
        yield Built(Path(d))


@suite(60)
@given(data=st.data())
def test_array_header_bytes_changed(built: Built, data: st.DataObject) -> None:
    def damage(folder: Path) -> None:
        path = _array_file(folder)
        raw = bytearray(path.read_bytes())
        header = raw.index(b"\n") + 1  # magic, length and the header dict end at the first newline
        for _ in range(data.draw(st.integers(1, 3))):
            raw[data.draw(st.integers(0, header - 1))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(raw))

    built.check(built.damaged(damage))


@suite(40)
@given(cut=st.floats(0.0, 0.9999))
def test_array_truncated_anywhere(built: Built, cut: float) -> None:
    def damage(folder: Path) -> None:
        path = _array_file(folder)
        raw = path.read_bytes()
        path.write_bytes(raw[: int(cut * len(raw))])

    built.check(built.damaged(damage))


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@suite(80)
@given(data=st.data(), name=st.sampled_from(["index.json", "meta.json"]))
def test_index_and_meta_values_changed(built: Built, data: st.DataObject, name: str) -> None:
    def damage(folder: Path) -> None:
        doc = json.loads((folder / name).read_text())
        target = doc["rows"] if name == "index.json" and data.draw(st.booleans()) else doc
        key = data.draw(st.sampled_from(sorted(target)))
        target[key] = data.draw(_json_value)
        (folder / name).write_text(json.dumps(doc))

    built.check(built.damaged(damage))


@suite(40)
@given(raw=st.binary(max_size=200), name=st.sampled_from(["index.json", "meta.json"]))
def test_index_and_meta_replaced_by_random_bytes(built: Built, raw: bytes, name: str) -> None:
    built.check(built.damaged(lambda folder: (folder / name).write_bytes(raw)))
