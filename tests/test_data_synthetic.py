"""Synthetic world: determinism, regenerating one image alone, mask rules, COCO output, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sumseg.data import synthetic_world
from sumseg.data.dataset import read_dataset
from sumseg.data.images import load_rgb
from sumseg.data.synthetic import MIN_OBJECT_AREA, MIN_PART_AREA, render_scene, scene_rng
from sumseg.data.synthetic_world import SPLITS, png_bytes, write_world
from sumseg.errors import ConfigError

SMALL = {split: 2 for split in SPLITS} | {"pretrain": 5}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=3, sizes=SMALL, workers=2, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_in_one_process_or_two(world: Path, tmp_path: Path) -> None:
    write_world(tmp_path, seed=3, sizes=SMALL, workers=1, progress=False)
    assert _files(tmp_path) == _files(world)


def test_one_image_regenerated_alone(world: Path) -> None:
    scene = render_scene(scene_rng(3, "pretrain", 4))
    assert png_bytes(scene.image) == (world / "pretrain" / "images" / "000004.png").read_bytes()
    np.testing.assert_array_equal(load_rgb(world / "pretrain" / "images" / "000004.png"), scene.image)
    other = render_scene(scene_rng(4, "pretrain", 4))
    assert not np.array_equal(other.image, scene.image)


def test_scene_mask_rules() -> None:
    for i in range(40):
        s = render_scene(scene_rng(0, "test", i))
        areas = [int(m.sum()) for m in s.objects]
        assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
        assert 1 <= len(s.objects) <= 4 and min(areas) >= MIN_OBJECT_AREA
        assert all(m.sum() >= MIN_PART_AREA for m in s.parts)
        others = [a for k, a in enumerate(areas) if k != s.salient]
        assert all(
            areas[s.salient] > 2 * a for a in others
        )  # >= 2.05x over 1,500 scenes
        for m, o in zip(s.parts, s.part_object, strict=True):
            assert not (m & ~s.objects[o]).any()  # a visible part lies in its object's visible mask
        for a in range(len(s.objects)):
            for b in range(a):
                assert not (s.objects[a] & s.objects[b]).any()  # visible regions never overlap


def test_world_loads_with_the_coco_reader(world: Path) -> None:
    ds = read_dataset(world)
    assert ds.format == "coco-splits" and len(ds.skipped) == 0
    by_split: dict[str, list] = {}
    for r in ds.records:
        by_split.setdefault(r.split, []).append(r)
    assert {k: len(v) for k, v in by_split.items()} == SMALL
    assert all(len(r.masks) == 1 and r.tasks == [1] for r in by_split["task1_train"])
    assert all(set(r.tasks) == {2} for r in by_split["task2_test"])
    assert all(set(r.tasks) == {3} for r in by_split["task3_train"] if r.masks)
    assert all(set(r.tasks) == {0} and len(r.masks) >= 2 for r in by_split["general_test"])
    assert all(not r.masks for r in by_split["unlabeled"])
    rec = by_split["task2_train"][1]
    scene = render_scene(scene_rng(3, "task2_train", 1))
    np.testing.assert_array_equal(rec.mask_stack(), np.stack(scene.objects))  # salient one included
    np.testing.assert_array_equal(rec.load_image(), scene.image)


def test_resume_writes_only_what_changed(tmp_path: Path) -> None:
    sizes = {split: 0 for split in SPLITS} | {"task1_test": 3}
    first = write_world(tmp_path, sizes=sizes, workers=1, progress=False)
    assert first == {"task1_test": {"images": 3, "annotations": 3, "written": 3, "unchanged": 0}}
    assert write_world(tmp_path, sizes=sizes, workers=1, progress=False)["task1_test"]["written"] == 0
    (tmp_path / "task1_test" / "images" / "000001.png").unlink()
    (tmp_path / "task1_test" / "annotations.json").unlink()  # as if killed before the split finished
    again = write_world(tmp_path, sizes=sizes, workers=1, progress=False)["task1_test"]
    assert (again["written"], again["unchanged"]) == (1, 2)
    fewer = write_world(tmp_path, sizes=sizes | {"task1_test": 2}, workers=1, progress=False)
    assert fewer["task1_test"]["written"] == 0
    assert sorted(p.name for p in (tmp_path / "task1_test" / "images").iterdir()) == [
        "000000.png",
        "000001.png",
    ]


def test_unknown_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown synthetic split"):
        write_world(tmp_path, sizes={"nope": 1}, progress=False)


class _FakePool:
    """Stands in for the worker pool: records how write_world shuts it down."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def imap(self, fn: Any, jobs: list[Any], chunksize: int) -> Any:
        if self.fail:
            raise KeyboardInterrupt
        return map(fn, jobs)

    def terminate(self) -> None:
        self.calls.append("terminate")

    def close(self) -> None:
        self.calls.append("close")

    def join(self) -> None:
        self.calls.append("join")


@pytest.mark.parametrize(("fail", "calls"), [(True, ["terminate"]), (False, ["close", "join"])])
def test_pool_terminated_on_error_joined_on_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool, calls: list[str]
) -> None:
    pool = _FakePool(fail)
    monkeypatch.setattr(synthetic_world, "_pool", lambda workers: pool)
    sizes = {split: 0 for split in SPLITS} | {"task1_test": 2}
    if fail:
        with pytest.raises(KeyboardInterrupt):
            write_world(tmp_path, sizes=sizes, workers=2, progress=False)
    else:
        write_world(tmp_path, sizes=sizes, workers=2, progress=False)
    assert pool.calls == calls
