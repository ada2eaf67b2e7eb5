"""Datasets: readers (COCO, SA-1B, RITM benchmarks, mask folders, images), the synthetic world,
and the SAM image-embedding cache. Every reader returns a :class:`Dataset` of :class:`ImageRecord`."""

from sumseg.data.coco import read_coco
from sumseg.data.dataset import detect_format, read_dataset
from sumseg.data.embedding_cache import EmbeddingCache, encode_image, encoder_fingerprint
from sumseg.data.folder import read_mask_folder
from sumseg.data.images import content_key, load_rgb
from sumseg.data.records import Dataset, ImageRecord, MaskRecord, SkipReport
from sumseg.data.ritm import read_benchmark
from sumseg.data.sa1b import read_sa1b
from sumseg.data.synthetic import Scene, render_scene, scene_rng
from sumseg.data.synthetic_world import write_world
from sumseg.data.unlabelled import read_images
from sumseg.tasks import TASK_NAMES

__all__ = [
    "TASK_NAMES",
    "Dataset",
    "EmbeddingCache",
    "ImageRecord",
    "MaskRecord",
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
    "write_world",
]
