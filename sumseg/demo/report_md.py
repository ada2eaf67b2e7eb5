"""``report.md``: the claims checked with their numbers, the main tables, figures, pseudo-label
statistics, uncertainty examples, the real benchmarks and the stage times."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import numpy as np

from sumseg.demo.claims import SEED_MARGIN
from sumseg.demo.settings import FOUNDATION, TRUE_U, DemoSettings
from sumseg.tasks import TASK_NAMES

if TYPE_CHECKING:
    from sumseg.demo.context import Ctx
    from sumseg.demo.jobs import Timings

def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def cell(report: dict, runs: dict, method: str, test_set: str, key: str, k: int, metric: str = "miou") -> str:
    """mIoU@k (or bIoU@k) in %, with ± the standard deviation over seeds when a method ran with several."""
    v = report[method][test_set][key][metric][k - 1]
    seeds = [r for name, r in runs.items() if name.rsplit("-s", 1)[0] == method]
    if len(seeds) < 2 or v is None:
        return pct(v)
    return f"{pct(v)} ± {100 * float(np.std([r[test_set][key][metric][k - 1] for r in seeds], ddof=1)):.1f}"


def _noc(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


VERDICT = {"holds": "**holds**", "fails": "fails", "unresolved": "unresolved"}


def claims_lines(claims: list[dict], seeds: int, key: str) -> list[str]:
    """The claim table: statistic, clicks, estimate and 95 % interval in mIoU points, bound, verdict (and,
    with one seed, whether the verdict needs ``--seeds 3``)."""
    one = seeds == 1
    lines = [f"Protocol `{key}`, mIoU points; 95 % paired bootstrap intervals over test instances"
             + (f" and the {seeds} seeds of each method." if not one else
                " (one fine-tuning seed: seed-to-seed variation is not in these intervals; `--seeds 3` adds it)."),
             "A claim holds when its whole interval clears the bound, fails when it lies wholly on the other side, "
             "and is unresolved otherwise."
             + (f" *needs `--seeds 3`*: unresolved, or clearing its bound by less than {100 * SEED_MARGIN:.0f} points "
                "(three seeds changed verdicts that one seed cleared by up to 1.1 points)." if one else ""), "",
             "| claim | clicks | estimate | 95 % interval | bound | verdict |" + (" one seed enough? |" if one else ""),
             "|---|---|---|---|---|---|" + ("---|" if one else "")]
    for c in claims:
        seeds_cell = (" needs `--seeds 3` |" if c["needs_seeds"] else " yes |") if one else ""
        lines.append(f"| {c['claim']} | {c['clicks']} | {c['estimate']:+.1f} | [{c['low']:+.1f}, {c['high']:+.1f}] | "
                     f"> {c['bound']:+.1f} | {VERDICT[c['verdict']]} |{seeds_cell}")
    held = sum(c["verdict"] == "holds" for c in claims)
    lines += ["", f"{held} of {len(claims)} hold, {sum(c['verdict'] == 'fails' for c in claims)} fail, "
              f"{sum(c['verdict'] == 'unresolved' for c in claims)} unresolved"
              + (f"; {sum(c['needs_seeds'] for c in claims)} need `--seeds 3` to resolve." if one else ".")]
    return lines


def _mean_sets(report: dict, method: str, sets: tuple[str, ...], key: str, k: int) -> float | None:
    vals = [report[method][s][key]["miou"][k - 1] for s in sets]
    return None if any(v is None for v in vals) else float(np.mean(vals))


def main_tables(report: dict, runs: dict, settings: DemoSettings) -> list[str]:
    """One table per protocol key: methods × (mIoU@1/3/5 per test set and their mean, bIoU@1, NoC@85/90)."""
    lines: list[str] = []
    sets = settings.test_sets
    for key in settings.protocol_keys:
        rounds = len(report[FOUNDATION][sets[0]][key]["miou"])
        ks = [k for k in (1, 3, 5) if k <= rounds]
        with_noc = rounds >= 20
        n = ", ".join(f"{s} {report[FOUNDATION][s][key]['n']}" for s in sets)
        lines += ["", f"**`{key}`** (mIoU %, ± sd over seeds; bIoU = boundary IoU; {rounds} rounds; instances: {n})",
                  ""]
        cols = [f"{s} @{k}" for s in sets for k in ks] + [f"mean @{k}" for k in ks] + [f"{s} bIoU@1" for s in sets]
        cols += [f"{s} NoC@{t}" for s in sets for t in (85, 90)] if with_noc else []
        head = "| method | " + " | ".join(cols) + " |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for method, by_set in report.items():
            row = [cell(report, runs, method, s, key, k) for s in sets for k in ks]
            row += [pct(_mean_sets(report, method, sets, key, k)) for k in ks]
            row += [cell(report, runs, method, s, key, 1, "biou") for s in sets]
            if with_noc:
                row += [_noc(by_set[s][key][f"noc{t}"]) for s in sets for t in (85, 90)]
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        if not with_noc:
            lines += ["", "NoC@85/90 need 20 rounds (left out)."]
    return lines


def main_table_text(report: dict) -> str:
    """The terminal's summary: mIoU@1 / @3 (%) per method and test set, first protocol key."""
    first = report[FOUNDATION]
    sets = list(first)
    key = next(iter(first[sets[0]]))
    head = f"{'method':<16}" + "".join(f"{s:>16}" for s in sets) + f"   ({key}, mIoU@1 / @3)"
    rows = [head]
    for method, by_set in report.items():
        rows.append(f"{method:<16}" + "".join(
            f"{pct(by_set[s][key]['miou'][0]) + ' / ' + pct(by_set[s][key]['miou'][2]):>16}" for s in sets))
    return "\n".join(rows)


