"""``sumseg eval``: load a model and datasets, run the interactive protocols, write the report."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sumseg.config.checker import Checker, refuse_bad
from sumseg.data.dataset import read_dataset
from sumseg.data.images import content_key
from sumseg.data.records import Dataset, SkipReport
from sumseg.errors import ConfigError, DataError
from sumseg.evaluate.interactive import PROTOCOLS, FirstRound, Instance, InstanceResult, evaluate_instances
from sumseg.evaluate.report import REPORT_DIRS, REPORT_FILES, Results, overlay, overlay_name, write_report
from sumseg.models.backbones import Backbone
from sumseg.models.predictor import SumPredictor
from sumseg.models.task_prompts import TASK_ROUNDS, TaskRounds
from sumseg.outputs import output_dir
from sumseg.tasks import TASK_ID_LIMIT

MAX_ROUNDS = 1000
MAX_OVERLAYS = 10_000
EVAL_FLAGS = {"rounds": "--rounds", "limit": "--limit", "task": "--task"}
"""``sumseg eval``'s flag of each number :func:`check_eval_options` checks."""


def check_eval_options(c: Checker, rounds: int, limit: int | None, task: int | str | None, overlays: int = 0,
                       keys: dict[str, str] | None = None) -> None:
    """The ranges of an evaluation's numbers, each problem named by ``keys[name]`` (:data:`EVAL_FLAGS`) or by
    its :class:`EvalSettings` field; ``limit`` None: every instance; ``task`` a str or None: not an id."""
    k = (keys or {}).get
    c.number(k("rounds", "rounds"), rounds, 1, MAX_ROUNDS)
    if limit is not None:
        c.number(k("limit", "limit"), limit, 1, 10**12)
    if isinstance(task, int):
        c.number(k("task", "task"), task, 0, TASK_ID_LIMIT - 1)
    c.number(k("overlays", "overlays"), overlays, 0, MAX_OVERLAYS)

BENCHMARKS_ENV = "SUMSEG_BENCHMARKS"


@dataclass
class EvalSettings:
    """What to run: protocols, rounds, the first-round choice, the task prompt (and its rounds), a subset size."""

    protocols: Sequence[str] = ("clicks",)
    rounds: int = 20
    first_round: FirstRound = "oracle"
    task: int | str | None = None  # an id for every instance, "auto" = each mask's own task, None = no task
    limit: int | None = None  # the first N instances of each dataset
    overlays: int = 4
    skip_bad: bool = False  # skip unreadable items (counted and listed in results.md) instead of failing
    task_rounds: TaskRounds = "every"  # the task prompt in every round (published) or the first only

    def __post_init__(self) -> None:
        refuse_bad(lambda c: check_eval_options(c, self.rounds, self.limit, self.task, self.overlays))
        for p in self.protocols:
            if p not in PROTOCOLS:
                raise ConfigError(f"unknown protocol {p!r}; choose from {', '.join(PROTOCOLS)}")
        if self.task_rounds not in TASK_ROUNDS:
            raise ConfigError(f"task prompt rounds must be one of {', '.join(TASK_ROUNDS)}, not {self.task_rounds!r}")


def default_benchmarks_dir() -> Path:
    """``$SUMSEG_BENCHMARKS``, else ``../shared/benchmarks`` from the working directory."""
    return Path(os.environ.get(BENCHMARKS_ENV, Path.cwd().parent / "shared" / "benchmarks"))


def resolve_datasets(specs: Sequence[str], benchmarks_dir: Path) -> dict[str, Path]:
    """Label → path of each dataset spec; labels are folder/file names and must be distinct."""
    out: dict[str, Path] = {}
    for spec in specs:
        path = resolve_dataset(spec, benchmarks_dir)
        label = path.stem if path.is_file() else path.name
        if label in out:
            raise ConfigError(f"datasets {out[label]} and {path} would both be reported as {label!r}; "
                              "give each a distinct folder or file name")
        out[label] = path
    return out


def resolve_dataset(spec: str, benchmarks_dir: Path) -> Path:
    """A dataset given as a path, or as a name of a folder in ``benchmarks_dir`` (e.g. ``GrabCut``)."""
    path = Path(spec)
    if path.exists():
        return path
    candidate = benchmarks_dir / spec
    if candidate.exists():
        return candidate
    raise ConfigError(f"dataset {spec!r}: neither a path nor a folder in {benchmarks_dir} "
                      f"(set --benchmarks-dir or ${BENCHMARKS_ENV})")


