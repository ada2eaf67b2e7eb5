"""``sumseg uncertainty``: refiner inference on every stored pseudo-label → U = |σ(s) − σ(r)|.

Per image (one encoder pass of the refiner): every pseudo-label's stored logits ``s`` go in as
the mask prompt, with its box and its grid point (positive), all masks of the image in batches,
one output each (``multimask=False``, no task prompt), exactly what ``SamPredictor.predict(
point_coords, point_labels, box, mask_input, multimask_output=False)`` does for one mask. The
map ``U`` at the low resolution (K, L, L) is stored as ``round(255·U)`` uint8 in
``labels/<stem>.uncertainty.safetensors`` (|error| ≤ 1/510); ``c = 1 − U``. Resumable (an image
whose file exists for this refiner and these pseudo-labels is skipped) and shardable (``--shard
i/N`` takes the store's images i, i+N, ...). ``show`` writes overlay PNGs of the first masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from sumseg.atomic import atomic_path, write_json
from sumseg.config import UncertaintyConfig, check_uncertainty_options, refuse_bad
from sumseg.data.embedding_cache import EmbeddingCache
from sumseg.errors import ConfigError, DataError
from sumseg.models.backbones import Backbone
from sumseg.models.interface import frame_kind, lowres_to_image_in
from sumseg.models.refiner import check_refiner
from sumseg.models.sum_sam import ImageFeatures
from sumseg.outputs import check_output_dir, folder_lock
from sumseg.pipeline.pseudo_label_run import image_features
from sumseg.pipeline.store import UNCERTAINTY_FORMAT, VERSION, ImageLabels, PseudoLabelStore, Shard, open_store
from sumseg.pipeline.store_schema import read_uncertainty_meta
from sumseg.prompts.batch import PromptBatch
from sumseg.tensor_files import file_digest, read_tensors, save_tensors, state_fingerprint

QUANTISATION = "uint8 = round(255 * U); |error| <= 1/510"


def uncertainty_map(s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """U = |σ(s) − σ(r)| of pseudo-label logits ``s`` and refiner logits ``r`` (same shape)."""
    return (torch.sigmoid(s.float()) - torch.sigmoid(r.float())).abs()


def quantise(u: torch.Tensor) -> torch.Tensor:
    """U in [0, 1] → uint8 round(255·U) (error ≤ 1/510 after /255)."""
    return torch.round(u.clamp(0, 1) * 255).to(torch.uint8)


@torch.inference_mode()
def refine(refiner: Backbone, embeddings: torch.Tensor | ImageFeatures, labels: ImageLabels,
           hw: tuple[int, int], batch: int = 64) -> torch.Tensor:
    """(K, L, L) refiner logits r for K pseudo-labels of one image ((1, C, h, w) embeddings, or the
    image's :class:`ImageFeatures`: SAM 2's carry the high-res levels).

    Prompts as ``SamPredictor.predict`` builds them: the grid point (label 1) and the box, mapped to the
    input frame by the refiner's frame (SAM 1: ``ResizeLongestSide``; SAM 2: squashed) as float32, in the
    refiner's one prompt (:meth:`PromptBatch.point_and_box`, as in its training); ``s`` (K, 1, L, L) as
    mask input, in the refiner's low-res frame (the store's: :func:`_check_refiner`).
    """
    features = embeddings if isinstance(embeddings, ImageFeatures) else ImageFeatures(embeddings)
    device = features.embeddings.device
    transform = refiner.frame
    points = torch.as_tensor(transform.apply_coords(labels.points.double().numpy(), hw), dtype=torch.float)
    boxes = torch.as_tensor(transform.apply_boxes(labels.boxes.double().numpy(), hw), dtype=torch.float)
    out = []
    for a in range(0, len(labels), batch):
        pts = points[a : a + batch, None, :].to(device)
        prompts = PromptBatch.point_and_box(torch.zeros(len(pts), dtype=torch.long, device=device), pts,
                                            boxes[a : a + batch].to(device))
        low, _ = refiner(features, prompts, labels.logits[a : a + batch, None].to(device), None,
                         multimask=False)
        out.append(low[:, 0].float().cpu())
    n = labels.logits.shape[-1]
    return torch.cat(out) if out else torch.zeros(0, n, n)


def overlay(rgb: np.ndarray, pseudo: np.ndarray, refined: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(H, 4W, 3) BGR panels: image, pseudo-label (red, white outline), refined mask (blue), U heat map (0 → 1)."""
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def tint(mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
        out = img.astype(np.float32)
        out[mask] = 0.5 * out[mask] + 0.5 * np.array(colour, np.float32)
        out = np.ascontiguousarray(out.astype(np.uint8))
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        return cv2.drawContours(out, contours, -1, (255, 255, 255), 1)

    heat = cv2.applyColorMap(np.round(np.clip(u, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return np.concatenate([img, tint(pseudo, (40, 40, 230)), tint(refined, (230, 120, 40)), heat], axis=1)


@dataclass
class UncertaintySummary:
    """Masks and images with U maps in the store, what this run computed, mean U over the store's masks."""

    images: int
    images_done: int
    computed_now: int
    masks: int
    mean_u: float
    overlays: list[Path]


def _check_refiner(store: PseudoLabelStore, refiner: Backbone) -> str:
    """The refiner's fingerprint, after checking it may be a refiner, fits the store (input size, low-res
    frame: the stored logits are its mask prompt) and made its existing U maps."""
    check_refiner(refiner, "--refiner")  # type: ignore[arg-type]
    if refiner.image_size != store.image_size:
        raise ConfigError(f"refiner {refiner.name} (input {refiner.image_size} px) does not fit the store "
                          f"{store.root} ({store.model}, {store.image_size} px)")
    if frame_kind(refiner) != store.frame:
        raise ConfigError(f"refiner {refiner.name} (low-res frame {frame_kind(refiner)}) does not fit the store "
                          f"{store.root} ({store.model}, frame {store.frame}): the stored logits are its mask "
                          "prompt; train the refiner from the family (SAM 1 or SAM 2) that made the pseudo-labels")
    fp = state_fingerprint(refiner)
    path = store.root / "uncertainty.json"
    if path.is_file():
        meta = read_uncertainty_meta(path)
        if meta["refiner_fingerprint"] != fp:
            raise ConfigError(f"{path}: the U maps here come from another refiner; delete {path} and "
                              f"{store.labels_dir}/*.uncertainty.safetensors to recompute them")
    else:
        write_uncertainty_meta(store.root, refiner.name, fp)
    return fp


def write_uncertainty_meta(root: Path, maker: str, fingerprint: str) -> None:
    """A store's ``uncertainty.json``: what made its U maps (a refiner's name and fingerprint)."""
    write_json(root / "uncertainty.json", {"format": UNCERTAINTY_FORMAT, "version": VERSION, "refiner": maker,
                                           "refiner_fingerprint": fingerprint, "quantisation": QUANTISATION}, indent=1)


def write_u_map(store: PseudoLabelStore, i: int, u8: torch.Tensor, fingerprint: str) -> None:
    """Store image ``i``'s (K, L, L) uint8 U maps, tied to its labels file (a changed label makes them stale) and
    to ``fingerprint``, what made them (the refiner's :func:`~sumseg.tensor_files.state_fingerprint`)."""
    labels_file = store.labels_dir / f"{store.images[i].stem}.safetensors"
    save_tensors(store.uncertainty_path(i), {"uncertainty": u8}, {
        "format": UNCERTAINTY_FORMAT, "version": VERSION, "refiner_fingerprint": fingerprint,
        "labels_digest": file_digest(labels_file)})


def _done(store: PseudoLabelStore, i: int, fp: str) -> bool:
    """True when image i's U map is there, whole (shape, dtype), for this refiner and these pseudo-labels."""
    path = store.uncertainty_path(i)
    if not path.is_file():
        return False
    try:
        _, meta = read_tensors(path, UNCERTAINTY_FORMAT)
        store.uncertainty_u8(i)  # shape, dtype and the labels digest
    except DataError:
        return False  # a damaged or stale file is recomputed (a damaged labels file is named when it is read)
    return meta.get("refiner_fingerprint") == fp


def _image(store: PseudoLabelStore, i: int, refiner: Backbone, fp: str, cache: EmbeddingCache | None,
           want_overlays: int, write: bool) -> list[np.ndarray]:
    """Compute image i's U maps (and write them); return up to ``want_overlays`` overlay images."""
    rec, labels = store.record(i), store.load(i, confidence=False)
    hw = (rec.height, rec.width)
    r = refine(refiner, image_features(refiner, rec, cache), labels, hw)
    if not torch.isfinite(r).all():
        raise DataError(f"{rec.source}: refiner {refiner.name} gave {int((~torch.isfinite(r)).sum())} non-finite "
                        "logits for this image; no U map written (NaN would read as U = 0, full confidence)")
    u8 = quantise(uncertainty_map(labels.logits, r))
    if write:
        write_u_map(store, i, u8, fp)
    pictures: list[np.ndarray] = []
    if want_overlays and len(labels):
        rgb, n = rec.load_image(), min(want_overlays, len(labels))
        pseudo = store.masks(i)[:n]
        refined = (lowres_to_image_in(store.frame, r[:n], store.image_size, hw) > 0).numpy()
        heat = lowres_to_image_in(store.frame, u8[:n].float() / 255, store.image_size, hw).numpy()
        pictures = [overlay(rgb, pseudo[k], refined[k], heat[k]) for k in range(n)]
    return pictures


def run_uncertainty(refiner: Backbone, cfg: UncertaintyConfig, cache: EmbeddingCache | None = None
                    ) -> UncertaintySummary:
    """Write U maps for shard ``cfg.shard`` of the finished pseudo-label store ``cfg.pseudo_labels`` with the
    ``refiner`` given built (``cfg.refiner``, ``cache`` and ``device`` are the command's); the first
    ``cfg.show`` overlays under ``<store>/overlays``. An out-of-range ``show`` is refused before anything
    is read (:func:`check_uncertainty_options`)."""
    from tqdm import tqdm

    show = cfg.show
    refuse_bad(lambda c: check_uncertainty_options(show, c))
    shard, progress = Shard.parse(cfg.shard), cfg.progress
    if cfg.pseudo_labels is None:
        raise ConfigError("run_uncertainty needs cfg.pseudo_labels (the pseudo-label store)")
    store = open_store(cfg.pseudo_labels)
    check_output_dir(store.root, dirs=["overlays"] if show else [], label="--pseudo-labels")
    computed, shown = 0, list[Path]()
    with folder_lock(store.root, name=f".uncertainty-{shard.name}.lock", label="--pseudo-labels",
                     busy=f"another run is computing uncertainty {shard.name} of this store"):
        fp = _check_refiner(store, refiner)
        mine = [i for i in range(len(store)) if shard.selects(i)]
        for i in tqdm(mine, desc=f"uncertainty {shard.index}/{shard.count}", unit="img", disable=not progress):
            done = _done(store, i, fp)
            if done and len(shown) >= show:
                continue
            pictures = _image(store, i, refiner, fp, cache, show - len(shown), write=not done)
            computed += not done
            for k, pic in enumerate(pictures):
                path = store.root / "overlays" / f"{store.images[i].stem}_{k}.png"
                path.parent.mkdir(exist_ok=True)
                with atomic_path(path) as tmp:
                    tmp.write_bytes(cv2.imencode(".png", pic)[1].tobytes())
                shown.append(path)
    return summarise_uncertainty(store, computed, shown)


def summarise_uncertainty(store: PseudoLabelStore, computed: int = 0, shown: list[Path] | None = None
                          ) -> UncertaintySummary:
    """Mean U over every mask pixel that has a U map (all shards)."""
    total, pixels, masks, images = 0.0, 0, 0, 0
    for i in range(len(store)):
        u = store.uncertainty_u8(i)
        if u is None:
            continue
        images += 1
        masks += u.shape[0]
        total += float(u.double().sum()) / 255
        pixels += u.numel()
    return UncertaintySummary(len(store), images, computed, masks, total / max(1, pixels), shown or [])
