"""Evaluation reports: ``results.json``, ``results.md`` tables, an IoU-vs-clicks plot, overlays.

``results.json`` = ``{dataset: {protocol: {"miou": [per round], "biou": [per round],
"noc85": x, "noc90": x, "n": count}}}`` (boundary-IoU NaNs are left out of the means; the
counts left out are in ``results.md``). ``instances.json`` = ``{dataset: {protocol: {"names": [...],
"iou": [[per round] per instance], "biou": [...] (null where both boundaries are empty)}}}``: the
per-instance curves behind the means, in instance order (for paired comparisons of two models).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np

from sumseg.atomic import atomic_path, write_json
from sumseg.data.records import SkipReport
from sumseg.evaluate.interactive import Instance, InstanceResult
from sumseg.metrics.interactive import InteractiveSummary, summarize
from sumseg.outputs import OutputError

Results = dict[str, dict[str, list[InstanceResult]]]
"""dataset → protocol → per-instance results."""

REPORT_FILES: tuple[str, ...] = ("results.json", "results.md", "iou_vs_clicks.png", "instances.json")
REPORT_DIRS: tuple[str, ...] = ("overlays",)  # its PNGs from an earlier run are removed


def summaries(results: Results, max_clicks: int = 20) -> dict[str, dict[str, InteractiveSummary]]:
    return {
        ds: {proto: summarize([r.ious for r in rs], [r.bious for r in rs], (0.85, 0.90), max_clicks)
             for proto, rs in by_proto.items()}
        for ds, by_proto in results.items()
    }


def _num(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 6)


def results_json(summ: dict[str, dict[str, InteractiveSummary]]) -> dict:
    return {
        ds: {
            proto: {
                "miou": [_num(v) for v in s.miou],
                "biou": [_num(v) for v in s.biou],
                "noc85": _num(s.noc[0.85]),
                "noc90": _num(s.noc[0.90]),
                "n": s.n,
            }
            for proto, s in by_proto.items()
        }
        for ds, by_proto in summ.items()
    }


def instances_json(results: Results) -> dict:
    """Per-instance IoU and boundary-IoU curves (rounded to 1e-6; NaN as null) of every dataset × protocol."""
    return {ds: {proto: {"names": [r.name for r in rs],
                         "iou": [[_num(v) for v in r.ious] for r in rs],
                         "biou": [[_num(v) for v in r.bious] for r in rs]}
                 for proto, rs in by_proto.items()}
            for ds, by_proto in results.items()}


def _fmt(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3f}"


def results_markdown(
    results: Results, summ: dict[str, dict[str, InteractiveSummary]], title: str,
    rounds_shown: tuple[int, ...] = (1, 3, 5, 10, 20),
) -> str:
    """Tables: one row per dataset × protocol (``summ``), and per mask task where a dataset mixes tasks."""
    lines = [f"# {title}", ""]
    ks = [k for k in rounds_shown if any(len(s.miou) >= k for d in summ.values() for s in d.values())]
    head = "| dataset | protocol | task | n | NoC@85 | NoC@90 | fail@90 | " + " | ".join(
        f"mIoU@{k}" for k in ks) + " | " + " | ".join(f"bIoU@{k}" for k in ks) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for ds, by_proto in results.items():
        for proto, rs in by_proto.items():
            tasks = sorted({r.mask_task for r in rs if r.mask_task is not None})
            groups = [("all", summ[ds][proto])]
            if len(tasks) > 1:
                groups += [(str(t), summarize([r.ious for r in rs if r.mask_task == t],
                                              [r.bious for r in rs if r.mask_task == t])) for t in tasks]
            for task, s in groups:
                miou = [_fmt(s.miou[k - 1]) if k <= len(s.miou) else "" for k in ks]
                biou = [_fmt(s.biou[k - 1]) if k <= len(s.biou) else "" for k in ks]
                lines.append(f"| {ds} | {proto} | {task} | {s.n} | {s.noc[0.85]:.2f} | {s.noc[0.90]:.2f} | "
                             f"{'–' if s.failures[0.90] is None else s.failures[0.90]} | " + " | ".join(miou)
                             + " | " + " | ".join(biou) + " |")
    nan_notes = [f"{ds}/{proto}: {max(s.biou_nan, default=0)}" for ds, d in summ.items() for proto, s in d.items()
                 if max(s.biou_nan, default=0)]
    rounds = max((len(s.miou) for d in summ.values() for s in d.values()), default=0)
    lines += ["", f"{rounds} rounds per instance. NoC: clicks to reach the IoU (20 when not reached within "
              "20 clicks; defined on runs of at least 20 rounds, – otherwise); fail@90: instances that never reach "
              "0.90 within 20 clicks. bIoU: boundary IoU (width 2% of the image diagonal)."]
    if nan_notes:
        lines.append("Instances left out of bIoU means (both boundaries empty), most in one round: "
                     + ", ".join(nan_notes))
    return "\n".join(lines) + "\n"


def plot_curves(summ: dict[str, dict[str, InteractiveSummary]], path: Path) -> None:
    """mIoU (solid) and boundary IoU (dashed) against the number of clicks, one line per dataset/protocol."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.2), dpi=110)  # no pyplot: the caller's backend stays as it is
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for ds, by_proto in summ.items():
        for proto, s in by_proto.items():
            x = np.arange(1, len(s.miou) + 1)
            (line,) = ax.plot(x, s.miou, marker="o", ms=3, label=f"{ds} / {proto} mIoU")
            if s.biou:
                ax.plot(x, s.biou, ls="--", color=line.get_color(), label=f"{ds} / {proto} bIoU")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("clicks (round)")
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def overlay(inst: Instance, res: InstanceResult) -> np.ndarray:
    """(H, W, 3) uint8 BGR: the image, GT outline (green), final prediction (red tint), clicks numbered."""
    img = cv2.cvtColor(inst.image, cv2.COLOR_RGB2BGR).astype(np.float32)
    if res.final_pred is not None:
        img[res.final_pred] = 0.55 * img[res.final_pred] + 0.45 * np.array([40, 40, 230], np.float32)
    out = img.astype(np.uint8)
    contours, _ = cv2.findContours(inst.gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (60, 220, 60), 1)
    if res.box is not None:
        cv2.rectangle(out, res.box[:2], res.box[2:], (255, 200, 0), 1)
    r = max(3, round(0.012 * max(out.shape[:2])))
    for i, c in enumerate(res.clicks):
        color = (0, 200, 0) if c.is_positive else (0, 0, 230)
        cv2.circle(out, (c.x, c.y), r, color, -1)
        cv2.circle(out, (c.x, c.y), r, (255, 255, 255), 1)
        cv2.putText(out, str(i + 1), (c.x + r, c.y - r), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
    iou_txt = f"{res.name}: IoU {res.ious[-1]:.3f} after {len(res.ious)} rounds"
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 9 * len(iou_txt)), 20), (0, 0, 0), -1)
    cv2.putText(out, iou_txt, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


def overlay_name(dataset: str, protocol: str, instance: str) -> str:
    """File stem of an overlay image: ``<dataset>_<protocol>_<instance>`` with unsafe characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset}_{protocol}_{instance}")


def skipped_markdown(skipped: dict[str, SkipReport]) -> str:
    """A section listing every skipped item per dataset (empty when nothing was skipped)."""
    if not any(len(r) for r in skipped.values()):
        return ""
    lines = ["", "## Skipped items", ""]
    for ds, report in skipped.items():
        lines += [f"- {ds}: {len(report)} skipped"] + [f"  - `{path}`: {reason}" for path, reason in report]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, results: Results, overlays: dict[str, np.ndarray], title: str,
                 skipped: dict[str, SkipReport] | None = None) -> dict:
    """Write results.json, results.md, iou_vs_clicks.png and ``overlays/<name>.png``; return the JSON dict.

    Overlay PNGs of an earlier run in ``overlays/`` are removed, so the folder shows this run only.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summ = summaries(results)
    data = results_json(summ)
    write_json(out_dir / "results.json", data, indent=2)
    write_json(out_dir / "instances.json", instances_json(results))
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(results_markdown(results, summ, title) + skipped_markdown(skipped or {}))
    plot_curves(summ, out_dir / "iou_vs_clicks.png")
    folder = out_dir / "overlays"
    folder.mkdir(exist_ok=True)
    for stale in set(folder.glob("*.png")) - {folder / f"{name}.png" for name in overlays}:
        stale.unlink()
    for name, image in overlays.items():
        if not cv2.imwrite(str(folder / f"{name}.png"), image):
            raise OutputError(f"{folder / name}.png: OpenCV could not write the overlay")
    return data
