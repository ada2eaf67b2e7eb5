"""``sumseg demo``: the whole method on built-in data, as a graph of stages (docs/demo.md).

world → pseudo-labels (unlabelled split) ‖ refiner (the task's labelled split) → uncertainty →
fine-tuning from the foundation with each method and seed (vanilla needs only the world, so it
starts at once) → interactive evaluation of every model, the foundation included, on the task's
and the general test set with both first-round rules → pseudo-label statistics against the
synthetic ground truth → GrabCut and Berkeley when present → ``report.md`` / ``report.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sumseg.config import refuse_bad
from sumseg.demo import stages
from sumseg.demo.context import Ctx, check_settings
from sumseg.demo.jobs import Done, Job, Timings, run_jobs
from sumseg.demo.report import REPORT_FILES, write_report
from sumseg.demo.settings import FOUNDATION, TRUE_U, DemoSettings, check_demo_options
from sumseg.outputs import output_dir

NEEDS = {"vanilla": (), "self_training": ("pseudo-labels",), "sum": ("uncertainty",),
         "sum_no_task": ("uncertainty",), "refined_labels": ("pseudo-labels", "refiner"),
         TRUE_U: ("true uncertainty",)}
"""Stages each method's fine-tuning waits for."""
REAL_SETS = ("GrabCut", "Berkeley")
OUT_DIRS = ("world", "cache", "pseudo_labels", "pseudo_labels_true_u", "refiner", "runs", "eval", "export", "figures")


@dataclass
class DemoResult:
    """The report's data (report.json's dict) and where the report is."""

    report: dict
    report_md: Path
    timings: Timings


def default_foundation() -> Path:
    """The shipped ``tiny_foundation`` weights."""
    from sumseg.model_names import PRETRAINED

    return PRETRAINED["tiny_foundation"]


def real_benchmarks(folder: Path | None, settings: DemoSettings) -> Path | None:
    """``folder`` when it holds GrabCut or Berkeley and the settings ask for them, else None."""
    if folder is None or settings.real_limit is None:
        return None
    return folder if any((folder / name).is_dir() for name in REAL_SETS) else None


def build_jobs(ctx: Ctx) -> list[Job]:
    """Every stage after the world, each listed after what it needs; longer jobs first among equals."""
    s = ctx.settings
    jobs = [Job("pseudo-labels", stages.pseudo_labels, (ctx,)), Job("refiner", stages.refiner, (ctx,))]
    trains = [Job(f"train {m}-s{seed}", stages.finetune, (ctx, m, seed), NEEDS[m]) for m, seed in s.runs()]
    jobs += [j for j in trains if not j.after]  # vanilla: needs nothing, runs while pseudo-labels are made
    jobs.append(Job("uncertainty", stages.uncertainty, (ctx,), ("pseudo-labels", "refiner")))
    if TRUE_U in s.methods:
        jobs.append(Job("true uncertainty", stages.true_uncertainty, (ctx,), ("pseudo-labels",)))
    jobs += [j for j in trains if j.after]
    jobs.append(Job("pseudo-label stats", stages.pseudo_label_stats, (ctx,), ("uncertainty",)))
    jobs.append(Job(f"eval {FOUNDATION}", stages.evaluate_model, (ctx, FOUNDATION)))
    jobs += [Job(f"eval {m}-s{seed}", stages.evaluate_model, (ctx, f"{m}-s{seed}"), (f"train {m}-s{seed}",))
             for m, seed in s.runs()]
    tuned = f"{'sum' if 'sum' in s.methods else s.methods[0]}-s0"
    jobs.append(Job(f"export {tuned}", stages.export, (ctx, tuned), (f"train {tuned}",)))
    if ctx.benchmarks is not None:
        jobs.append(Job("eval real benchmarks", stages.evaluate_real, (ctx, (FOUNDATION, tuned)), (f"train {tuned}",)))
    return jobs


def progress_line(done: Done, k: int, n: int) -> str:
    cpu = "   –  " if math.isnan(done.cpu) else f"{done.cpu:6.1f}"
    return f"[{k:>2}/{n}] {done.name:<26} {done.wall:6.1f} s (CPU {cpu} s)  {done.summary}"


def run_demo(out: Path, settings: DemoSettings, foundation: Path | None = None, workers: int = 2,
             benchmarks: Path | None = None, echo: Callable[[str], None] = print) -> DemoResult:
    """Run (or resume) the demo into ``out`` and write its report; ``echo`` gets one line per stage.

    ``foundation``: a sumseg checkpoint of the tiny model (default: the shipped ``tiny_foundation``).
    ``workers``: processes for the stages (0 = all in this process). ``benchmarks``: a folder with
    GrabCut/Berkeley in the RITM layout (skipped with a note when absent).
    """
    from sumseg.data.synthetic_world import SPLITS, write_world
    from sumseg.errors import CheckpointError

    refuse_bad(lambda c: check_demo_options(c, settings.seeds, workers, settings.world_seed, shift=settings.shift))
    foundation = Path(foundation) if foundation is not None else default_foundation()
    if not foundation.is_file():
        raise CheckpointError(f"{foundation}: foundation checkpoint not found (give one with --foundation)")
    with output_dir(out, inputs=[foundation], files=[*REPORT_FILES, "settings.json", "stats.json"],
                    dirs=OUT_DIRS, label="--out"):
        ctx = Ctx(Path(out), foundation, settings, real_benchmarks(benchmarks, settings))
        check_settings(ctx)
        wall = time.perf_counter()
        sizes = {split: settings.world_sizes.get(split, 0) for split in SPLITS}
        write_world(ctx.world, seed=settings.world_seed, sizes=sizes, workers=max(1, workers), progress=False,
                    shift=settings.shift)
        world = Done("world", f"{sum(sizes.values())} images (seed {settings.world_seed})",
                     time.perf_counter() - wall, math.nan)  # written by its own processes
        jobs = build_jobs(ctx)
        echo(progress_line(world, 0, len(jobs)))
        timings = run_jobs(jobs, workers, lambda d, k, n: echo(progress_line(d, k, n)))
        timings.done.insert(0, world)
        timings.wall += world.wall
        report = write_report(ctx, timings)
    return DemoResult(report, ctx.out / "report.md", timings)
