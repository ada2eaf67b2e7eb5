"""Procedural scenes of the synthetic world: textured backgrounds, objects made of parts.

One scene = one ``numpy.random.Generator``; :func:`scene_rng` seeds it from (seed, split, index)
so any image can be regenerated alone. A scene has 2–4 objects (ellipses or star-like
polygons), drawn back to front so later objects occlude earlier ones. Each object has 1–3 parts
in a shifted hue with their own texture: a disc on its edge (sticking out), a stripe across
it, an inner spot. The last object drawn is the *salient* one: clearly larger, near the centre,
saturated, on top (never occluded), so it is also the largest visible object.

Masks are the visible regions after occlusion (parts also after later parts of their own
object). Masks smaller than the minimum areas (at 256²: objects 300 px, parts 120 px; scaled
by (size/256)²) are dropped, and an object that is dropped takes its parts with it.
Shapes are rasterised by OpenCV without anti-aliasing, so image edges and masks agree exactly.

An :class:`AppearanceShift` (low contrast and sensor noise) turns a rendered image into one of a
target domain the foundation never saw; the masks stay the same.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

MIN_OBJECT_AREA = 300  # pixels at 256²
MIN_PART_AREA = 120
PART_KINDS: tuple[str, ...] = ("edge_disc", "stripe", "spot")


@dataclass
class Scene:
    """A rendered scene. image (S, S, 3) uint8 RGB; objects and parts (S, S) bool visible masks.

    ``salient`` indexes ``objects``; ``part_object[j]`` is the index in ``objects`` of part j's
    object; ``part_kinds[j]`` one of :data:`PART_KINDS`.
    """

    image: np.ndarray
    objects: list[np.ndarray] = field(default_factory=list)
    salient: int = -1
    parts: list[np.ndarray] = field(default_factory=list)
    part_object: list[int] = field(default_factory=list)
    part_kinds: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AppearanceShift:
    """A target domain's look: every channel pulled towards mid-grey, ``128 + contrast · (x − 128)``,
    then Gaussian noise with a standard deviation of ``noise`` grey levels (docs/synthetic-world.md)."""

    contrast: float = 0.5
    noise: float = 6.0

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 → the shifted (H, W, 3) uint8 image; the noise is drawn from ``rng``."""
        x = 128.0 + np.float32(self.contrast) * (image.astype(np.float32) - 128.0)
        x += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(self.noise)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of every other image."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) float32 x and y coordinates, read-only."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """(3,) float32 RGB in [0, 1] of a hue in [0, 1), saturation and value."""
    px = np.array([[[int(h * 180) % 180, int(s * 255), int(v * 255)]]], dtype=np.uint8)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(S, S) float32 pattern in about [-1, 1]: smooth noise, stripes, or a dot grid."""
    kind = rng.integers(3)
    if kind == 0:
        cells = int(rng.choice([4, 8, 16, 32]))
        small = rng.standard_normal((cells, cells)).astype(np.float32)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC) * 0.6
    x, y = _grid(size)
    theta, period = rng.uniform(0, np.pi), rng.uniform(5, 18) * size / 256
    if kind == 1:
        return np.sin((x * np.cos(theta) + y * np.sin(theta)) * (2 * np.pi / period) + rng.uniform(0, 6.3))
    return np.sin(x * (2 * np.pi / period)) * np.sin(y * (2 * np.pi / period))


def _layer(rng: np.random.Generator, size: int, colour: np.ndarray, amp: float) -> np.ndarray:
    """(S, S, 3) float32 colour ``colour`` modulated by a random texture of amplitude ``amp``."""
    return colour[None, None, :] * (1.0 + amp * _texture(rng, size))[:, :, None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(S, S, 3) float32: textured base colour, soft blotches, a slow brightness gradient."""
    base = _hsv(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.3, 0.8))
    img = _layer(rng, size, base, rng.uniform(0.05, 0.25))
    blotches = np.zeros((size, size, 3), np.float32)
    for _ in range(int(rng.integers(2, 7))):
        centre = (int(rng.integers(size)), int(rng.integers(size)))
        shift = (_hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.8)) - base) * 0.6
        cv2.circle(blotches, centre, int(rng.uniform(0.05, 0.2) * size), shift.tolist(), -1)
    img += cv2.GaussianBlur(blotches, (0, 0), sigmaX=size / 40)
    x, y = _grid(size)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = ((x * np.cos(theta) + y * np.sin(theta)) / size).astype(np.float32)
    return img * (1.0 + rng.uniform(0.1, 0.4) * (ramp - ramp.mean()))[:, :, None]


