"""The demo's jobs: each calls one library function (the stage's own resume applies) and returns a line.

They run in worker processes (:mod:`sumseg.demo.jobs`), so each one builds what it needs from
the :class:`~sumseg.demo.pipeline.Ctx` it is given and returns a short summary.
"""

from __future__ import annotations

import json

from sumseg.demo.context import Ctx, eval_is_current, mark_evaluated


def pseudo_labels(ctx: Ctx) -> str:
    """The foundation's automatic-mask-generator pseudo-labels of the unlabelled split."""
    from sumseg.data.embedding_cache import EmbeddingCache
    from sumseg.models.checkpoint import build_model
    from sumseg.pipeline.amg import PseudoLabelSettings
    from sumseg.pipeline.pseudo_label_run import run_pseudo_labels

    p = ctx.settings.pseudo
    settings = PseudoLabelSettings(points_per_side=p.points_per_side, pred_iou_thresh=p.pred_iou_thresh,
                                   stability_score_thresh=p.stability_score_thresh, max_per_image=p.max_per_image,
                                   min_area_ratio=p.min_area_ratio, calibration_images=p.calibration_images)
    model = build_model(None, ctx.foundation)
    cache = EmbeddingCache(ctx.cache, model.sam)
    s = run_pseudo_labels(model, ctx.world / "unlabeled", ctx.store, settings, cache=cache, progress=False)
    t = s.thresholds
    return (f"{sum(s.masks_per_image)} masks on {s.images} images; predicted IoU > {t['pred_iou_thresh']:.3f} "
            f"({p.pred_iou_thresh}), stability >= {t['stability_score_thresh']:.3f} ({p.stability_score_thresh}), "
            f"at most {p.max_per_image} per image")


def refiner(ctx: Ctx) -> str:
    """The refiner, trained on the tasks' labelled splits (its own embedding cache: other jobs run alongside)."""
    from sumseg.config import load_refiner_config
    from sumseg.train.refiner_run import train_refiner

    s = ctx.settings
    cfg = load_refiner_config(None, [
        "model.name=null", f"model.checkpoint={json.dumps(str(ctx.foundation))}",
        f"data.labelled=[{', '.join(json.dumps(str(p)) for p in ctx.labelled_sets().values())}]",
        f"data.embedding_cache={json.dumps(str(ctx.refiner / 'embeddings'))}",
        f"optim.steps={s.refiner_steps}", f"optim.lr={s.refiner_lr}", f"optim.warmup={min(20, s.refiner_steps // 5)}",
        f"run.out={json.dumps(str(ctx.refiner))}", f"run.save_every={max(1, s.refiner_steps // 2)}",
        "run.device=cpu", "run.progress=false"])
    row = train_refiner(cfg)
    if not row:
        return f"already trained ({s.refiner_steps} steps)"
    return (f"{s.refiner_steps} steps; IoU of its input {row.get('input_iou', float('nan')):.3f} -> refined "
            f"{row.get('train_iou', float('nan')):.3f}, {row.get('kept', float('nan')):.0%} of masks past the gate")


def uncertainty(ctx: Ctx) -> str:
    """U = |σ(s) − σ(r)| for every pseudo-label, and the overlays the report shows."""
    from sumseg.data.embedding_cache import EmbeddingCache
    from sumseg.models.checkpoint import build_model
    from sumseg.pipeline.uncertainty import run_uncertainty

    net = build_model(None, ctx.refiner / "last.ckpt")
    s = run_uncertainty(net, ctx.store, show=ctx.settings.uncertainty_examples,
                        cache=EmbeddingCache(ctx.cache, net.sam), progress=False)
    return f"{s.masks} masks, mean U {s.mean_u:.4f} ({s.computed_now} of {s.images} images computed now)"


def train_overrides(ctx: Ctx, method: str, seed: int) -> list[str]:
    """``sumseg train`` key=value settings of one demo run (no YAML: the demo's settings are its own)."""
    t = ctx.settings.train
    labelled = ", ".join(f"{{path: {json.dumps(str(p))}, task: {k}}}" for k, p in ctx.labelled_sets().items())
    out = ["model.name=null", f"model.checkpoint={json.dumps(str(ctx.foundation))}",
           f"data.labelled=[{labelled}]", f"data.ratio=[{t.ratio[0]}, {t.ratio[1]}]",
           f"data.masks_per_image={t.masks_per_image}", f"data.images_per_step={t.images_per_step}",
           f"method={method}", "mode=decoder", f"rounds.corrections={t.corrections}",
           f"rounds.task_prompt={t.task_prompt}", f"loss.theta={t.theta}", f"loss.resolution={t.loss_resolution}",
           f"loss.iou_head_on_pseudo={str(t.iou_head_on_pseudo).lower()}",
           f"optim.train_task0={str(t.train_task0).lower()}",
           f"optim.lr={t.lr}", f"optim.warmup={t.warmup}", f"optim.steps={t.steps}",
           f"optim.task_lr_mult={t.task_lr_mult}", f"run.out={json.dumps(str(ctx.run_dir(method, seed)))}",
           f"run.seed={seed}", f"run.save_every={max(1, t.steps // 2)}", "run.device=cpu", "run.progress=false"]
    if method != "vanilla":
        out.append(f"data.pseudo_labels={json.dumps(str(ctx.store))}")
    if method in ("sum", "sum_no_task") and t.max_mask_uncertainty is not None:  # the methods it changes
        out.append(f"data.max_mask_uncertainty={t.max_mask_uncertainty}")
    if method == "refined_labels":
        out.append(f"data.refiner={json.dumps(str(ctx.refiner / 'last.ckpt'))}")
    return out


