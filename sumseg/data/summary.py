"""``sumseg data inspect``: counts per split and task, a mask-size histogram, the problems found."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sumseg.data.dataset import read_dataset
from sumseg.data.records import Dataset
from sumseg.errors import DataError
from sumseg.tasks import TASK_NAMES

# mask area as a fraction of its image: upper bin edges (the last bin is open)
AREA_BINS: tuple[float, ...] = (0.001, 0.01, 0.05, 0.2, 0.5)
AREA_LABELS: tuple[str, ...] = ("< 0.1 %", "0.1–1 %", "1–5 %", "5–20 %", "20–50 %", ">= 50 %")


@dataclass
class DatasetSummary:
    """What ``data inspect`` reports about one dataset."""

    path: Path
    format: str
    images: Counter = field(default_factory=Counter)  # split → images
    masks: Counter = field(default_factory=Counter)  # (split, task) → masks
    with_ignore: int = 0
    area_hist: Counter = field(default_factory=Counter)  # (task, bin index) → masks
    problems: list[tuple[Path, str]] = field(default_factory=list)


def _bin(fraction: float) -> int:
    return next((i for i, edge in enumerate(AREA_BINS) if fraction < edge), len(AREA_BINS))


def summarize(ds: Dataset, decode: bool = False) -> DatasetSummary:
    """Count a read dataset; ``decode`` also decodes every image and lists the unreadable ones."""
    s = DatasetSummary(ds.root, ds.format, problems=list(ds.skipped))
    for rec in ds.records:
        s.images[rec.split] += 1
        s.with_ignore += rec.ignore is not None
        total = rec.height * rec.width
        for m in rec.masks:
            s.masks[(rec.split, m.task)] += 1
            s.area_hist[(m.task, _bin(m.area / total))] += 1
        if decode:
            try:
                rec.load_image()
            except DataError as e:
                s.problems.append((rec.image_path, str(e)))
    return s


def inspect_dataset(path: str | Path, decode: bool = False, skip_bad: bool = True) -> DatasetSummary:
    """Read ``path`` (any format :func:`read_dataset` detects) and summarise it."""
    return summarize(read_dataset(path, skip_bad=skip_bad), decode=decode)


def _task_name(t: int) -> str:
    return f"{t} {TASK_NAMES.get(t, '')}".strip()


def format_summary(s: DatasetSummary) -> str:
    """Plain-text tables of a summary."""
    tasks = sorted({t for _, t in s.masks})
    lines = [
        f"{s.path}: format {s.format}, {sum(s.images.values())} images, "
        f"{sum(s.masks.values())} masks, {s.with_ignore} with an ignore map",
        "",
    ]
    head = ["split", "images"] + [f"task {_task_name(t)}" for t in tasks]
    rows = [
        [split, str(n)] + [str(s.masks[(split, t)]) for t in tasks] for split, n in sorted(s.images.items())
    ]
    lines += _table(head, rows)
    if tasks:
        lines += ["", "mask area / image area"]
        hist = [[label] + [str(s.area_hist[(t, b)]) for t in tasks] for b, label in enumerate(AREA_LABELS)]
        lines += _table(["area"] + [f"task {_task_name(t)}" for t in tasks], hist)
    lines += ["", f"problems: {len(s.problems)}"]
    lines += [f"  {reason}" for _, reason in s.problems]
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
