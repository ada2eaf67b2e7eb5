"""Synthetic world: determinism, regenerating one image alone, mask rules, COCO output, resume."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sumseg.data import synthetic_world
from sumseg.data.dataset import read_dataset
from sumseg.data.images import load_rgb
from sumseg.data.synthetic import MIN_OBJECT_AREA, MIN_PART_AREA, AppearanceShift, render_scene, scene_rng
from sumseg.data.synthetic_world import SHIFTED_SPLITS, SPLITS, png_bytes, world_scene, write_world
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


def test_appearance_shift_by_hand() -> None:
    """128 + c (x − 128), then noise: worked out for c = 0.5 without noise; the noise is the rng's."""
    image = np.array([[[0, 128, 255], [200, 100, 1]]], np.uint8)
    flat = AppearanceShift(contrast=0.5, noise=0.0).apply(image, np.random.default_rng(0))
    np.testing.assert_array_equal(flat, [[[64, 128, 192], [164, 114, 64]]])  # 191.5 rounds to even
    noisy = AppearanceShift(contrast=0.5, noise=6.0)
    a, b = noisy.apply(image, np.random.default_rng(1)), noisy.apply(image, np.random.default_rng(1))
    assert a.dtype == np.uint8 and np.array_equal(a, b) and not np.array_equal(a, flat)
    assert np.abs(a.astype(int) - flat).max() <= 6 * 6  # six standard deviations


def test_shifted_world_changes_only_the_task_and_unlabelled_images(world: Path, tmp_path: Path) -> None:
    shift = AppearanceShift(0.5, 6.0)
    write_world(tmp_path, seed=3, sizes=SMALL, workers=1, progress=False, shift=shift)
    for split in SPLITS:
        doc, plain = (json.loads((root / split / "annotations.json").read_text()) for root in (tmp_path, world))
        assert doc["annotations"] == plain["annotations"]  # the masks do not move
        assert (doc["info"].get("shift") == {"contrast": 0.5, "noise": 6.0}) == (split in SHIFTED_SPLITS)
        for index in range(SMALL[split]):
            name = f"images/{index:06d}.png"
            same = (tmp_path / split / name).read_bytes() == (world / split / name).read_bytes()
            assert same == (split not in SHIFTED_SPLITS), (split, index)
            drawn = world_scene(3, split, index, 256, shift).image
            np.testing.assert_array_equal(load_rgb(tmp_path / split / name), drawn)
    assert SHIFTED_SPLITS == set(SPLITS) - {"pretrain", "general_test"}
    # another shift is another world: the shifted splits are written again, the others kept
    again = write_world(tmp_path, seed=3, sizes=SMALL, workers=1, progress=False, shift=AppearanceShift(0.7, 6.0))
    assert again["unlabeled"]["written"] == SMALL["unlabeled"] and again["pretrain"]["written"] == 0


@pytest.mark.parametrize(("shift", "message"), [
    (AppearanceShift(0.0, 6.0), "shift.contrast must lie in (0, 1]"),
    (AppearanceShift(float("nan"), 6.0), "shift.contrast must be a finite number"),
    (AppearanceShift(0.5, 1e12), "shift.noise must lie in [0, 255]"),
])
def test_absurd_shift_is_refused_before_any_image(tmp_path: Path, shift: AppearanceShift, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        write_world(tmp_path / "w", sizes=SMALL, workers=1, progress=False, shift=shift)
    assert not (tmp_path / "w").exists()