def iter_instances(
    dataset: Dataset, task: int | str | None, limit: int | None, skipped: SkipReport | None = None
) -> Iterator[Instance]:
    """Every (image, mask) of ``dataset`` as an :class:`Instance`; each image is decoded once.

    An unreadable image raises DataError, or with ``skipped`` given is added there and left out.
    A mask that lies wholly inside the image's ignore region (e.g. inside a crowd region) has
    no pixel to score: it is left out and listed in ``dataset.skipped``.
    """
    n = 0
    for rec in dataset.records:
        if not rec.masks:
            continue
        try:
            image, ignore = rec.load_image(), rec.ignore_mask()
            key = content_key(image)  # equal pixels (e.g. Berkeley's a/b objects) share one encoder pass
        except DataError as e:
            if skipped is None:
                raise
            skipped.add(rec.image_path, str(e))
            continue
        for m in rec.masks:
            if limit is not None and n >= limit:
                return
            gt = m.decode()
            if ignore is not None and not (gt & ~ignore).any():
                dataset.skipped.add(rec.source or rec.image_path, f"image {rec.image_id}, instance {m.ann_id}: "
                                    "ground-truth mask lies wholly inside the ignore region (e.g. a crowd "
                                    "region); not evaluated")
                continue
            name = rec.image_id if len(rec.masks) == 1 else f"{rec.image_id}_{m.ann_id}"
            prompt = m.task if task == "auto" else None if task is None else int(task)
            yield Instance(name, key, image, gt, ignore, task=prompt, mask_task=m.task)
            n += 1


def count_instances(dataset: Dataset, limit: int | None) -> int:
    n = dataset.num_masks
    return n if limit is None else min(n, limit)


def evaluate(model: Backbone, datasets: dict[str, Path], settings: EvalSettings, out_dir: Path,
             progress: bool = True) -> tuple[dict, dict[str, int]]:
    """Run every protocol on every dataset and write the report into ``out_dir``.

    ``out_dir`` is checked and locked first (:func:`sumseg.outputs.output_dir`): a folder that
    cannot take the report, is an input, or is in use by another run fails before any work.
    Returns results.json's dict and the number of items skipped per dataset (listed in results.md).
    """
    with output_dir(out_dir, inputs=datasets.values(), files=REPORT_FILES, dirs=REPORT_DIRS):
        results, overlays, skipped = _run(model, datasets, settings, progress)
        data = write_report(out_dir, results, overlays, f"Interactive evaluation: {model.name}", skipped)
    return data, {ds: len(report) for ds, report in skipped.items()}


def _run(model: Backbone, datasets: dict[str, Path], settings: EvalSettings,
         progress: bool) -> tuple[Results, dict[str, np.ndarray], dict[str, SkipReport]]:
    """Per-instance results, overlay images and skip reports of every dataset."""
    predictor = SumPredictor(model)
    results: Results = {}
    overlays: dict[str, np.ndarray] = {}
    skipped: dict[str, SkipReport] = {}
    for ds_name, path in datasets.items():
        dataset = read_dataset(path, skip_bad=settings.skip_bad)
        skipped[ds_name] = dataset.skipped
        total = count_instances(dataset, settings.limit)
        picked = set(np.linspace(0, total - 1, num=min(settings.overlays, total)).round().astype(int).tolist())
        by_proto: dict[str, list[InstanceResult]] = {p: [] for p in settings.protocols}
        results[ds_name] = by_proto
        instances = iter_instances(dataset, settings.task, settings.limit,
                                   dataset.skipped if settings.skip_bad else None)
        pairs = evaluate_instances(predictor, instances, settings.protocols,  # type: ignore[arg-type]
                                   settings.rounds, settings.first_round, settings.task_rounds)
        for i, (inst, per_proto) in enumerate(tqdm(pairs, total=total, desc=ds_name, disable=not progress,
                                                   unit="inst")):
            for proto, res in per_proto.items():
                if i in picked:
                    overlays[overlay_name(ds_name, proto, inst.name)] = overlay(inst, res)
                res.final_pred = None  # full-size masks are kept only as long as an overlay needs them
                by_proto[proto].append(res)
        if not by_proto[settings.protocols[0]]:
            raise DataError(f"{path}: no instances to evaluate (no masks"
                            f"{f'; {len(dataset.skipped)} item(s) skipped' if len(dataset.skipped) else ''})")
    return results, overlays, skipped
