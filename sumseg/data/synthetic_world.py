"""Write the synthetic world to disk: one COCO split per folder, PNG images, RLE masks.

Layout: ``<out>/<split>/images/<index:06d>.png`` and ``<out>/<split>/annotations.json``.
Every annotation carries ``task`` (read by :func:`sumseg.data.coco.read_coco`), ``kind``
(``salient``/``entity``/``part``), ``category_id`` (1 salient, 2 entity, 3 part) and ``object``
(the index of its object in the scene). What a split holds:

- ``pretrain``, ``general_test``: the general set — every entity and every part, task 0
  (the salient object appears once, as an entity);
- ``task1_*``: the salient object only, task 1; ``task2_*``: every entity (the salient object
  included), task 2; ``task3_*``: every part, task 3;
- ``unlabeled``: images only (an empty ``annotations`` list).

With an :class:`~sumseg.data.synthetic.AppearanceShift`, the labelled tasks' splits and the
unlabelled pool (:data:`SHIFTED_SPLITS`) are drawn in that target domain, while ``pretrain`` and
``general_test`` stay in the foundation's own: the demo's fine-tuning target, and its forgetting check.

Resumable: a split whose ``annotations.json`` records the same generator version, seed, count
and image size is skipped whole; otherwise every image is regenerated and its PNG is written
only when the file on disk differs, and ``annotations.json`` is written last, atomically.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from sumseg.atomic import atomic_path, write_json
from sumseg.checks import load_json
from sumseg.config.checker import Checker, refuse_bad
from sumseg.data import rle as rle_utils
from sumseg.data.synthetic import AppearanceShift, Scene, render_scene, scene_rng
from sumseg.errors import ConfigError, DataError
from sumseg.outputs import output_dir
from sumseg.tasks import TASK_NAMES

GENERATOR_VERSION = 1
CATEGORIES = [{"id": 1, "name": "salient"}, {"id": 2, "name": "entity"}, {"id": 3, "name": "part"}]
_CATEGORY = {c["name"]: c["id"] for c in CATEGORIES}
# split → (mask set, task id written); mask set "general" = entities + parts
SPLITS: dict[str, tuple[str, int]] = {
    "pretrain": ("general", 0),
    "unlabeled": ("none", 0),
    "task1_train": ("salient", 1),
    "task2_train": ("entity", 2),
    "task3_train": ("part", 3),
    "task1_test": ("salient", 1),
    "task2_test": ("entity", 2),
    "task3_test": ("part", 3),
    "general_test": ("general", 0),
}
DEFAULT_SIZES: dict[str, int] = {
    "pretrain": 2000,
    "unlabeled": 500,
    "task1_train": 32,
    "task2_train": 32,
    "task3_train": 32,
    "task1_test": 64,
    "task2_test": 64,
    "task3_test": 64,
    "general_test": 64,
}
SHIFTED_SPLITS: frozenset[str] = frozenset(s for s in SPLITS if s not in ("pretrain", "general_test"))
"""The splits an appearance shift applies to: the tasks' labelled and test images and the unlabelled pool."""
_IMAGE_NAME = re.compile(r"^(\d{6})\.png$")


def scene_annotations(scene: Scene, split: str) -> list[dict[str, Any]]:
    """COCO annotations (no ``id``/``image_id`` yet) of the masks that ``split`` keeps."""
    mask_set, task = SPLITS[split]
    picked: list[tuple[Any, str, int]] = []  # (mask, kind, object index)
    if mask_set == "salient":
        picked.append((scene.objects[scene.salient], "salient", scene.salient))
    if mask_set in ("entity", "general"):
        picked.extend((m, "entity", i) for i, m in enumerate(scene.objects))
    if mask_set in ("part", "general"):
        picked.extend((m, "part", o) for m, o in zip(scene.parts, scene.part_object, strict=True))
    anns = []
    for mask, kind, obj in picked:
        rle = rle_utils.encode(mask)
        anns.append(
            {
                "segmentation": rle_utils.to_json(rle),
                "area": rle_utils.area(rle),
                "bbox": list(rle_utils.bbox(rle)),
                "iscrowd": 0,
                "category_id": _CATEGORY[kind],
                "task": task,
                "kind": kind,
                "object": obj,
            }
        )
    return anns


