"""`make bench`: run every ``benchmarks/bench_*.py`` and print one table.

Each module exposes ``bench() -> list[BenchRow]``: our implementation and a straightforward
reference timed in the same run on the same input, plus whether their results are identical.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class BenchRow:
    """One measured comparison: seconds per call of ours vs the reference."""

    name: str
    ours_s: float
    reference_s: float
    identical: bool
    note: str = ""

    @property
    def speedup(self) -> float:
        return self.reference_s / self.ours_s if self.ours_s > 0 else float("inf")


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, " \
        f"Python {platform.python_version()}, torch {torch.__version__}"


def main(only: list[str]) -> int:
    rows: list[BenchRow] = []
    pkg_dir = Path(__file__).parent
    for mod in sorted(m.name for m in pkgutil.iter_modules([str(pkg_dir)]) if m.name.startswith("bench_")):
        if only and not any(o in mod for o in only):
            continue
        print(f"running {mod} ...", file=sys.stderr, flush=True)
        rows.extend(importlib.import_module(f"benchmarks.{mod}").bench())
    print(f"machine: {machine()}\n")
    print("| benchmark | ours (s) | reference (s) | speed-up | identical | note |")
    print("|---|---:|---:|---:|:---:|---|")
    for r in rows:
        print(f"| {r.name} | {r.ours_s:.4f} | {r.reference_s:.4f} | {r.speedup:.1f}× | "
              f"{'yes' if r.identical else 'NO'} | {r.note} |")
    return 0 if all(r.identical for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
