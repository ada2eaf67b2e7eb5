"""Datasets: readers (COCO, SA-1B, RITM benchmarks, mask folders, images), the synthetic world,
and the SAM image-embedding cache. Every reader returns a :class:`Dataset` of :class:`ImageRecord`.

The names below are imported on first use (:mod:`sumseg.lazy`): reading data never imports torch;
only the embedding cache does.
"""

from typing import TYPE_CHECKING

from sumseg.lazy import lazy_exports

if TYPE_CHECKING:
    from sumseg.data.coco import read_coco
    from sumseg.data.dataset import detect_format, read_dataset
    from sumseg.data.embedding_cache import EmbeddingCache, SamCacheEncoder, encode_image, encoder_fingerprint
    from sumseg.data.folder import read_mask_folder
    from sumseg.data.images import content_key, load_rgb
    from sumseg.data.records import Dataset, ImageRecord, MaskRecord, SkipReport
    from sumseg.data.ritm import read_benchmark
    from sumseg.data.sa1b import read_sa1b
    from sumseg.data.synthetic import AppearanceShift, Scene, render_scene, scene_rng
    from sumseg.data.synthetic_world import world_scene, write_world
    from sumseg.data.unlabelled import read_images
    from sumseg.tasks import TASK_NAMES

_EXPORTS = {
    "TASK_NAMES": "sumseg.tasks",
    "AppearanceShift": "sumseg.data.synthetic",
    "Dataset": "sumseg.data.records",
    "EmbeddingCache": "sumseg.data.embedding_cache",
    "ImageRecord": "sumseg.data.records",
    "MaskRecord": "sumseg.data.records",
    "SamCacheEncoder": "sumseg.data.embedding_cache",
    "Scene": "sumseg.data.synthetic",
    "SkipReport": "sumseg.data.records",
    "content_key": "sumseg.data.images",
    "detect_format": "sumseg.data.dataset",
    "encode_image": "sumseg.data.embedding_cache",
    "encoder_fingerprint": "sumseg.data.embedding_cache",
    "load_rgb": "sumseg.data.images",
    "read_benchmark": "sumseg.data.ritm",
    "read_coco": "sumseg.data.coco",
    "read_dataset": "sumseg.data.dataset",
    "read_images": "sumseg.data.unlabelled",
    "read_mask_folder": "sumseg.data.folder",
    "read_sa1b": "sumseg.data.sa1b",
    "render_scene": "sumseg.data.synthetic",
    "scene_rng": "sumseg.data.synthetic",
    "world_scene": "sumseg.data.synthetic_world",
    "write_world": "sumseg.data.synthetic_world",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "TASK_NAMES",
    "AppearanceShift",
    "Dataset",
    "EmbeddingCache",
    "ImageRecord",
    "MaskRecord",
    "SamCacheEncoder",
    "Scene",
    "SkipReport",
    "content_key",
    "detect_format",
    "encode_image",
    "encoder_fingerprint",
    "load_rgb",
    "read_benchmark",
    "read_coco",
    "read_dataset",
    "read_images",
    "read_mask_folder",
    "read_sa1b",
    "render_scene",
    "scene_rng",
    "world_scene",
    "write_world",
]