def stats_section(ctx: Ctx) -> list[str]:
    st = json.loads((ctx.out / "stats.json").read_text())
    kinds = st["kinds"]
    overlays = sorted((ctx.store / "overlays").glob("*.png"))[: ctx.settings.uncertainty_examples]
    lines = [
        f"{st['masks']} pseudo-labels on {st['images']} unlabelled images (per image: mean "
        f"{st['per_image']['mean']:.1f}, min {st['per_image']['min']}, max {st['per_image']['max']}); "
        "thresholds: predicted IoU > "
        f"{st['thresholds']['pred_iou_thresh']:.3f}, stability >= {st['thresholds']['stability_score_thresh']:.3f}.",
        "",
        "| best-matching true mask | salient object | other entity | part | none (wrong: best IoU < 0.5) |",
        "|---|---|---|---|---|",
        f"| pseudo-labels | {kinds['salient']} | {kinds['entity']} | {kinds['part']} | {kinds['wrong']} "
        f"({100 * st['wrong_fraction']:.0f} %) |",
        "",
        f"- Mean U on wrong pixels (pseudo-label ≠ its best-matching true mask) {st['mean_u_wrong']:.3f}, on right "
        f"pixels {st['mean_u_right']:.3f} ({st['wrong_pixels']} wrong, {st['right_pixels']} right pixels).",
        f"- Wrong pixels the dice gate lets through (c = 1 − U > θ = {st['theta']}): "
        f"{100 * st['wrong_pixels_passing_theta']:.0f} % (aim: at most 50 %).",
        *_weight_line(st),
        "- AUROC of pixel U against pixel error (1 = U ranks every wrong pixel above every right one, 0.5 = "
        "chance): " + ("–" if st.get("auroc") is None else f"{st['auroc']:.3f}") + ".",
        "", "| kind of pseudo-label | masks | mean U on wrong pixels | on right pixels | wrong pixels with c > θ | "
        "AUROC |", "|---|---|---|---|---|---|",
        *[f"| {kind} | {k['masks']} | {_f3(k['mean_u_wrong'])} | {_f3(k['mean_u_right'])} | "
          f"{pct(k['wrong_pixels_passing_theta'])} % | {_f3(k['auroc'])} |"
          for kind, k in st.get("by_kind", {}).items()],
        "- Correlation of a pseudo-label's mean U (inside it) with its true IoU: "
        + ("–" if st["corr_mask_u_iou"] is None else f"{st['corr_mask_u_iou']:+.2f}") + ".",
        "", "### Uncertainty maps", "",
        "Each: image | pseudo-label (red) | refined mask σ(r) > 0.5 (blue) | U (jet, 0 → 1).", ""]
    lines += [f"![{unquote(p.stem)}]({quote(p.relative_to(ctx.out).as_posix())})" for p in overlays]
    return lines


def _weight_line(st: dict) -> list[str]:
    """What U changes in the loss: the focal weight it takes from the pseudo-labels, and from which pixels."""
    if st.get("u_weight") is None:  # no pseudo-label pixels to weigh
        return []
    on_wrong = "–" if st["u_weight_on_wrong"] is None else f"{100 * st['u_weight_on_wrong']:.0f} %"
    return [f"- Weight U takes from the pseudo-labels' focal loss (mean U over their pixels): "
            f"{100 * st['u_weight']:.2f} %, {on_wrong} of it from wrong pixels; a perfect U would take "
            f"{100 * st['wrong_share']:.2f} % (the wrong pixels), all of it from wrong pixels."]


