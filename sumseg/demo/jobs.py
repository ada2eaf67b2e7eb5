"""A small job graph for the demo: stages run as soon as the stages they need are done.

Each job is a top-level function (picklable) with picklable arguments that returns a one-line
summary. With ``workers`` ≥ 1 the jobs run in that many worker processes with one torch thread
each (on a 2-core machine, two 1-thread processes beat one 2-thread process, and independent
stages such as the refiner and the pseudo-labels overlap); ``workers=0`` runs them one after the
other in this process (what the tests use). A job that raises stops the run: the jobs not
started are cancelled, and the error is raised here.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from sumseg.errors import ConfigError


@dataclass
class Job:
    """``fn(*args)`` once every job named in ``after`` has finished; ``fn`` returns a summary line."""

    name: str
    fn: Callable[..., str]
    args: tuple[Any, ...] = ()
    after: tuple[str, ...] = ()


@dataclass
class Done:
    """A finished job: its summary line, wall-clock and CPU seconds (of the process that ran it)."""

    name: str
    summary: str
    wall: float
    cpu: float


@dataclass
class Timings:
    """Every finished job in finishing order, and the wall-clock time of the whole graph."""

    done: list[Done] = field(default_factory=list)
    wall: float = 0.0


def _init_worker() -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def timed(name: str, fn: Callable[..., str], args: tuple[Any, ...]) -> Done:
    """Run ``fn(*args)`` and time it (wall clock and this process's CPU time)."""
    wall, cpu = time.perf_counter(), time.process_time()
    summary = fn(*args)
    return Done(name, summary, time.perf_counter() - wall, time.process_time() - cpu)


def _check(jobs: list[Job]) -> None:
    names = [j.name for j in jobs]
    for i, job in enumerate(jobs):
        missing = [a for a in job.after if a not in names[:i]]
        if missing or job.name in names[:i]:
            raise ConfigError(f"demo job {job.name!r}: needs {missing} listed before it, and a unique name")


def run_jobs(jobs: list[Job], workers: int, echo: Callable[[Done, int, int], None]) -> Timings:
    """Run the graph; ``echo(done, k, n)`` is called as the k-th of n jobs finishes.

    Jobs must be listed after the jobs they need; among the jobs that can start, the one listed
    first starts first.
    """
    _check(jobs)
    out = Timings()
    start = time.perf_counter()
    if workers == 0:
        for job in jobs:
            out.done.append(timed(job.name, job.fn, job.args))
            echo(out.done[-1], len(out.done), len(jobs))
    else:
        _run_pool(jobs, workers, out, echo)
    out.wall = time.perf_counter() - start
    return out


def _run_pool(jobs: list[Job], workers: int, out: Timings, echo: Callable[[Done, int, int], None]) -> None:
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    pending = list(jobs)
    finished: set[str] = set()
    running: dict[Future[Done], Job] = {}
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        try:
            while pending or running:
                for job in [j for j in pending if finished.issuperset(j.after)]:
                    if len(running) >= workers:
                        break
                    running[pool.submit(timed, job.name, job.fn, job.args)] = job
                    pending.remove(job)
                ready, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in ready:
                    running.pop(fut)
                    out.done.append(fut.result())  # a job's error is raised here
                    finished.add(out.done[-1].name)
                    echo(out.done[-1], len(out.done), len(jobs))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
