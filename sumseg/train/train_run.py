"""``sumseg train``: a :class:`~sumseg.config.TrainConfig` → model, sources, step, param groups → the loop.

One code path for every method and mode (docs/training.md):

=============== ==================================================== =============== ============
method          pseudo-labelled images give                          c               task prompt
=============== ==================================================== =============== ============
sum             the store's pseudo-labels                            1 − U (U maps)  yes
vanilla         nothing (labelled images only)                       —               yes
self_training   the store's pseudo-labels                            1               yes
refined_labels  the refiner's masks σ(r) > 0.5 for them              1               yes
sum_no_task     the store's pseudo-labels                            1 − U           no
=============== ==================================================== =============== ============

Modes: ``full`` trains every weight; ``decoder`` freezes the image encoder and reads image
embeddings from an :class:`~sumseg.data.embedding_cache.EmbeddingCache` (built once, before the
first step); ``lora`` freezes the encoder and trains peft LoRA adapters on its attention
(:mod:`sumseg.train.lora`; checkpoints hold the merged weights). The prompt encoder, the mask
decoder and the task prompts train in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import torch

from sumseg.atomic import atomic_path
from sumseg.config import Method, Mode, TrainConfig, config_changes, to_dict, to_yaml
from sumseg.data.embedding_cache import EmbeddingCache
from sumseg.data.records import ImageRecord
from sumseg.errors import ConfigError
from sumseg.losses import RoundLoss
from sumseg.models.backbones import Backbone
from sumseg.models.checkpoint import build_model
from sumseg.models.refiner import check_refiner
from sumseg.models.task_prompts import TaskRounds
from sumseg.outputs import check_output_dir
from sumseg.pipeline.store import open_store
from sumseg.tasks import GENERAL
from sumseg.train.distributed import Replica, main_first, setup
from sumseg.train.inputs import mixed_samples, shared_cache, step_inputs
from sumseg.train.loop import InputFn, LoopConfig, SaveFn, loop_config, run_lock, run_loop
from sumseg.train.lora import MergedSaver, add_lora, is_adapter
from sumseg.train.optim import param_groups
from sumseg.train.run_state import saved_config
from sumseg.train.schedule import LabelledSource, MaskSource
from sumseg.train.sources import PseudoLabelSource, labelled_records
from sumseg.train.step import InteractiveStep, LossResolution

RUN_FILES = ("last.ckpt", "config.yaml", "config.json", "metrics.jsonl")
RUN_DIRS = ("state", "tensorboard", "embeddings")


@dataclass
class TrainingSetup:
    """Everything the loop is handed (built by :func:`build_training`)."""

    model: Backbone  # the trained model (LoRA adapters inside in mode=lora)
    module: InteractiveStep  # the step module the loop runs (and wraps in DDP)
    inputs: InputFn
    params: list[dict]  # AdamW groups (see sumseg.train.optim)
    loop: LoopConfig
    save_model: SaveFn | None  # mode=lora: writes the merged weights
    config: dict[str, Any]  # the resolved config, plain (saved in checkpoints)
    images_per_call: int


def round_loss(cfg: TrainConfig) -> RoundLoss:
    """The loss of one round that ``cfg.loss`` describes."""
    return RoundLoss(cfg.loss.focal_weight, cfg.loss.theta, cfg.loss.iou_head_on_pseudo)


def set_mode(model: Backbone, cfg: TrainConfig) -> None:
    """Mark the trainable parameters of ``cfg.mode`` (adds the LoRA adapters in mode=lora): every one in
    mode=full, else all but the image side (``model.is_image_side``; LoRA's adapters train); never those no
    loss term reaches (``model.is_idle``: SAM 2's object-score head)."""
    for name, p in model.named_parameters():
        p.requires_grad_(not model.is_idle(name))
    if cfg.mode is Mode.full:
        return
    if cfg.mode is Mode.lora:
        add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.dropout)
    for name, p in model.named_parameters():
        if model.is_image_side(name):
            p.requires_grad_(is_adapter(name))


def _share(cfg: TrainConfig) -> Fraction:
    """Fraction of each step's images that are labelled."""
    if cfg.method is Method.vanilla:
        return Fraction(1)
    labelled, pseudo = (Fraction(v).limit_denominator(10**6) for v in cfg.data.ratio)
    return labelled / (labelled + pseudo)


def build_sources(cfg: TrainConfig, model: Backbone, device: torch.device) -> list[MaskSource | None]:
    """[labelled source or None, pseudo-label source or None] as the method and ratio need them."""
    share = _share(cfg)
    known = model.task_prompts.task_ids
    labelled = None
    if share > 0:
        labelled = LabelledSource(labelled_records(cfg.data.labelled, known), cfg.data.masks_per_image)
    if share == 1:
        return [labelled, None]
    if cfg.method is not Method.sum_no_task and GENERAL not in known:
        raise ConfigError(f"model.tasks: pseudo-labels carry task {GENERAL} (general), which the model does not "
                          f"know (it knows {list(known)})")
    assert cfg.data.pseudo_labels is not None, "check_config requires it"
    refiner = None
    if cfg.method is Method.refined_labels:
        assert cfg.data.refiner is not None, "check_config requires it"
        refiner = check_refiner(build_model(None, cfg.data.refiner), f"data.refiner {cfg.data.refiner}").to(device)
    uncertainty = cfg.method in (Method.sum, Method.sum_no_task)
    store = open_store(cfg.data.pseudo_labels)
    return [labelled, PseudoLabelSource(store, cfg.data.masks_per_image, model.image_size, uncertainty, refiner,
                                        cfg.data.max_mask_uncertainty if uncertainty else None)]


def _all_records(sources: list[MaskSource | None]) -> list[ImageRecord]:
    """Every image a step can draw (what the decoder mode's embedding cache must hold)."""
    out: list[ImageRecord] = []
    for s in sources:
        if isinstance(s, LabelledSource):
            out += s.records
        elif isinstance(s, PseudoLabelSource):
            out += [s.store.record(i) for i in s.index]
    return out


def embedding_cache(cfg: TrainConfig, model: Backbone, sources: list[MaskSource | None],
                    replica: Replica) -> EmbeddingCache:
    """The decoder mode's cache of every training image's embedding (rank 0 builds, the others wait)."""
    root = Path(cfg.data.embedding_cache or Path(cfg.run.out) / "embeddings")
    model.to(replica.device)
    return shared_cache(root, model, lambda: _all_records(sources), replica, cfg.run.progress)


def make_inputs(cfg: TrainConfig, model: Backbone, sources: list[MaskSource | None],
                cache: EmbeddingCache | None) -> InputFn:
    """The loop's ``inputs(draw, replica)`` (:func:`sumseg.train.inputs.step_inputs`): this rank's images of
    the call (labelled and pseudo-labelled mixed at the method's share), collated on its device, and a
    prompt sampler seeded from (seed, draw, rank)."""
    samples = mixed_samples(sources, _share(cfg), cfg.run.seed, cfg.data.images_per_step)
    return step_inputs(samples, model, cfg.run.seed, cache, cfg.rounds.p_box)


def build_training(cfg: TrainConfig, replica: Replica | None = None) -> TrainingSetup:
    """Assemble the run of ``cfg`` (reads the data, builds the cache in mode=decoder)."""
    replica = replica or setup(cfg.run.device)
    model = build_model(cfg.model.name, cfg.model.checkpoint, cfg.model.tasks)
    torch.manual_seed(cfg.run.seed)  # LoRA's A matrices
    set_mode(model, cfg)
    sources = build_sources(cfg, model, replica.device)
    cache = embedding_cache(cfg, model, sources, replica) if cfg.mode is Mode.decoder else None
    if not cfg.optim.train_task0 and GENERAL in model.task_prompts.task_ids:
        model.task_prompts.fix([GENERAL])  # the official zero_token_no_grad
    module = InteractiveStep(model, cfg.rounds.corrections, cfg.rounds.final_round, round_loss(cfg),
                             use_task=cfg.method is not Method.sum_no_task,
                             task_rounds=cast(TaskRounds, cfg.rounds.task_prompt.value),
                             resolution=cast(LossResolution, cfg.loss.resolution.value))
    o = cfg.optim
    prefix, encoder = model.encoder_blocks()
    depth = len(cast(torch.nn.ModuleList, encoder.blocks))
    params = param_groups(model, depth, o.lr, o.layer_decay, o.weight_decay, o.task_lr_mult, prefix)
    config = to_dict(cfg)
    saver = MergedSaver(model, config) if cfg.mode is Mode.lora else None
    return TrainingSetup(model, module, make_inputs(cfg, model, sources, cache), params, loop_config(o, cfg.run),
                         saver, config, cfg.data.images_per_step)


def _inputs_of(cfg: TrainConfig) -> list[str | None]:
    return [s.path for s in cfg.data.labelled] + [cfg.data.pseudo_labels, cfg.data.refiner, cfg.model.checkpoint]


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Check ``run.out`` (a folder that is no input); refuse to continue a run made with another config;
    write ``config.yaml``. Rank 0 only."""
    run_dir = check_output_dir(cfg.run.out, inputs=_inputs_of(cfg), files=RUN_FILES, dirs=RUN_DIRS, label="run.out")
    saved = run_dir / "config.yaml"
    with run_lock(run_dir):
        if saved.is_file() and (run_dir / "last.ckpt").is_file():
            changed = config_changes(to_dict(saved_config(saved)), to_dict(cfg))
            if changed:
                raise ConfigError(f"{saved}: this run was started with another config ({'; '.join(changed[:4])}); "
                                  "rerun with the same config to resume, or choose another run.out")
        with atomic_path(saved) as tmp:
            tmp.write_text(to_yaml(cfg))
    return run_dir


def train(cfg: TrainConfig) -> dict[str, float]:
    """Run (or resume) the training of ``cfg`` into ``cfg.run.out``; returns the last logged metrics."""
    replica = setup(cfg.run.device)
    main_first(replica, lambda: prepare_run_dir(cfg))
    s = build_training(cfg, replica)
    return run_loop(s.module, s.inputs, s.model, s.params, s.loop, Path(cfg.run.out), s.config, s.images_per_call,
                    cfg.run.progress and replica.is_main, s.save_model)