def _f3(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def real_section(ctx: Ctx) -> list[str]:
    folder = ctx.out / "eval" / "real"
    if ctx.benchmarks is None or not folder.is_dir():
        why = ("`--quick` leaves them out" if ctx.settings.real_limit is None
               else "no GrabCut/Berkeley folder found (`../shared/benchmarks` or `$SUMSEG_BENCHMARKS`)")
        return [f"Skipped: {why}."]
    lines = [f"The first {ctx.settings.real_limit} instances of each set from `{ctx.benchmarks}`, oracle first "
             f"round, task {ctx.settings.tasks[0]} prompt, {ctx.settings.rounds} rounds. A tiny model "
             "trained on synthetic shapes at 256 px scores low on real photos; the section shows the harness "
             "on real images.", "", "| model | dataset | protocol | n | mIoU@1 | mIoU@3 | mIoU@5 | NoC@85 | NoC@90 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in sorted(p.name for p in folder.iterdir() if (p / "results.json").is_file()):
        for ds, by_proto in json.loads((folder / model / "results.json").read_text()).items():
            for proto, r in by_proto.items():
                m = r["miou"]
                lines.append(f"| {model} | {ds} | {proto} | {r['n']} | {pct(m[0])} | {pct(m[2])} | "
                             f"{pct(m[4]) if len(m) > 4 else '–'} | {_noc(r['noc85'])} | {_noc(r['noc90'])} |")
    return lines


def _cpu(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds:.1f}"


def timing_section(timings: Timings) -> list[str]:
    lines = ["| stage | wall (s) | CPU (s) | result |", "|---|---|---|---|"]
    lines += [f"| {d.name} | {d.wall:.1f} | {_cpu(d.cpu)} | {d.summary.replace('|', chr(92) + '|')} |"
              for d in timings.done]
    cpu = sum(d.cpu for d in timings.done if not math.isnan(d.cpu))
    lines += ["", f"Whole run: {timings.wall:.0f} s wall clock, {cpu:.0f} s CPU in the stages (a stage's CPU time "
              "is that of the process that ran it; stages run in parallel processes with one thread each; the world's "
              "writer processes are not counted)."]
    return lines


def settings_lines(ctx: Ctx) -> list[str]:
    s, p, t = ctx.settings, ctx.settings.pseudo, ctx.settings.train
    tasks = ", ".join(f"{k} ({TASK_NAMES[k]})" for k in s.tasks)
    return [
        f"- Foundation: `{ctx.foundation}`.",
        f"- World seed {s.world_seed}{' (the test world)' if s.world_seed == 0 else ''}: {s.unlabelled} unlabelled "
        f"images; labelled tasks {tasks}: {s.task_train} training and {s.task_test} test images each; general test "
        f"set {s.general_test} images (every entity and part, task 0 prompt)"
        + (f"; the tasks' and the unlabelled images in a target domain the foundation never saw (contrast "
           f"×{s.shift.contrast:g} towards mid-grey, Gaussian noise of {s.shift.noise:g} grey levels), the general "
           "set in its own." if s.shift is not None else "; every image in the foundation's own domain."),
        f"- Pseudo-labels: {p.points_per_side}² point grid, predicted IoU > {p.pred_iou_thresh}, stability >= "
        f"{p.stability_score_thresh} (quantiles of the foundation's own scores on {p.calibration_images} images), "
        f"at most {p.max_per_image} per image, area >= {p.min_area_ratio} of the image.",
        f"- Refiner: {s.refiner_steps} steps at lr {s.refiner_lr} on the tasks' labelled splits.",
        f"- Fine-tuning (decoder on cached embeddings): {t.steps} steps, lr {t.lr} (task prompts ×{t.task_lr_mult:g}), "
        f"{t.images_per_step} images per step (labelled : pseudo-labelled {t.ratio[0]} : {t.ratio[1]} where "
        f"pseudo-labels are used), up to {t.masks_per_image} masks per image, {t.corrections} correction rounds, "
        f"θ = {t.theta}, loss at the {'input frame' if t.loss_resolution == 'input' else 'low resolution'}, IoU head "
        f"{'also' if t.iou_head_on_pseudo else 'not'} trained on pseudo-labels, task prompt in "
        f"{'every round' if t.task_prompt == 'every' else 'round 1 only'}, task 0 "
        f"{'trained' if t.train_task0 else 'fixed at zero'}; seeds {', '.join(str(i) for i in range(s.seeds))}.",
        f"- Evaluation: {s.rounds} rounds, protocols {', '.join(s.protocols)}; round 1 = three outputs, kept by "
        + " / ".join({"oracle": "the oracle (best IoU with the ground truth)",
                      "score": "the score (highest predicted IoU: `_score` keys)"}[f] for f in s.first_rounds)
        + "; each mask's own task prompt.",
        *([f"- `{TRUE_U}` is a diagnostic, not a method: SUM itself, trained on a copy of the pseudo-labels whose U "
           "maps are the synthetic truth (U = 1 where a pseudo-label differs from its best-matching true mask, as a "
           "perfect refiner would give). It tells a refiner that misses the errors from errors that do not hurt."]
          if TRUE_U in s.methods else [])]


def markdown(ctx: Ctx, report: dict, runs: dict, timings: Timings, figures: dict[str, str],
             claims: list[dict]) -> str:
    s = ctx.settings
    lines = ["# sumseg demo report", "", *settings_lines(ctx), "", "## The claims, measured", "",
             *claims_lines(claims, s.seeds, s.protocol_keys[0]),
             "", "## Main tables", *main_tables(report, runs, s), "", "## IoU against clicks", ""]
    lines += [f"![{name}]({path})" for name, path in figures.items() if name.startswith("iou_")]
    lines += ["", "## Forgetting (general set, change vs the foundation)", "",
              f"![forgetting]({figures['forgetting']})", "", "## Pseudo-labels", "", *stats_section(ctx), "",
              "## Real images: GrabCut and Berkeley", "", *real_section(ctx), "", "## Stage times", "",
              *timing_section(timings), ""]
    return "\n".join(lines)
