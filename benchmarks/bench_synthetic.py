"""Synthetic world: 1,000 images of 256² written by a process pool vs the same writer in one process.

Both write PNGs + COCO ``annotations.json`` into fresh folders; ``identical`` requires every
file to be byte-equal (each image is seeded from (seed, split, index) alone).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.run import BenchRow
from sumseg.data.synthetic_world import SPLITS, write_world

IMAGES = 1000
SIZES = {split: 0 for split in SPLITS} | {"pretrain": IMAGES}


def _write(out: Path, workers: int) -> tuple[float, dict[str, bytes]]:
    start = time.perf_counter()
    write_world(out, seed=0, sizes=SIZES, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    return seconds, {
        p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }


def bench() -> list[BenchRow]:
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        ours_s, ours = _write(Path(tmp) / "pool", workers)
        ref_s, ref = _write(Path(tmp) / "serial", 1)
    return [
        BenchRow(
            f"synthetic world, {IMAGES} images of 256² (PNG + RLE + COCO json)",
            ours_s,
            ref_s,
            ours == ref,
            f"whole run; {IMAGES / ours_s:.0f} img/s with {workers} processes; reference = 1 process",
        )
    ]
