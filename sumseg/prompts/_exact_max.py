"""The clicker's core: the pixel of one region farthest from background, on exact squared distances.

``region_max(region, clicked)`` returns the largest exact squared L2 distance ``dy² + dx²`` from a
pixel of ``region`` (``(H, W)`` bool) to the nearest zero pixel, the image border counting as zero
and the ``clicked`` pixels excluded, and the first pixel in raster order holding it. It gives what
the exact transform of the whole padded image gives (:func:`exact_sq_edt`), without computing it:

1. **Window.** Only the region's bounding box plus a ring of zeros is looked at: outside it every
   distance is 0, and the nearest zero pixel of a region pixel always lies inside it.
2. **Integer bounds.** OpenCV's chessboard and city-block transforms (exact integers ``c`` and ``l``)
   bound every squared distance: ``max(c², ⌈l²/2⌉) ≤ d² ≤ min(l², 2c²)``.
3. **A lower bound on the maximum**: the exact distance of the pixels maximising ``c`` and ``l``.
4. **Candidates**: the pixels whose upper bound reaches that lower bound, in raster order. Where the
   two bounds meet the distance is known. Candidates that may exceed the best known value get exact
   values; those that can at most tie with it are resolved in raster order only until the first
   tie (large symmetric regions have thousands of tied pixels).
5. **Exact values**, by the cheapest way for their number and size (a cost model in nanoseconds,
   measured on one x86 core): scanning the offsets within the bound; minimising ``(x - x')² + g²``
   over the columns ``x'`` within the bound, ``g`` being the exact vertical distance to the nearest
   zero in column ``x'`` (OpenCV's city-block transform of the columns laid end to end: the window's
   ring puts a zero at both ends of every column); measuring against the zero pixels on the region's
   edge (every nearest zero pixel is one of them), pair by pair or through a k-d tree (it returns a
   nearest edge pixel, whose exact integer distance is then computed); or scipy's exact transform of
   the window.

Every value that decides is an exact integer: RITM's float32 transform, whose last bit can differ
between equal distances, is never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from sumseg.prompts.geometry import mask_box

# Cost model (ns per unit), measured with 1 thread on the development machine's x86 core.
NS_PAIR = 15.0  # one (candidate, offset) or (candidate, edge zero) pair
NS_EDGE_PX = 2.0  # one window pixel when listing the region's edge zeros
NS_TREE_POINT = 700.0  # one edge zero put into a k-d tree
NS_TREE_QUERY = 2000.0  # one nearest-neighbour query
NS_COLUMN_PX = 7.0  # one pixel of the column strip's vertical distances
NS_SCIPY = 80.0  # one window pixel of scipy's exact transform
_BOX_PX = 1 << 16  # a guess looks for zeros in its (2r+1)² box up to this size, else at the edges
_PAIR_CHUNK = 1 << 20  # pairs handled at once (bounds memory)
_MAX_COLUMN = 16384  # OpenCV's city-block transform is exact up to 32767 px; longer columns: other ways


class Best(NamedTuple):
    """Largest exact squared distance of a region (0 when nothing is clickable) and its pixel."""

    d2: int
    y: int
    x: int


NOTHING = Best(0, -1, -1)


def exact_sq_edt(mask: np.ndarray) -> np.ndarray:
    """Exact squared L2 distance ``(H, W)`` int64 of every pixel of ``mask`` to its nearest zero pixel.

    No padding here: ``mask`` must contain a zero pixel. scipy's feature transform is exact; the
    squared distance is computed from the nearest zero pixel's integer coordinates.
    """
    nearest = ndimage.distance_transform_edt(mask, return_distances=False, return_indices=True)
    grid = np.indices(mask.shape, dtype=np.int64)
    return ((nearest - grid) ** 2).sum(axis=0)


def _sq_dist_to(ys: np.ndarray, xs: np.ndarray, zy: np.ndarray, zx: np.ndarray) -> np.ndarray:
    """Exact squared distance from each pixel ``(ys, xs)`` to the nearest of the pixels ``(zy, zx)``."""
    out = np.empty(len(ys), dtype=np.int64)
    step = max(1, _PAIR_CHUNK // max(1, len(zy)))
    for i in range(0, len(ys), step):
        dy = ys[i:i + step, None] - zy[None, :]
        dx = xs[i:i + step, None] - zx[None, :]
        out[i:i + step] = (dy * dy + dx * dx).min(axis=1)
    return out


def _sq_dist_by_tree(ys: np.ndarray, xs: np.ndarray, zy: np.ndarray, zx: np.ndarray) -> np.ndarray:
    """Same as :func:`_sq_dist_to`, through a k-d tree of ``(zy, zx)`` (exact: float64 Euclidean
    distances of integer points never tie unless their squared integers do)."""
    _, k = cKDTree(np.stack([zy, zx], axis=1)).query(np.stack([ys, xs], axis=1))
    dy, dx = ys - zy[k], xs - zx[k]
    return dy * dy + dx * dx


def _offsets(max_d2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All offsets ``(dy, dx)`` with ``dy² + dx² <= max_d2`` and their squared lengths (int64)."""
    r = math.isqrt(max_d2)
    dy, dx = (a.ravel() for a in np.mgrid[-r:r + 1, -r:r + 1])
    d2 = dy * dy + dx * dx
    keep = d2 <= max_d2
    return dy[keep], dx[keep], d2[keep]


