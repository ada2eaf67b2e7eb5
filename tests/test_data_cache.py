"""Embedding cache: equals a fresh SamPredictor forward (fp16), resumes, refuses stale encoders."""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from sumseg.data.embedding_cache import EmbeddingCache, SamCacheEncoder
from sumseg.data.images import content_key
from sumseg.data.records import ImageRecord
from sumseg.errors import DataError
from sumseg.models.registry import build_sam
from sumseg.outputs import OutputError
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
    keys = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam)).build(recs, progress=False)
    cache = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))  # reopened from disk
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
    first = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
    first.build(recs[:2], progress=False)
    reference = first.get(content_key(recs[1].load_image())).clone()
    (tmp_path / "c" / "index.json").write_text('{"rows": {}}')  # as if killed before the first flush
    resumed = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
    assert len(resumed) == 0
    resumed.build(recs[:1] + recs, progress=False)  # duplicate image: one row
    assert len(resumed) == 4
    reopened = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
    assert torch.equal(reopened.get(content_key(recs[1].load_image())), reference)
    with pytest.raises(KeyError):
        resumed.get("0" * 40)


def test_changed_encoder_weight_invalidates(tmp_path: Path) -> None:
    recs = _records(tmp_path / "img", 1)
    model = build_sam("tiny")
    EmbeddingCache(tmp_path / "c", SamCacheEncoder(model)).build(recs, progress=False)
    with torch.no_grad():
        model.image_encoder.blocks[0].attn.qkv.bias[0] += 1e-3
    with pytest.raises(DataError, match=r"meta\.json: embedding cache was built for another image encoder"):
        EmbeddingCache(tmp_path / "c", SamCacheEncoder(model))
    rebuilt = EmbeddingCache(tmp_path / "c", SamCacheEncoder(model), on_mismatch="rebuild")
    assert len(rebuilt) == 0
    key = rebuilt.build(recs, progress=False)[0]
    predictor = SamPredictor(model.eval())
    predictor.set_image(recs[0].load_image())
    assert torch.equal(rebuilt.get(key), predictor.features[0].half().float())


def test_weights_changed_after_opening_are_caught(tmp_path: Path) -> None:
    model = build_sam("tiny")
    cache = EmbeddingCache(tmp_path / "c", SamCacheEncoder(model))
    with torch.no_grad():
        model.image_encoder.neck[0].weight.mul_(2)
    with pytest.raises(DataError, match="image encoder changed since this cache was opened"):
        cache.build(_records(tmp_path / "img", 1), progress=False)


def test_fp16_storage_on_disk(tmp_path: Path, sam: torch.nn.Module) -> None:
    EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam)).build(_records(tmp_path / "img", 1), progress=False)
    arr = np.load(_array_file(tmp_path / "c"), mmap_mode="r")
    assert arr.dtype == np.float16 and arr.shape == (1, 256, 16, 16)


def test_killed_build_keeps_flushed_rows(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 3)
    (tmp_path / "img" / "2.png").write_bytes(b"junk")  # the build dies on the third image
    with pytest.raises(DataError, match=r"2\.png: unreadable or corrupt image"):
        EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam)).build(recs, progress=False, flush_every=1)
    assert len(EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))) == 2


def test_exception_mid_build_flushes_computed_rows(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 4)
    (tmp_path / "img" / "2.png").write_bytes(b"junk")  # fails after two rows, before any flush
    with pytest.raises(DataError, match=r"2\.png: unreadable or corrupt image"):
        EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam)).build(recs, progress=False)  # flush_every=32
    reopened = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
    assert len(reopened) == 2 and content_key(recs[1].load_image()) in reopened


def test_missing_index_reads_as_empty_cache(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 2)
    EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam)).build(recs, progress=False)
    (tmp_path / "c" / "index.json").unlink()  # as if killed before the first flush
    cache = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
    assert len(cache) == 0
    cache.build(recs, progress=False)
    assert len(EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))) == 2


def test_concurrent_build_is_refused(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 1)
    cache = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
    (tmp_path / "c").mkdir()
    with open(tmp_path / "c" / "build.lock", "w") as other:  # another build holds the lock
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match=r"another process is building this embedding cache.*build\.lock is held"):
            cache.build(recs, progress=False)
        fcntl.flock(other, fcntl.LOCK_UN)
    assert len(cache.build(recs, progress=False)) == 1 and len(cache) == 1


def _fresh(sam: torch.nn.Module, rec: ImageRecord) -> torch.Tensor:
    predictor = SamPredictor(sam.eval())
    predictor.set_image(rec.load_image())
    return predictor.features[0].half().float()


