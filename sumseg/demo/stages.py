"""The demo's jobs: each calls one library function (the stage's own resume applies) and returns a line.

They run in worker processes (:mod:`sumseg.demo.jobs`), so each one builds what it needs from
the :class:`~sumseg.demo.pipeline.Ctx` it is given and returns a short summary.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sumseg.demo.context import Ctx, eval_is_current, mark_evaluated
from sumseg.demo.settings import TRUE_U

if TYPE_CHECKING:
    from sumseg.config import RefinerConfig, TrainConfig


def pseudo_labels(ctx: Ctx) -> str:
    """The foundation's automatic-mask-generator pseudo-labels of the unlabelled split."""
    from dataclasses import asdict

    from sumseg.config import PseudoLabelConfig, PseudoLabelSettings
    from sumseg.data.embedding_cache import EmbeddingCache
    from sumseg.models.checkpoint import build_model
    from sumseg.pipeline.pseudo_label_run import run_pseudo_labels

    p = ctx.settings.pseudo
    cfg = PseudoLabelConfig(images=str(ctx.world / "unlabeled"), out=str(ctx.store),
                            checkpoint=str(ctx.foundation), amg=PseudoLabelSettings(**asdict(p)), progress=False)
    model = build_model(None, ctx.foundation)
    s = run_pseudo_labels(model, cfg, EmbeddingCache(ctx.cache, model.cache_encoder()))
    t = s.thresholds
    return (f"{sum(s.masks_per_image)} masks on {s.images} images; predicted IoU > {t['pred_iou_thresh']:.3f} "
            f"({p.pred_iou_thresh}), stability >= {t['stability_score_thresh']:.3f} ({p.stability_score_thresh}), "
            f"at most {p.max_per_image} per image")


def refiner_config(ctx: Ctx) -> RefinerConfig:
    """``sumseg refiner train``'s config of the demo's refiner, checked as ``load_refiner_config`` checks one."""
    from sumseg.config import ModelConfig, RefinerConfig, RefinerData, RefinerOptim, RunConfig, check_refiner_config
    from sumseg.config_io import through_schema

    s = ctx.settings
    cfg = through_schema(RefinerConfig(
        model=ModelConfig(name=None, checkpoint=str(ctx.foundation)),
        data=RefinerData(labelled=[str(p) for p in ctx.labelled_sets().values()],
                         embedding_cache=str(ctx.refiner / "embeddings")),
        optim=RefinerOptim(steps=s.refiner_steps, lr=s.refiner_lr, warmup=min(20, s.refiner_steps // 5)),
        run=RunConfig(out=str(ctx.refiner), save_every=max(1, s.refiner_steps // 2), device="cpu", progress=False)))
    check_refiner_config(cfg)
    return cfg


def refiner(ctx: Ctx) -> str:
    """The refiner, trained on the tasks' labelled splits (its own embedding cache: other jobs run alongside)."""
    from sumseg.train.refiner_run import gate_summary, train_refiner

    s = ctx.settings
    cfg = refiner_config(ctx)
    done = "trained" if train_refiner(cfg) else "already trained"
    g = gate_summary(cfg.run.out)
    return (f"{done} ({s.refiner_steps} steps); over its {g['steps_logged']:.0f} logged steps {g['kept']:.0%} of "
            f"masks past the gate, their IoU {g['input_iou']:.3f} -> refined {g['train_iou']:.3f}")


def uncertainty(ctx: Ctx) -> str:
    """U = |σ(s) − σ(r)| for every pseudo-label, and the overlays the report shows."""
    from sumseg.config import UncertaintyConfig
    from sumseg.data.embedding_cache import EmbeddingCache
    from sumseg.models.checkpoint import build_model
    from sumseg.pipeline.uncertainty import run_uncertainty

    cfg = UncertaintyConfig(pseudo_labels=str(ctx.store), refiner=str(ctx.refiner / "last.ckpt"),
                            show=ctx.settings.uncertainty_examples, progress=False)
    net = build_model(None, ctx.refiner / "last.ckpt")
    s = run_uncertainty(net, cfg, EmbeddingCache(ctx.cache, net.cache_encoder()))
    return f"{s.masks} masks, mean U {s.mean_u:.4f} ({s.computed_now} of {s.images} images computed now)"


def true_uncertainty(ctx: Ctx) -> str:
    """A copy of the pseudo-label store with the true U maps (the ``sum_true_u`` diagnostic)."""
    from sumseg.demo.true_uncertainty import write_true_store

    s = write_true_store(ctx.store, ctx.true_u_store, ctx.settings.world_seed, ctx.settings.shift)
    return f"{s['masks']} masks, mean true U {s['mean_u']:.4f} (pixels unlike the best-matching true mask)"


def train_config(ctx: Ctx, method: str, seed: int) -> TrainConfig:
    """``sumseg train``'s config of one demo run (no YAML: the demo's settings are its own), checked as
    ``load_config`` checks a loaded one."""
    from sumseg.config import (
        DataConfig,
        LabelledSet,
        LossConfig,
        LossResolution,
        Method,
        Mode,
        ModelConfig,
        OptimConfig,
        RoundsConfig,
        RunConfig,
        TaskPromptRounds,
        TrainConfig,
        check_config,
    )
    from sumseg.config_io import through_schema

    t = ctx.settings.train
    store = ctx.true_u_store if method == TRUE_U else ctx.store
    trained = "sum" if method == TRUE_U else method  # the diagnostic is SUM itself, on the store with the true U
    data = DataConfig(
        labelled=[LabelledSet(str(p), k) for k, p in ctx.labelled_sets().items()], ratio=list(t.ratio),
        masks_per_image=t.masks_per_image, images_per_step=t.images_per_step,
        pseudo_labels=None if trained == "vanilla" else str(store),
        refiner=str(ctx.refiner / "last.ckpt") if trained == "refined_labels" else None,
        max_mask_uncertainty=t.max_mask_uncertainty if trained in ("sum", "sum_no_task") else None)  # those it changes
    cfg = through_schema(TrainConfig(
        model=ModelConfig(name=None, checkpoint=str(ctx.foundation)), data=data, method=Method(trained),
        mode=Mode.decoder, rounds=RoundsConfig(corrections=t.corrections, task_prompt=TaskPromptRounds(t.task_prompt)),
        loss=LossConfig(resolution=LossResolution(t.loss_resolution), theta=t.theta,
                        iou_head_on_pseudo=t.iou_head_on_pseudo),
        optim=OptimConfig(lr=t.lr, warmup=t.warmup, steps=t.steps, task_lr_mult=t.task_lr_mult,
                          train_task0=t.train_task0),
        run=RunConfig(out=str(ctx.run_dir(method, seed)), seed=seed, save_every=max(1, t.steps // 2), device="cpu",
                      progress=False)))
    check_config(cfg)
    return cfg


def finetune(ctx: Ctx, method: str, seed: int) -> str:
    """One fine-tuning run from the foundation (decoder mode on cached embeddings)."""
    from sumseg.train.train_run import train

    row = train(train_config(ctx, method, seed))
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

    stats = store_stats(ctx.store, ctx.settings.world_seed, ctx.settings.train.theta, ctx.settings.shift)
    write_json(ctx.out / "stats.json", stats, indent=1)
    return (f"{stats['masks']} pseudo-labels, {stats['wrong_fraction']:.0%} wrong (best IoU with any true mask "
            f"< 0.5); mean U on wrong / right pixels {stats['mean_u_wrong']:.3f} / {stats['mean_u_right']:.3f}")