def world_scene(seed: int, split: str, index: int, size: int, shift: AppearanceShift | None = None) -> Scene:
    """Image ``index`` of ``split`` in the world of ``seed``, its image shifted when ``split`` is one of
    :data:`SHIFTED_SPLITS` and ``shift`` is given (the noise continues the scene's own generator)."""
    rng = scene_rng(seed, split, index)
    scene = render_scene(rng, size)
    if shift is not None and split in SHIFTED_SPLITS:
        scene.image = shift.apply(scene.image, rng)
    return scene


def png_bytes(image: np.ndarray) -> bytes:
    """Deterministic PNG encoding of an (H, W, 3) uint8 RGB image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise DataError("PNG encoding failed")
    return buf.tobytes()


Job = tuple[int, str, int, int, str, AppearanceShift | None]  # seed, split, index, size, out folder, shift


def _make_image(job: Job) -> tuple[int, list[dict[str, Any]], bool]:
    """Render image ``index`` of ``split``, write its PNG unless identical on disk; (index, anns, written)."""
    seed, split, index, size, out, shift = job
    scene = world_scene(seed, split, index, size, shift)
    data = png_bytes(scene.image)
    path = Path(out) / split / "images" / f"{index:06d}.png"
    written = not (path.is_file() and path.read_bytes() == data)
    if written:
        with atomic_path(path) as tmp:  # a full disk names the image and leaves no temporary file
            tmp.write_bytes(data)
    return index, scene_annotations(scene, split), written


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _pool_map(jobs: list[Job], pool: Any) -> Iterator[tuple[int, list[dict], bool]]:
    return pool.imap(_make_image, jobs, chunksize=8) if pool is not None else map(_make_image, jobs)


def _split_info(seed: int, split: str, count: int, size: int, shift: AppearanceShift | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "generator": "sumseg.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "split": split,
        "count": count,
        "image_size": size,
    }
    if shift is not None and split in SHIFTED_SPLITS:
        info["shift"] = asdict(shift)
    return info


def _write_split(
    out: Path, split: str, count: int, seed: int, size: int, shift: AppearanceShift | None, pool: Any, bar: tqdm
) -> dict[str, int]:
    info = _split_info(seed, split, count, size, shift)
    ann_path = out / split / "annotations.json"
    if ann_path.is_file():
        try:
            old = load_json(ann_path)
        except DataError:
            old = None
        if isinstance(old, dict) and old.get("info") == info:
            bar.update(count)
            return {
                "images": count,
                "annotations": len(old.get("annotations", [])),
                "written": 0,
                "unchanged": count,
            }
    (out / split / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    written = 0
    for index, image_anns, was_written in _pool_map(
        [(seed, split, i, size, str(out), shift) for i in range(count)], pool
    ):
        images.append({"id": index, "file_name": f"images/{index:06d}.png", "height": size, "width": size})
        for a in image_anns:
            anns.append({"id": len(anns) + 1, "image_id": index, **a})
        written += was_written
        bar.update(1)
    for p in (out / split / "images").iterdir():  # images of an earlier, larger run of this split
        m = _IMAGE_NAME.match(p.name)
        if (m and int(m.group(1)) >= count) or p.name.endswith(".tmp"):  # or a killed run's temporary file
            p.unlink()
    doc = {
        "info": info,
        "images": images,
        "annotations": anns,
        "categories": CATEGORIES,
        "tasks": [{"id": t, "name": name} for t, name in TASK_NAMES.items()],
    }
    write_json(ann_path, doc, separators=(",", ":"))
    return {"images": count, "annotations": len(anns), "written": written, "unchanged": count - written}


def _pool(workers: int) -> Any:
    """Worker processes that never inherit a parent's threads.

    Forking a process that has already run torch (or any OpenMP code) can deadlock the child,
    so workers come from a forkserver (a clean process that imports this module once and
    forks from there), or are spawned where forkserver is not available.
    """
    if "forkserver" not in mp.get_all_start_methods():  # pragma: no cover - e.g. Windows
        return mp.get_context("spawn").Pool(workers, initializer=_init_worker)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx.Pool(workers, initializer=_init_worker)


MAX_SPLIT_IMAGES = 10_000_000
MAX_IMAGE_SIDE = 4096
MAX_WORKERS = 256
SYNTH_FLAGS = {"seed": "--seed", "pretrain": "--pretrain", "unlabeled": "--unlabeled", "task_train": "--task-train",
               "test": "--test", "image_size": "--image-size", "workers": "--workers",
               "shift_contrast": "--shift-contrast", "shift_noise": "--shift-noise"}
"""``sumseg data synth``'s flag of each number :func:`check_world_options` checks."""


