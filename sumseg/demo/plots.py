"""The demo report's figures: IoU against clicks per method, and the forgetting chart (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sumseg.atomic import atomic_path
from sumseg.demo.settings import FOUNDATION, GENERAL_SET, DemoSettings

Report = dict[str, dict[str, dict[str, dict]]]  # method → test set → protocol key → summary


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib's Figure, imported lazily
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)  # no pyplot: the caller's backend stays as it is
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:  # noqa: ANN001
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_iou_curves(report: Report, settings: DemoSettings, suffix: str, title: str, path: Path) -> None:
    """mIoU against clicks: one panel per test set × protocol, one line per method (protocol key + ``suffix``)."""
    from matplotlib.ticker import MaxNLocator

    sets, protocols = settings.test_sets, settings.protocols
    fig = _figure(4.5 * len(protocols) + 1, 3.0 * len(sets) + 0.4)
    axes = fig.subplots(len(sets), len(protocols), squeeze=False)
    for r, test_set in enumerate(sets):
        for c, proto in enumerate(protocols):
            ax = axes[r][c]
            for method, by_set in report.items():
                miou = by_set[test_set][proto + suffix]["miou"]
                x = np.arange(1, len(miou) + 1)
                ax.plot(x, [np.nan if v is None else v for v in miou], marker="o", ms=3, label=method,
                        ls="--" if method == FOUNDATION else "-", color="black" if method == FOUNDATION else None)
            ax.set_title(f"{test_set} set, {proto} protocol", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("round (clicks)")
            ax.set_ylabel("mIoU")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def forgetting(report: Report, key: str, k: int) -> dict[str, float]:
    """General-set mIoU@k of each fine-tuned method minus the foundation's (protocol key ``key``)."""
    base = report[FOUNDATION][GENERAL_SET][key]["miou"][k - 1]
    return {m: sets[GENERAL_SET][key]["miou"][k - 1] - base for m, sets in report.items() if m != FOUNDATION}


def plot_forgetting(report: Report, keys: list[str], path: Path) -> None:
    """Grouped bars: general-set mIoU@1 change vs the foundation, per method and protocol key."""
    fig = _figure(8.0, 3.8)
    ax = fig.add_subplot()
    methods = [m for m in report if m != FOUNDATION]
    width = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        delta = forgetting(report, key, 1)
        xs = np.arange(len(methods)) + (j - (len(keys) - 1) / 2) * width
        ax.bar(xs, [100 * delta[m] for m in methods], width, label=key)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(methods)), methods, fontsize=8)
    ax.set_ylabel("general set: mIoU@1 change vs foundation (points)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