def _n_offsets(max_d2: int) -> int:
    """About how many offsets ``(dy, dx)`` have ``dy² + dx² <= max_d2``."""
    return int(math.pi * max_d2 + 4 * math.isqrt(max_d2) + 1)


class _Candidates(NamedTuple):
    """Pixels that may hold the maximum: window rows, columns (raster order) and bounds on ``d²``."""

    ys: np.ndarray
    xs: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


class _Window:
    """A region's bounding box plus a ring of zeros: ``win`` ``(h, w)`` bool, with lazily listed
    edge zeros (zero pixels 4-adjacent to a one pixel: every nearest zero pixel is one of them)."""

    def __init__(self, win: np.ndarray) -> None:
        self.win = win
        self._edges: tuple[np.ndarray, np.ndarray] | None = None

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        if self._edges is None:
            w = self.win
            grown = w.copy()
            grown[1:] |= w[:-1]
            grown[:-1] |= w[1:]
            grown[:, 1:] |= w[:, :-1]
            grown[:, :-1] |= w[:, 1:]
            self._edges = np.divmod(np.flatnonzero(grown & ~w), w.shape[1])
        return self._edges

    def sq_dist_near(self, y: int, x: int, max_d2: int) -> int:
        """Exact squared distance of pixel ``(y, x)`` to its nearest zero, known to be ``<= max_d2``."""
        r = math.isqrt(max_d2)
        if (2 * r + 1) ** 2 > _BOX_PX:
            zy, zx = self.edges()
            return int(_sq_dist_to(np.array([y]), np.array([x]), zy, zx)[0])
        y0, x0 = max(0, y - r), max(0, x - r)
        box = ~self.win[y0:y + r + 1, x0:x + r + 1]
        zy, zx = np.divmod(np.flatnonzero(box), box.shape[1])
        dy, dx = zy + (y0 - y), zx + (x0 - x)
        return int((dy * dy + dx * dx).min())

    def sq_dist_by_offsets(self, ys: np.ndarray, xs: np.ndarray, max_d2: int) -> np.ndarray:
        """Exact squared distances of pixels ``(ys, xs)``, each known to be ``<= max_d2``: the smallest
        offset within that bound landing on a zero (outside the window counts as zero)."""
        dy, dx, d2 = _offsets(max_d2)
        r = math.isqrt(max_d2)
        zero = np.pad(~self.win, r, constant_values=True)
        out = np.empty(len(ys), dtype=np.int64)
        never = np.int64(max_d2 + 1)
        step = max(1, _PAIR_CHUNK // len(d2))
        for i in range(0, len(ys), step):
            hit = zero[ys[i:i + step, None] + r + dy, xs[i:i + step, None] + r + dx]
            out[i:i + step] = np.where(hit, d2, never).min(axis=1)
        return out

    def sq_dist_by_columns(self, ys: np.ndarray, xs: np.ndarray, max_d2: int) -> np.ndarray:
        """Exact squared distances of pixels ``(ys, xs)``, each known to be ``<= max_d2``: the smallest
        ``(x - x')² + g(y, x')²`` over columns ``|x - x'| <= r``, ``g`` the vertical distance to the
        nearest zero in column ``x'`` (the columns of the strip laid end to end in one (N, 1) image:
        the ring's zeros at both ends of every column keep their distances apart). Offsets past the
        strip are clipped to its edge column: that column is nearer than the offset says, so its
        term still bounds a true distance from above, and the minimising column is never clipped."""
        r = math.isqrt(max_d2)
        c0, c1 = max(0, int(xs.min()) - r), min(self.win.shape[1], int(xs.max()) + r + 1)
        strip = np.ascontiguousarray(self.win[:, c0:c1].T)  # (columns, h)
        g = cv2.distanceTransform(strip.reshape(-1, 1).view(np.uint8), cv2.DIST_L1, 3).ravel()
        g2 = g.astype(np.int32)
        g2 *= g2  # column height <= _MAX_COLUMN, so g² fits int32
        h = strip.shape[1]
        dx = np.arange(-r, r + 1, dtype=np.int32)
        out = np.empty(len(ys), dtype=np.int64)
        step = max(1, _PAIR_CHUNK // len(dx))
        for i in range(0, len(ys), step):
            cols = np.clip(xs[i:i + step, None] - c0 + dx, 0, c1 - c0 - 1)
            out[i:i + step] = (g2[cols * h + ys[i:i + step, None]] + dx * dx).min(axis=1)
        return out

def _chamfer(win: np.ndarray, clicked: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Chessboard and city-block distances ``(h, w)`` float32 (exact integers), 0 at clicked pixels."""
    u8 = win.view(np.uint8)
    d_c = cv2.distanceTransform(u8, cv2.DIST_C, 3)
    d_l1 = cv2.distanceTransform(u8, cv2.DIST_L1, 3)
    for y, x in clicked:
        d_c[y, x] = d_l1[y, x] = 0.0
    return d_c, d_l1


def _candidates(d_c: np.ndarray, d_l1: np.ndarray, lower: int) -> _Candidates:
    """Every pixel whose upper bound ``min(l², 2c²)`` reaches ``lower`` (> 0), with its bounds."""
    c_min = math.isqrt(lower // 2)
    while 2 * c_min * c_min < lower:  # smallest c with 2c² >= lower
        c_min += 1
    flat = np.flatnonzero(d_c.ravel() >= c_min)
    c = d_c.ravel()[flat].astype(np.int64)
    l1 = d_l1.ravel()[flat].astype(np.int64)
    hi = np.minimum(l1 * l1, 2 * c * c)
    keep = hi >= lower
    ys, xs = np.divmod(flat[keep], d_c.shape[1])
    c, l1 = c[keep], l1[keep]
    return _Candidates(ys, xs, np.maximum(c * c, (l1 * l1 + 1) // 2), hi[keep])


def _plan(n: int, max_hi: int, window: _Window) -> str:
    """Cheapest way to the exact squared distances of ``n`` candidates, each ``<= max_hi``: "offsets",
    "columns", "pairs" or "tree" (against the edge zeros), or "transform"."""
    h, w = window.win.shape
    by_offsets = NS_PAIR * n * _n_offsets(max_hi)
    if by_offsets <= NS_EDGE_PX * h * w:
        return "offsets"
    r = math.isqrt(max_hi)
    costs = {"offsets": by_offsets, "transform": NS_SCIPY * h * w}
    if h <= _MAX_COLUMN:
        costs["columns"] = NS_COLUMN_PX * h * min(w, n + 2 * r) + NS_PAIR * n * (2 * r + 1)
    if min(NS_PAIR, NS_TREE_QUERY) * n < min(costs.values()):  # the edges could win: count them
        n_edges = len(window.edges()[0])
        costs["pairs"] = NS_PAIR * n * n_edges
        costs["tree"] = NS_TREE_POINT * n_edges + NS_TREE_QUERY * n
    return min(costs, key=costs.__getitem__)


def _exact(window: _Window, method: str, ys: np.ndarray, xs: np.ndarray, max_hi: int) -> np.ndarray:
    """Exact squared distances of window pixels ``(ys, xs)`` (each ``<= max_hi``) by ``method``."""
    if method == "offsets":
        return window.sq_dist_by_offsets(ys, xs, max_hi)
    if method == "columns":
        return window.sq_dist_by_columns(ys, xs, max_hi)
    if method == "transform":
        return exact_sq_edt(window.win)[ys, xs]
    zy, zx = window.edges()
    return (_sq_dist_to if method == "pairs" else _sq_dist_by_tree)(ys, xs, zy, zx)


def _exact_at(window: _Window, cand: _Candidates, idx: np.ndarray) -> np.ndarray:
    """Exact squared distances of the candidates ``idx``, by the cheapest way for them."""
    max_hi = int(cand.hi[idx].max())
    method = _plan(idx.size, max_hi, window)
    return _exact(window, method, cand.ys[idx], cand.xs[idx], max_hi)


def _winner(window: _Window, cand: _Candidates, lower: int) -> tuple[int, int]:
    """``(k, d²)``: the first candidate (raster order) holding the maximum, and that maximum.

    ``lower`` is the exact squared distance of some candidate. First every candidate that may exceed
    the best value known gets its exact value; the others can at most tie with it, so they are only
    resolved in raster order, in growing chunks, until one ties before the first known holder.
    """
    lo, hi = cand.lo.copy(), cand.hi.copy()
    best = max(lower, int(lo.max()))
    above = np.flatnonzero((lo < hi) & (hi > best))
    if above.size:
        lo[above] = hi[above] = _exact_at(window, cand, above)
        best = max(best, int(lo[above].max()))
    holders = np.flatnonzero(lo == best)
    first = int(holders[0]) if holders.size else len(lo)
    maybe = np.flatnonzero((lo < hi) & (hi >= best))
    maybe = maybe[maybe < first]
    start, size = 0, 256
    while start < maybe.size:
        chunk = maybe[start:start + size]
        ties = chunk[_exact_at(window, cand, chunk) == best]
        if ties.size:
            return int(ties[0]), best
        start, size = start + size, 2 * size
    return first, best


def region_max(region: np.ndarray, clicked: Sequence[tuple[int, int]]) -> Best:
    """Largest exact squared distance to background of a pixel of ``region`` ``(H, W)`` bool (image
    border = background, ``clicked`` ``(y, x)`` pixels excluded) and the first pixel holding it."""
    box = mask_box(region)
    if box is None:
        return NOTHING
    x0, y0, x1, y1 = box
    # Window pixel (i, j) is image pixel (y0 - 1 + i, x0 - 1 + j).
    window = _Window(np.pad(region[y0:y1 + 1, x0:x1 + 1], 1))
    inside = [(y - y0 + 1, x - x0 + 1) for y, x in clicked if y0 <= y <= y1 and x0 <= x <= x1]
    d_c, d_l1 = _chamfer(window.win, inside)
    guesses = dict.fromkeys(divmod(int(np.argmax(d)), d.shape[1]) for d in (d_c, d_l1))
    bounds = {g: min(int(d_l1[g]) ** 2, 2 * int(d_c[g]) ** 2) for g in guesses}
    if max(bounds.values()) == 0:
        return NOTHING
    lower = max(window.sq_dist_near(gy, gx, b) for (gy, gx), b in bounds.items() if b)
    cand = _candidates(d_c, d_l1, lower)
    k, d2 = _winner(window, cand, lower)
    return Best(d2, y0 - 1 + int(cand.ys[k]), x0 - 1 + int(cand.xs[k]))
