"""Embedding cache: equals a fresh SamPredictor forward (fp16), resumes, refuses stale encoders."""

from __future__ import annotations

import fcntl
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from sumseg.data.embedding_cache import EmbeddingCache
from sumseg.data.images import content_key
from sumseg.data.records import ImageRecord
from sumseg.errors import DataError
from sumseg.models.registry import build_sam
from tests.test_data_readers import save_rgb


def _records(root: Path, n: int) -> list[ImageRecord]:
    shapes = [(180, 240), (256, 100), (64, 64), (300, 200)]
    out = []
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        save_rgb(root / f"{i}.png", h, w, seed=i)
        out.append(ImageRecord(str(i), root / f"{i}.png", h, w))
    return out


@pytest.fixture(scope="module")
def sam() -> torch.nn.Module:
    return build_sam("tiny")


def test_cache_equals_fresh_forward_in_fp16(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 4)
    keys = EmbeddingCache(tmp_path / "c", sam).build(recs, progress=False)
    cache = EmbeddingCache(tmp_path / "c", sam)  # reopened from disk
    assert len(cache) == 4 and keys == [content_key(r.load_image()) for r in recs]
    predictor = SamPredictor(build_sam("tiny").eval())
    for rec, key in zip(recs, keys, strict=True):
        predictor.set_image(rec.load_image())
        fresh = predictor.features[0].to(torch.float16).float()
        got = cache.get(key)
        assert got.dtype == torch.float32 and got.shape == (256, 16, 16)
        assert torch.equal(got, fresh)
    assert sam.training  # the model's mode is restored


def test_resume_and_growth(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 4)
    first = EmbeddingCache(tmp_path / "c", sam)
    first.build(recs[:2], progress=False)
    reference = first.get(content_key(recs[1].load_image())).clone()
    (tmp_path / "c" / "index.json").write_text('{"rows": {}}')  # as if killed before the first flush
    resumed = EmbeddingCache(tmp_path / "c", sam)
    assert len(resumed) == 0
    resumed.build(recs[:1] + recs, progress=False)  # duplicate image: one row
    assert len(resumed) == 4
    assert torch.equal(EmbeddingCache(tmp_path / "c", sam).get(content_key(recs[1].load_image())), reference)
    with pytest.raises(KeyError):
        resumed.get("0" * 40)


def test_changed_encoder_weight_invalidates(tmp_path: Path) -> None:
    recs = _records(tmp_path / "img", 1)
    model = build_sam("tiny")
    EmbeddingCache(tmp_path / "c", model).build(recs, progress=False)
    with torch.no_grad():
        model.image_encoder.blocks[0].attn.qkv.bias[0] += 1e-3
    with pytest.raises(DataError, match=r"meta\.json: embedding cache was built for another image encoder"):
        EmbeddingCache(tmp_path / "c", model)
    rebuilt = EmbeddingCache(tmp_path / "c", model, on_mismatch="rebuild")
    assert len(rebuilt) == 0
    key = rebuilt.build(recs, progress=False)[0]
    predictor = SamPredictor(model.eval())
    predictor.set_image(recs[0].load_image())
    assert torch.equal(rebuilt.get(key), predictor.features[0].half().float())


def test_weights_changed_after_opening_are_caught(tmp_path: Path) -> None:
    model = build_sam("tiny")
    cache = EmbeddingCache(tmp_path / "c", model)
    with torch.no_grad():
        model.image_encoder.neck[0].weight.mul_(2)
    with pytest.raises(DataError, match="image encoder changed since this cache was opened"):
        cache.build(_records(tmp_path / "img", 1), progress=False)


def test_fp16_storage_on_disk(tmp_path: Path, sam: torch.nn.Module) -> None:
    EmbeddingCache(tmp_path / "c", sam).build(_records(tmp_path / "img", 1), progress=False)
    arr = np.load(tmp_path / "c" / "embeddings.npy", mmap_mode="r")
    assert arr.dtype == np.float16 and arr.shape == (1, 256, 16, 16)


def test_killed_build_keeps_flushed_rows(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 3)
    (tmp_path / "img" / "2.png").write_bytes(b"junk")  # the build dies on the third image
    with pytest.raises(DataError, match=r"2\.png: unreadable or corrupt image"):
        EmbeddingCache(tmp_path / "c", sam).build(recs, progress=False, flush_every=1)
    assert len(EmbeddingCache(tmp_path / "c", sam)) == 2


def test_exception_mid_build_flushes_computed_rows(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 4)
    (tmp_path / "img" / "2.png").write_bytes(b"junk")  # fails after two rows, before any flush
    with pytest.raises(DataError, match=r"2\.png: unreadable or corrupt image"):
        EmbeddingCache(tmp_path / "c", sam).build(recs, progress=False)  # flush_every=32
    reopened = EmbeddingCache(tmp_path / "c", sam)
    assert len(reopened) == 2 and content_key(recs[1].load_image()) in reopened


def test_missing_index_reads_as_empty_cache(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 2)
    EmbeddingCache(tmp_path / "c", sam).build(recs, progress=False)
    (tmp_path / "c" / "index.json").unlink()  # as if killed before the first flush
    cache = EmbeddingCache(tmp_path / "c", sam)
    assert len(cache) == 0
    cache.build(recs, progress=False)
    assert len(EmbeddingCache(tmp_path / "c", sam)) == 2


def test_concurrent_build_is_refused(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 1)
    cache = EmbeddingCache(tmp_path / "c", sam)
    (tmp_path / "c").mkdir()
    with open(tmp_path / "c" / "build.lock", "w") as other:  # another build holds the lock
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DataError, match=r"build\.lock: another process is building this embedding cache"):
            cache.build(recs, progress=False)
        fcntl.flock(other, fcntl.LOCK_UN)
    assert len(cache.build(recs, progress=False)) == 1 and len(cache) == 1