def finetune(ctx: Ctx, method: str, seed: int) -> str:
    """One fine-tuning run from the foundation (decoder mode on cached embeddings)."""
    from sumseg.config import load_config
    from sumseg.train.train_run import train

    row = train(load_config(None, train_overrides(ctx, method, seed)))
    if not row:
        return f"already trained ({ctx.settings.train.steps} steps)"
    return (f"{ctx.settings.train.steps} steps; last loss {row.get('loss', float('nan')):.3f}, "
            f"train IoU {row.get('train_iou', float('nan')):.3f}")


def evaluate_model(ctx: Ctx, model_name: str) -> str:
    """The protocols on every test set, once per first-round rule (each mask's own task prompt)."""
    from sumseg.evaluate.run import EvalSettings, evaluate
    from sumseg.models.checkpoint import build_model

    ckpt = ctx.checkpoint(model_name)
    net, parts = None, []
    for first in ctx.settings.first_rounds:
        folder = ctx.out / "eval" / model_name / first
        if not eval_is_current(folder, ckpt):
            net = net or build_model(None, ckpt)
            settings = EvalSettings(ctx.settings.protocols, ctx.settings.rounds, first, "auto",  # type: ignore[arg-type]
                                    overlays=2, task_rounds=ctx.settings.train.task_prompt)  # type: ignore[arg-type]
            evaluate(net, ctx.test_sets(), settings, folder, progress=False)
            mark_evaluated(folder, ckpt)
        data = json.loads((folder / "results.json").read_text())
        proto = ctx.settings.protocols[0]
        parts.append(f"{first}: " + ", ".join(f"{ds} {data[ds][proto]['miou'][0]:.3f}" for ds in data))
    return f"mIoU@1 ({ctx.settings.protocols[0]}) " + "; ".join(parts)


def evaluate_real(ctx: Ctx, models: tuple[str, ...]) -> str:
    """The foundation and a fine-tuned model on GrabCut and Berkeley (the first instances; the first task's prompt)."""
    from sumseg.evaluate.run import EvalSettings, evaluate
    from sumseg.models.checkpoint import build_model

    assert ctx.benchmarks is not None
    sets = {name: ctx.benchmarks / name for name in ("GrabCut", "Berkeley") if (ctx.benchmarks / name).is_dir()}
    parts = []
    for model_name in models:
        ckpt, folder = ctx.checkpoint(model_name), ctx.out / "eval" / "real" / model_name
        if not eval_is_current(folder, ckpt):
            settings = EvalSettings(ctx.settings.protocols, ctx.settings.rounds, "oracle", ctx.settings.tasks[0],
                                    ctx.settings.real_limit, overlays=2,
                                    task_rounds=ctx.settings.train.task_prompt)  # type: ignore[arg-type]
            evaluate(build_model(None, ckpt), sets, settings, folder, progress=False)
            mark_evaluated(folder, ckpt)
        data = json.loads((folder / "results.json").read_text())
        parts.append(f"{model_name}: " + ", ".join(f"{ds} {next(iter(d.values()))['miou'][0]:.3f}"
                                                   for ds, d in data.items()))
    return f"mIoU@1 ({ctx.settings.protocols[0]}) " + "; ".join(parts)


def export(ctx: Ctx, model_name: str) -> str:
    """The fine-tuned model's task prompts, each folded into a stock SAM state_dict, checked against the stock
    loader over interactive rounds."""
    from sumseg.models.export import export_checkpoint

    (ctx.out / "export").mkdir(exist_ok=True)
    diffs = []
    for task in ctx.settings.tasks:
        out = ctx.out / "export" / f"{model_name}_task{task}_stock.pth"
        _, diff = export_checkpoint(ctx.checkpoint(model_name), task, out, verify=True)
        assert diff is not None, "verify=True measures the difference"
        diffs.append(diff)
    return (f"export/{model_name}_task{{{','.join(map(str, ctx.settings.tasks))}}}_stock.pth: stock predictions "
            f"equal sumseg's in every round (max |logit diff| {max(diffs):.1e})")


def pseudo_label_stats(ctx: Ctx) -> str:
    """Pseudo-labels and their U maps against the synthetic ground truth → ``stats.json``."""
    from sumseg.atomic import write_json
    from sumseg.demo.stats import store_stats

    stats = store_stats(ctx.store, ctx.settings.world_seed, ctx.settings.train.theta)
    write_json(ctx.out / "stats.json", stats, indent=1)
    return (f"{stats['masks']} pseudo-labels, {stats['wrong_fraction']:.0%} wrong (best IoU with any true mask "
            f"< 0.5); mean U on wrong / right pixels {stats['mean_u_wrong']:.3f} / {stats['mean_u_right']:.3f}")

