"""Where a demo run keeps everything, and the checks that let it resume safely.

Folder layout under ``DIR`` (each stage resumes from what its folder holds, so a killed demo
rerun with the same settings continues where it stopped): ``world/``, ``cache/`` (embeddings of
the foundation's encoder for the pseudo-labels and the U maps), ``pseudo_labels/`` (store, U maps,
overlays), ``refiner/``, ``runs/<method>-s<seed>/``, ``eval/<model>/<first round>/``,
``eval/real/<model>/``, ``stats.json``, ``settings.json``, then the report files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sumseg.atomic import write_json
from sumseg.demo.settings import FOUNDATION, GENERAL_SET, DemoSettings
from sumseg.errors import ConfigError
from sumseg.tasks import TASK_NAMES
from sumseg.tensor_files import file_digest

FREE = ("seeds", "methods")  # settings a rerun may change: each run's results do not depend on them
EVAL_DONE = "model.json"  # beside results.json: the digest of the checkpoint that was evaluated


@dataclass(frozen=True)
class Ctx:
    """Where everything of one demo run lives, and its settings (picklable: handed to worker processes)."""

    out: Path
    foundation: Path
    settings: DemoSettings
    benchmarks: Path | None = None  # folder with GrabCut/ and Berkeley/ (RITM layout), None = none found

    @property
    def world(self) -> Path:
        return self.out / "world"

    @property
    def store(self) -> Path:
        return self.out / "pseudo_labels"

    @property
    def true_u_store(self) -> Path:
        """A copy of the store with the true U maps (``sum_true_u``); beside ``store``, as its images are."""
        return self.out / "pseudo_labels_true_u"

    @property
    def cache(self) -> Path:
        return self.out / "cache"

    @property
    def refiner(self) -> Path:
        return self.out / "refiner"

    def run_dir(self, method: str, seed: int) -> Path:
        return self.out / "runs" / f"{method}-s{seed}"

    def checkpoint(self, model: str) -> Path:
        """``foundation`` or ``<method>-s<seed>`` → its weights."""
        return self.foundation if model == FOUNDATION else self.out / "runs" / model / "last.ckpt"

    def test_sets(self) -> dict[str, Path]:
        """Test set name → its folder: one per labelled task, then the general set."""
        sets = {TASK_NAMES[t]: self.world / f"task{t}_test" for t in self.settings.tasks}
        return sets | {GENERAL_SET: self.world / "general_test"}

    def labelled_sets(self) -> dict[int, Path]:
        """Labelled task id → its training split."""
        return {t: self.world / f"task{t}_train" for t in self.settings.tasks}


def check_settings(ctx: Ctx) -> None:
    """Write ``settings.json``, or check that the run in ``ctx.out`` was made with the same settings
    and foundation (other seeds or methods may be asked: they only add or leave out runs)."""
    now = {"settings": json.loads(json.dumps(ctx.settings.to_dict())), "foundation": str(ctx.foundation),
           "foundation_digest": file_digest(ctx.foundation)}
    path = ctx.out / "settings.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable ({e}); delete it or choose another --out") from None
        free = {k: now["settings"][k] for k in FREE}
        old_settings = {**old.get("settings", {}), **free}
        if old_settings != now["settings"] or old.get("foundation_digest") != now["foundation_digest"]:
            what = "foundation" if old_settings == now["settings"] else "settings (--quick or the demo's version)"
            raise ConfigError(f"{path}: this demo folder was made with another {what}; choose another --out "
                              "or delete the folder")
    write_json(path, now, indent=1)


def eval_is_current(folder: Path, checkpoint: Path) -> bool:
    """Whether ``folder`` holds results of exactly this checkpoint (a retrained model is evaluated again)."""
    try:
        done = json.loads((folder / EVAL_DONE).read_text())
    except (OSError, ValueError):
        return False
    return (folder / "results.json").is_file() and done.get("digest") == file_digest(checkpoint)


def mark_evaluated(folder: Path, checkpoint: Path) -> None:
    write_json(folder / EVAL_DONE, {"checkpoint": str(checkpoint), "digest": file_digest(checkpoint)})