def _body(rng: np.random.Generator, size: int, centre: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) uint8 0/1 body of an ellipse or star polygon, and (K, 2) points on its outline."""
    m = np.zeros((size, size), np.uint8)
    aspect, angle = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    if rng.random() < 0.5:
        rad = np.full_like(t, r)
    else:  # star-like: radius oscillating between inner and outer
        rad = r * (
            1.0 - rng.uniform(0.15, 0.3) * (1 + np.cos(int(rng.integers(4, 8)) * t + rng.uniform(0, 6.3))) / 2
        )
    local = np.stack([rad * np.cos(t), aspect * rad * np.sin(t)], axis=1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    outline = local @ rot.T + centre
    cv2.fillPoly(m, [np.round(outline).astype(np.int32)], 1)
    return m, outline


def _part(
    rng: np.random.Generator,
    kind: str,
    size: int,
    body: np.ndarray,
    outline: np.ndarray,
    centre: np.ndarray,
    r: float,
) -> np.ndarray:
    """(S, S) bool region of one part of an object (an edge disc may stick out of the body)."""
    m = np.zeros((size, size), np.uint8)
    if kind == "edge_disc":
        p = outline[int(rng.integers(len(outline)))]
        cv2.circle(m, (int(round(p[0])), int(round(p[1]))), int(round(r * rng.uniform(0.3, 0.45))), 1, -1)
        return m.astype(bool)
    if kind == "stripe":
        theta, off = rng.uniform(0, np.pi), rng.uniform(-0.4, 0.4) * r
        d = np.array([np.cos(theta), np.sin(theta)])
        n = np.array([-d[1], d[0]])
        half = r * rng.uniform(0.12, 0.2)
        c = centre + off * n
        quad = [
            c - 2 * r * d - half * n,
            c + 2 * r * d - half * n,
            c + 2 * r * d + half * n,
            c - 2 * r * d + half * n,
        ]
        cv2.fillPoly(m, [np.round(np.array(quad)).astype(np.int32)], 1)
    else:  # spot
        c = centre + rng.uniform(-0.3, 0.3, 2) * r
        axes = (int(round(r * rng.uniform(0.2, 0.35))), int(round(r * rng.uniform(0.2, 0.35))))
        cv2.ellipse(m, (int(round(c[0])), int(round(c[1]))), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    return (m & body).astype(bool)


def _place(rng: np.random.Generator, size: int, salient: bool) -> tuple[np.ndarray, float]:
    """Centre (x, y) and radius of an object; the salient one is big and near the centre."""
    if salient:
        return size / 2 + rng.uniform(-0.1, 0.1, 2) * size, rng.uniform(0.22, 0.28) * size
    return rng.uniform(0.1, 0.9, 2) * size, rng.uniform(0.06, 0.13) * size


def render_scene(rng: np.random.Generator, size: int = 256) -> Scene:
    """Draw one scene with ``rng`` (all randomness comes from it) and return image + masks."""
    canvas = _background(rng, size)
    n_objects = int(rng.integers(2, 5))
    obj_map = np.full((size, size), -1, np.int16)
    part_map = np.full((size, size), -1, np.int16)
    part_owner: list[int] = []
    part_kinds: list[str] = []
    for i in range(n_objects):
        salient = i == n_objects - 1
        centre, r = _place(rng, size, salient)
        hue = rng.random()
        sat, val = (
            (rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
            if salient
            else (rng.uniform(0.2, 0.5), rng.uniform(0.35, 0.8))
        )
        body, outline = _body(rng, size, centre, r)
        sel = body.astype(bool)
        obj_map[sel], part_map[sel] = i, -1
        canvas[sel] = _layer(rng, size, _hsv(hue, sat, val), rng.uniform(0.05, 0.2))[sel]
        kinds = rng.permutation(PART_KINDS)[: int(rng.integers(1, 4))]
        for kind in kinds:
            region = _part(rng, str(kind), size, body, outline, centre, r)
            part_hue = (hue + rng.choice([-1, 1]) * rng.uniform(0.15, 0.5)) % 1.0
            obj_map[region], part_map[region] = i, len(part_owner)
            canvas[region] = _layer(rng, size, _hsv(part_hue, sat, val), rng.uniform(0.05, 0.2))[region]
            part_owner.append(i)
            part_kinds.append(str(kind))
    blurred = np.asarray(cv2.GaussianBlur(canvas, (0, 0), sigmaX=0.6), dtype=np.float32)
    blurred += rng.standard_normal(blurred.shape, dtype=np.float32) * 0.006
    image = np.clip(np.rint(blurred * 255), 0, 255).astype(np.uint8)
    return _visible_masks(image, obj_map, part_map, part_owner, part_kinds, n_objects - 1, size)


def _visible_masks(
    image: np.ndarray,
    obj_map: np.ndarray,
    part_map: np.ndarray,
    part_owner: list[int],
    part_kinds: list[str],
    salient: int,
    size: int,
) -> Scene:
    """Keep the objects and parts whose visible area reaches the (size-scaled) minimum."""
    scale = (size / 256) ** 2
    scene = Scene(image)
    kept: dict[int, int] = {}
    for i in range(salient + 1):
        m = obj_map == i
        if m.sum() >= MIN_OBJECT_AREA * scale:
            kept[i] = len(scene.objects)
            scene.objects.append(m)
    scene.salient = kept[salient]  # on top and large: always kept
    for j, (owner, kind) in enumerate(zip(part_owner, part_kinds, strict=True)):
        m = part_map == j
        if owner in kept and m.sum() >= MIN_PART_AREA * scale:
            scene.parts.append(m)
            scene.part_object.append(kept[owner])
            scene.part_kinds.append(kind)
    return scene