def check_shift(c: Checker, shift: AppearanceShift, keys: dict[str, str] | None = None) -> None:
    """The appearance shift's ranges (contrast in (0, 1]: 0 would erase the image; noise in [0, 255] grey
    levels), each problem named by ``keys[name]`` (:data:`SYNTH_FLAGS`) or by its field (``shift.noise``)."""
    k = (keys or {}).get
    c.number(k("shift_contrast", "shift.contrast"), shift.contrast, 0.0, 1.0, lo_open=True)
    c.number(k("shift_noise", "shift.noise"), shift.noise, 0.0, 255.0)


def check_world_options(c: Checker, seed: int, sizes: dict[str, int], image_size: int, workers: int | None,
                        keys: dict[str, str] | None = None, shift: AppearanceShift | None = None) -> None:
    """The ranges of the world's numbers (``sizes``: images per split, or per ``data synth`` flag), each
    problem named by ``keys[name]`` (:data:`SYNTH_FLAGS`) or by its argument (``sizes['pretrain']``)."""
    k = (keys or {}).get
    if shift is not None:
        check_shift(c, shift, keys)
    c.number(k("seed", "seed"), seed, 0, 2**32 - 1)  # the demo's --world-seed bound: it is this seed
    for name, n in sizes.items():
        c.number(k(name, f"sizes[{name!r}]"), n, 0, MAX_SPLIT_IMAGES)
    c.number(k("image_size", "image_size"), image_size, 64, MAX_IMAGE_SIDE)
    if workers is not None:  # None: all cores
        c.number(k("workers", "workers"), workers, 0, MAX_WORKERS)


def write_world(
    out_dir: str | Path,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    image_size: int = 256,
    workers: int | None = None,
    progress: bool = True,
    shift: AppearanceShift | None = None,
) -> dict[str, dict[str, int]]:
    """Write every split of the world to ``out_dir`` (layout and resume rules in the module docstring).

    ``sizes`` overrides image counts of :data:`DEFAULT_SIZES` (0 leaves a split out); ``shift`` draws
    :data:`SHIFTED_SPLITS` in that target domain (None: every split in the foundation's own);
    ``workers`` processes render in parallel (default: all cores; 1 = in this process).
    ``out_dir`` is checked and locked first (:func:`sumseg.outputs.output_dir`).
    Returns per split: images, annotations, PNGs written, PNGs already identical on disk.
    """
    unknown = set(sizes or {}) - set(SPLITS)
    if unknown:
        raise ConfigError(f"unknown synthetic split(s) {sorted(unknown)}; known: {list(SPLITS)}")
    counts = {**DEFAULT_SIZES, **(sizes or {})}
    refuse_bad(lambda c: check_world_options(c, seed, counts, image_size, workers, shift=shift))
    with output_dir(out_dir, dirs=[s for s, n in counts.items() if n]):  # one writer per folder
        return _write_world(Path(out_dir), seed, counts, image_size, shift, workers or os.cpu_count() or 1, progress)


def _write_world(out: Path, seed: int, counts: dict[str, int], image_size: int, shift: AppearanceShift | None,
                 workers: int, progress: bool) -> dict[str, dict[str, int]]:
    """:func:`write_world` once its folder is locked."""
    pool = _pool(workers) if workers > 1 else None
    summary: dict[str, dict[str, int]] = {}
    try:
        with tqdm(
            total=sum(counts.values()), desc="synthetic world", unit="img", disable=not progress
        ) as bar:
            for split, count in counts.items():
                if count:
                    summary[split] = _write_split(out, split, count, seed, image_size, shift, pool, bar)
    except BaseException:  # an error or Ctrl-C: stop the workers now, do not render the queued jobs
        if pool is not None:
            pool.terminate()
        raise
    if pool is not None:
        pool.close()
        pool.join()
    return summary
