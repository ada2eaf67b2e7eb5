"""``sumseg pseudo-label``: read the input, resolve thresholds, label every image of a shard, resume.

One store folder takes every shard (``--shard i/N`` labels the images at input positions
p ≡ i mod N); each shard holds its own lock and writes its own index, and the reader merges
them. A per-image JSON is written last, so a killed run resumes at the first image without
one; every file depends only on the input, the model and the settings, so a resumed or
sharded store equals an uninterrupted single run's file for file (``meta.json`` included).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sumseg.atomic import write_json
from sumseg.config import PseudoLabelConfig, PseudoLabelSettings, check_pseudo_label_settings, refuse_bad
from sumseg.data.dataset import read_dataset
from sumseg.data.embedding_cache import EmbeddingCache
from sumseg.data.records import ImageRecord
from sumseg.errors import ConfigError, DataError
from sumseg.models.backbones import Backbone
from sumseg.models.interface import frame_kind
from sumseg.models.sum_sam import ImageFeatures
from sumseg.outputs import check_output_dir, folder_lock
from sumseg.pipeline.amg import calibrate, calibration_positions, label_image
from sumseg.pipeline.store import (
    AREA_BINS,
    FORMAT,
    VERSION,
    Shard,
    StoreEntry,
    image_stem,
    open_store,
    read_entry,
    read_meta,
    write_image,
    write_index,
)
from sumseg.tensor_files import state_fingerprint

INDEX_EVERY = 16  # images between index rewrites (the index is a summary; the per-image JSONs are the truth)


@dataclass
class StoreSummary:
    """What ``sumseg pseudo-label`` reports at the end (over the whole store, all shards)."""

    root: Path
    images: int
    labelled_now: int
    masks_per_image: list[int]
    area_hist: list[int]
    skipped: list[dict[str, Any]]
    bytes_per_image: float
    thresholds: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    complete: bool = True


def _input(images: Path) -> tuple[list[ImageRecord], list[str], list[dict[str, Any]]]:
    """Readable records (sorted as the reader gives them), their store ids, and the files refused."""
    ds = read_dataset(images, skip_bad=True)
    root = ds.root if ds.root.is_dir() else ds.root.parent
    ids: dict[str, Path] = {}
    out = []
    for rec in ds.records:
        path = Path(rec.image_path)
        try:
            image_id = path.resolve().relative_to(root.resolve()).with_suffix("").as_posix()
        except ValueError:
            image_id = rec.image_id
        if image_id in ids:
            raise DataError(f"{path}: image id {image_id!r} twice in {images} (also {ids[image_id]})")
        ids[image_id] = path
        out.append(image_id)
    skipped = [{"position": None, "path": str(p), "reason": r} for p, r in ds.skipped]
    return ds.records, out, skipped


def _meta(model: Backbone, images: Path, records: list[ImageRecord], ids: list[str],
          settings: PseudoLabelSettings) -> dict[str, Any]:
    listing = "\n".join(f"{i}|{r.height}x{r.width}" for i, r in zip(ids, records, strict=True))
    return {
        "format": FORMAT, "version": VERSION, "model": model.name, "image_size": model.image_size,
        "lowres_size": model.image_size // 4, "model_fingerprint": state_fingerprint(model),
        "input": str(images), "input_digest": hashlib.blake2b(listing.encode(), digest_size=16).hexdigest(),
        "num_images": len(records), "settings": settings.to_dict(),
    } | ({} if frame_kind(model) == "longest_side" else {"frame": frame_kind(model)})  # absent: longest side


def _unstarted(out: Path) -> bool:
    """True for a folder that a run killed before its ``meta.json`` may leave: hidden files only (locks,
    temporary files of atomic writes) and ``labels/`` / ``index/`` folders holding hidden files only."""
    for p in out.iterdir():
        if p.name.startswith("."):
            continue
        if p.name not in ("labels", "index") or not p.is_dir() or any(not q.name.startswith(".") for q in p.iterdir()):
            return False
    return True


def _check_out(out: Path, images: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """Check ``--out``; return the stored meta when it is this store already (same model, input, settings)."""
    out = check_output_dir(out, inputs=[images], dirs=["labels", "index"], label="--out")
    if not (out / "meta.json").is_file():
        if not _unstarted(out):
            raise ConfigError(f"--out {out}: not empty and not a pseudo-label store; choose an empty or new folder")
        return None
    stored = read_meta(out)
    differ = [k for k in meta if k != "input" and stored.get(k) != meta[k]]
    if differ:
        shown = "; ".join(f"{k}: stored {stored.get(k)!r}, now {meta[k]!r}" for k in differ[:4])
        raise ConfigError(f"{out / 'meta.json'}: this store was made with another model, input or settings "
                          f"({shown}); use the same ones to resume or add shards, or another --out")
    return stored


def _finished(labels_dir: Path, stem: str, position: int, image_id: str) -> StoreEntry | None:
    """The entry of input image ``position`` when its JSON is written (checked: it is this image's), else None."""
    entry = read_entry(labels_dir, stem)
    if entry is not None and (entry.position, entry.image_id) != (position, image_id):
        raise DataError(f"{labels_dir / (stem + '.json')}: holds image {entry.image_id!r} at input position "
                        f"{entry.position}, not {image_id!r} at {position}; the store is damaged (delete this file "
                        "to relabel the image)")
    return entry


def image_features(model: Backbone, rec: ImageRecord, cache: EmbeddingCache | None) -> ImageFeatures:
    """The image's features (batch 1) on the model's device, from its (1, C', h, w) row in the cache (stored
    float16) or one pass of :meth:`encode_rgb <sumseg.models.interface.PromptableModel.encode_rgb>`, through
    the model's ``cached_features`` (SAM 1: the embeddings; SAM 2: embeddings and high-res levels)."""
    device = model.device
    if cache is None:
        return model.cached_features(model.encode_rgb(rec.load_image())[None].to(device))
    key = cache.build([rec], progress=False)[0]
    return model.cached_features(cache.get(key)[None].to(device))


def run_pseudo_labels(model: Backbone, cfg: PseudoLabelConfig,
                      cache: EmbeddingCache | None = None) -> StoreSummary:
    """Label shard ``cfg.shard`` of the images under ``cfg.images`` into the store ``cfg.out`` with the settings
    ``cfg.amg`` (resumes a killed run; ``cfg.model``, ``checkpoint``, ``cache`` and ``device`` are the
    command's: ``model`` and ``cache`` are given built). Out-of-range settings are refused before
    anything is read or written (:func:`check_pseudo_label_settings`, named by their fields)."""
    settings = cfg.amg
    refuse_bad(lambda c: check_pseudo_label_settings(settings, c))
    if cfg.images is None or cfg.out is None:
        raise ConfigError(f"run_pseudo_labels needs cfg.images and cfg.out, got {cfg.images!r} and {cfg.out!r}")
    images, out, shard, progress = Path(cfg.images), Path(cfg.out), Shard.parse(cfg.shard), cfg.progress
    records, ids, refused = _input(images)
    meta = _meta(model, images, records, ids, settings)
    stored = _check_out(out, images, meta)
    labels_dir, index_dir = out / "labels", out / "index"

    def features(p: int) -> tuple[torch.Tensor | ImageFeatures, tuple[int, int]]:
        return image_features(model, records[p], cache), (records[p].height, records[p].width)

    with folder_lock(out, name=f".{shard.name}.lock", label="--out",
                     busy=f"another run is writing {shard.name} of this store"):
        if stored is None:
            sample = calibration_positions(len(records), settings.calibration_images)
            thresholds, counted = calibrate(model, features, sample, settings)
            stored = meta | {"thresholds": thresholds,
                             "calibration": {"images": [ids[p] for p in sample], "candidates": counted}
                             if counted else None}
            write_json(out / "meta.json", stored, indent=1)
        labels_dir.mkdir(exist_ok=True)  # after meta.json, the store's commit point
        index_dir.mkdir(exist_ok=True)
        thresholds = stored["thresholds"]
        entries: list[StoreEntry] = []
        skipped = list(refused)
        todo = [p for p in range(len(records)) if shard.selects(p)]
        done_now = 0
        for n, p in enumerate(tqdm(todo, desc=f"pseudo-labels {shard.index}/{shard.count}", unit="img",
                                   disable=not progress)):
            rec, stem = records[p], image_stem(ids[p])
            entry = _finished(labels_dir, stem, p, ids[p])
            if entry is None:
                try:
                    labels, hist = label_image(model, features(p)[0], (rec.height, rec.width), settings, thresholds)
                except DataError as e:
                    skipped.append({"position": p, "path": str(rec.image_path), "reason": str(e)})
                    continue
                rel = os.path.relpath(Path(rec.image_path).resolve(), labels_dir.resolve())
                entry = StoreEntry(p, ids[p], stem, Path(rel).as_posix(), rec.height, rec.width, len(labels), hist)
                write_image(labels_dir, entry, labels)
                done_now += 1
            entries.append(entry)
            if (n + 1) % INDEX_EVERY == 0:
                write_index(index_dir, shard, entries, skipped, complete=False)
        write_index(index_dir, shard, entries, skipped, complete=True)
    return summarise(out, done_now)


def summarise(root: Path, labelled_now: int = 0) -> StoreSummary:
    """Counts, area histogram, skipped files and bytes per image of a (possibly partial) store."""
    store = open_store(root, allow_partial=True)
    per_image = [e.num_masks for e in store.images]
    hist = np.sum([e.area_hist for e in store.images], axis=0).astype(int).tolist() if store.images \
        else [0] * (len(AREA_BINS) - 1)
    size = sum(f.stat().st_size for e in store.images for f in store.labels_dir.glob(f"{e.stem}.*"))
    return StoreSummary(root, len(store), labelled_now, per_image, hist, store.skipped,
                        size / max(1, len(store)), store.thresholds, store.meta["settings"], store.complete)


FEW_MASKS_PER_IMAGE = 1.0
"""Below this mean number of masks per image the thresholds kept almost nothing: the run warns."""
QUANTILE_ADVICE = "--iou-thresh q0.6 --stability-thresh q0.5 --max-per-image 6"
"""Thresholds that keep masks on a model whose scores are not SAM's (the tiny foundation; docs/demo.md)."""


def few_masks_warning(s: StoreSummary) -> str | None:
    """A warning when the thresholds kept fewer than :data:`FEW_MASKS_PER_IMAGE` masks per image on
    average (SAM's 0.88 / 0.95 on a model whose scores are not calibrated like SAM's); else None."""
    if not s.masks_per_image:
        return None
    total, n = sum(s.masks_per_image), len(s.masks_per_image)
    if total / n >= FEW_MASKS_PER_IMAGE:
        return None
    given = f"--iou-thresh {s.settings.get('pred_iou_thresh')} --stability-thresh " \
            f"{s.settings.get('stability_score_thresh')}"
    return (f"warning: the thresholds kept almost nothing ({total} masks on {n} images, {total / n:.2f} per "
            f"image; given {given}). A model whose scores are not calibrated like SAM's needs thresholds "
            f"from its own scores: rerun into a new --out with quantiles, e.g. {QUANTILE_ADVICE} "
            "(lower quantiles keep more; docs/pseudo-labels.md)")


def format_summary(s: StoreSummary) -> str:
    """The end-of-run report (plain text); its first line says when almost nothing was kept."""
    k = np.array(s.masks_per_image or [0])
    few = few_masks_warning(s) is not None
    lines = [f"pseudo-label store {s.root}: {s.images} images ({s.labelled_now} labelled by this run), "
             f"{int(k.sum())} masks; per image mean {k.mean():.1f}, min {k.min()}, max {k.max()}"
             + (f" [almost nothing kept: try {QUANTILE_ADVICE}]" if few else "")
             + ("" if s.complete else " [other shards not finished yet]"),
             "thresholds: predicted IoU > {pred_iou_thresh:.4g}, stability >= {stability_score_thresh:.4g}".format(
                 **s.thresholds) + f" (given: {s.settings.get('pred_iou_thresh')}, "
             f"{s.settings.get('stability_score_thresh')})",
             "mask area / image area: " + ", ".join(
                 f"[{lo:g}, {min(hi, 1):g}{']' if hi > 1 else ')'}: {c}"
                 for lo, hi, c in zip(AREA_BINS[:-1], AREA_BINS[1:], s.area_hist, strict=True)),
             f"bytes per image: {s.bytes_per_image / 1024:.1f} KiB"]
    if s.skipped:
        lines.append(f"skipped {len(s.skipped)} file(s):")
        lines.extend(f"  {x['path']}: {x['reason']}" for x in s.skipped)
    return "\n".join(lines)
