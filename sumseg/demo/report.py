"""The demo's report: ``report.json`` (every number), ``report.md`` (tables, figures, the claims checked).

``report.json`` = ``{method: {test_set: {protocol: {"miou": [per round], "biou": [per round],
"noc85", "noc90", "n"}}}}``: methods ``foundation`` and each fine-tuning method (the mean over its
seeds), test sets one per labelled task (``salient``, ``part``: the task's test split) and
``general``, protocols ``clicks`` and ``box`` with the oracle first round (best of three outputs
against the ground truth) and ``clicks_score`` and ``box_score`` with the score first round (the
highest predicted IoU), as the settings ask. ``runs.json`` holds the same per fine-tuning run
(``<method>-s<seed>``); ``claims.json`` the claims with their bootstrap intervals.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sumseg.atomic import atomic_path, write_json
from sumseg.demo import report_md
from sumseg.demo.claims import claims_table
from sumseg.demo.plots import plot_forgetting, plot_iou_curves
from sumseg.demo.settings import FOUNDATION, DemoSettings

if TYPE_CHECKING:
    from sumseg.demo.context import Ctx
    from sumseg.demo.jobs import Timings

REPORT_FILES = ("report.md", "report.json", "runs.json", "claims.json")
FIGURES = {"iou_oracle": "figures/iou-vs-clicks-oracle.png", "iou_score": "figures/iou-vs-clicks-score.png",
           "forgetting": "figures/forgetting.png"}


def protocol_key(protocol: str, first_round: str) -> str:
    """``clicks`` / ``box`` for the oracle first round, ``clicks_score`` / ``box_score`` for the score one."""
    return protocol if first_round == "oracle" else f"{protocol}_{first_round}"


def model_results(eval_dir: Path, settings: DemoSettings, name: str = "results.json") -> dict[str, dict[str, dict]]:
    """``{test_set: {protocol key: summary}}`` of one model from its ``eval/<model>/<first round>/`` folders
    (``name="instances.json"``: the per-instance curves instead of the summaries)."""
    out: dict[str, dict[str, dict]] = {s: {} for s in settings.test_sets}
    for first in settings.first_rounds:
        data = json.loads((eval_dir / first / name).read_text())
        for test_set in settings.test_sets:
            for proto in settings.protocols:
                out[test_set][protocol_key(proto, first)] = data[test_set][proto]
    return out


def instance_curves(ctx: Ctx, key: str) -> dict[str, dict[str, np.ndarray]]:
    """model → test set → (seeds, instances, rounds) IoU curves of protocol ``key`` (for the intervals)."""
    def curves(model: str) -> dict[str, list]:
        data = model_results(ctx.out / "eval" / model, ctx.settings, "instances.json")
        return {s: data[s][key]["iou"] for s in ctx.settings.test_sets}

    out = {FOUNDATION: {s: np.array([c]) for s, c in curves(FOUNDATION).items()}}
    for method in ctx.settings.methods:
        per_seed = [curves(f"{method}-s{seed}") for seed in range(ctx.settings.seeds)]
        out[method] = {s: np.array([p[s] for p in per_seed], dtype=float) for s in ctx.settings.test_sets}
    return out


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return round(float(np.mean(kept)), 6) if kept else None


def mean_over_runs(runs: list[dict]) -> dict:
    """One summary per test set × protocol key: per-round means over runs (seeds), NoC means, n of the first."""
    out: dict = {}
    for test_set, by_key in runs[0].items():
        out[test_set] = {}
        for key, first in by_key.items():
            rows = [r[test_set][key] for r in runs]
            out[test_set][key] = {
                "miou": [_mean([r["miou"][i] for r in rows]) for i in range(len(first["miou"]))],
                "biou": [_mean([r["biou"][i] for r in rows]) for i in range(len(first["biou"]))],
                "noc85": _mean([r["noc85"] for r in rows]), "noc90": _mean([r["noc90"] for r in rows]),
                "n": first["n"]}
    return out


def collect(ctx: Ctx) -> tuple[dict, dict]:
    """(report.json's dict, runs.json's dict) from the evaluation folders."""
    runs = {f"{m}-s{s}": model_results(ctx.out / "eval" / f"{m}-s{s}", ctx.settings) for m, s in ctx.settings.runs()}
    report = {FOUNDATION: model_results(ctx.out / "eval" / FOUNDATION, ctx.settings)}
    for method in ctx.settings.methods:
        report[method] = mean_over_runs([runs[f"{method}-s{s}"] for s in range(ctx.settings.seeds)])
    return report, runs


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_report(ctx: Ctx, timings: Timings) -> dict:
    """Write report.json, runs.json, the figures and report.md into ``ctx.out``; return report.json's dict."""
    report, runs = collect(ctx)
    s = ctx.settings
    key = s.protocol_keys[0]
    claims = claims_table(instance_curves(ctx, key), s.methods, s.task_sets, s.test_sets)
    write_json(ctx.out / "report.json", report, indent=1)
    write_json(ctx.out / "runs.json", runs, indent=1)
    write_json(ctx.out / "claims.json", {"protocol": key, "seeds": s.seeds, "claims": claims}, indent=1)
    (ctx.out / "figures").mkdir(exist_ok=True)
    figures = {}
    for first in s.first_rounds:
        title = ("first round: oracle (best of 3 vs ground truth)" if first == "oracle"
                 else "first round: score (highest predicted IoU)")
        figures[f"iou_{first}"] = FIGURES[f"iou_{first}"]
        plot_iou_curves(report, s, "" if first == "oracle" else f"_{first}", title, ctx.out / FIGURES[f"iou_{first}"])
    figures["forgetting"] = FIGURES["forgetting"]
    plot_forgetting(report, s.protocol_keys, ctx.out / FIGURES["forgetting"])
    _write(ctx.out / "report.md", report_md.markdown(ctx, report, runs, timings, figures, claims))
    return report