def test_two_handles_never_serve_each_others_rows(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 4)
    a = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))  # both opened on an empty folder (a notebook and a script)
    b = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
    keys_a = a.build(recs[:2], progress=False)
    before = [a.get(k).clone() for k in keys_a]
    keys_b = b.build(recs[2:], progress=False)  # must not recreate the array a has mapped
    for k, v in zip(keys_a, before, strict=True):
        assert torch.equal(a.get(k), v)  # a's rows are still its own images
    expected = {k: _fresh(build_sam("tiny"), r) for k, r in zip(keys_a + keys_b, recs, strict=True)}
    for handle in (a, b, EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))):  # a sees b's rows, b sees a's
        for k, v in expected.items():
            assert torch.equal(handle.get(k), v)
    assert len(EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))) == 4


_CHILD = """
import sys
from pathlib import Path
from sumseg.data.embedding_cache import EmbeddingCache, SamCacheEncoder
from sumseg.data.records import ImageRecord
from sumseg.models.registry import build_sam
from PIL import Image

root, paths = sys.argv[1], sys.argv[2:]
cache = EmbeddingCache(root, SamCacheEncoder(build_sam("tiny")))
print("opened", flush=True)
sys.stdin.readline()  # wait until the parent has built and mapped its rows
recs = [ImageRecord(p, Path(p), *Image.open(p).size[::-1]) for p in paths]
cache.build(recs, progress=False)
print("built", flush=True)
"""


def test_a_second_process_builds_beside_a_mapped_handle(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 4)
    root = tmp_path / "c"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), *(str(r.image_path) for r in recs[2:])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "opened"  # the child's handle saw an empty folder
        mine = EmbeddingCache(root, SamCacheEncoder(sam))
        keys = mine.build(recs[:2], progress=False)
        before = [mine.get(k).clone() for k in keys]
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "built"
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        assert child.wait(timeout=120) == 0
    for k, v in zip(keys, before, strict=True):
        assert torch.equal(mine.get(k), v)
    reopened = EmbeddingCache(root, SamCacheEncoder(sam))
    assert len(reopened) == 4
    for rec in recs:
        assert torch.equal(reopened.get(content_key(rec.load_image())), _fresh(build_sam("tiny"), rec))


def _array_file(root: Path) -> Path:
    (path,) = root.glob("embeddings*.npy")
    return path


def _truncate(root: Path) -> None:
    path = _array_file(root)
    path.write_bytes(path.read_bytes()[:-1000])


def _row_out_of_range(root: Path) -> None:
    index = json.loads((root / "index.json").read_text())
    index["rows"][next(iter(index["rows"]))] = 7
    (root / "index.json").write_text(json.dumps(index))


def _wrong_dtype(root: Path) -> None:
    path = _array_file(root)
    np.save(path, np.load(path).astype(np.float32))


def _wrong_shape(root: Path) -> None:
    path = _array_file(root)
    np.save(path, np.load(path)[:, :128])


@pytest.mark.parametrize(
    ("damage", "culprit", "problem"),
    [
        (_truncate, "array", "truncated"),
        (_row_out_of_range, "index", "row 7"),
        (_wrong_dtype, "array", "float32"),
        (_wrong_shape, "array", r"\(2, 128, 16, 16\)"),
    ],
)
def test_damaged_cache_is_refused_on_open(tmp_path: Path, sam: torch.nn.Module, damage, culprit: str,
                                          problem: str) -> None:
    EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam)).build(_records(tmp_path / "img", 2), progress=False)
    name = _array_file(tmp_path / "c").name if culprit == "array" else "index.json"
    damage(tmp_path / "c")
    with pytest.raises(DataError, match=rf"{re.escape(name)}: .*{problem}"):
        EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))


def test_unwritable_cache_folder_is_a_clear_error(tmp_path: Path, sam: torch.nn.Module) -> None:
    (tmp_path / "file").write_text("not a folder")
    cache = EmbeddingCache(tmp_path / "file", SamCacheEncoder(sam))
    with pytest.raises(OutputError, match=r"embedding cache folder .*file: is a file, not a folder"):
        cache.build(_records(tmp_path / "img", 1), progress=False)


def test_a_handle_refuses_rows_rebuilt_for_another_encoder(tmp_path: Path, sam: torch.nn.Module) -> None:
    recs = _records(tmp_path / "img", 2)
    old = EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
    k0 = old.build(recs[:1], progress=False)[0]
    other = build_sam("tiny", seed=5)  # other weights rebuild the folder behind `old`'s back
    EmbeddingCache(tmp_path / "c", SamCacheEncoder(other), on_mismatch="rebuild").build(recs, progress=False)
    assert torch.equal(old.get(k0), _fresh(build_sam("tiny"), recs[0]))  # its own mapped row is still right
    with pytest.raises(DataError, match=r"index\.json: the cache was rebuilt for another image encoder"):
        old.get(content_key(recs[1].load_image()))


def test_index_naming_a_missing_array_is_refused(tmp_path: Path, sam: torch.nn.Module) -> None:
    EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam)).build(_records(tmp_path / "img", 1), progress=False)
    _array_file(tmp_path / "c").unlink()
    with pytest.raises(DataError, match=r"index\.json: names the array file embeddings-[0-9a-f]+\.npy, which does not"):
        EmbeddingCache(tmp_path / "c", SamCacheEncoder(sam))
