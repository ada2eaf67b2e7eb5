"""The mask-refinement module (refiner): a copy of the foundation model whose prompt encoder and
mask decoder learn to turn a SAM mask into the human label (DESIGN §1, docs/refiner.md).

Training input per GT mask (frames of :mod:`sumseg.train.batch`: input frame S×S, low-res L×L):

1. one point drawn uniformly in the GT mask (ignore pixels left out): ``(x, y)`` label 1;
2. the FROZEN foundation model's three outputs (multimask, no task prompt) for that point; the
   output of highest IoU with the GT (input frame, ignore pixels left out) is the candidate;
3. the gate: the mask is kept when that IoU ≥ ``min_iou`` (0.7);
4. refiner prompt = the candidate's low-res logits as the mask prompt + the tight inclusive box of
   the candidate (thresholded at 0 after SAM's upsampling to S×S), jittered with
   :func:`~sumseg.prompts.sampler.jitter_boxes` + the point; one output (``multimask=False``), no
   task prompt — the prompt ``sumseg uncertainty`` builds from a pseudo-label's ``s``, box and point;
5. loss: :data:`REFINER_LOSS` (a :class:`sumseg.losses.RoundLoss`) on the refiner's output against the
   GT with the human-label confidence of :meth:`~sumseg.train.batch.MaskBatch.confidence_lowres` (1 on
   the image, 0 on padding and ignore pixels), each term averaged over the kept masks.

The image encoder (the refiner's, frozen) is the only one: the frozen twin (:func:`frozen_copy`,
prompt encoder + mask decoder) decodes the same embeddings, which come from
:class:`~sumseg.data.EmbeddingCache` when ``data.embedding_cache`` is set, else from one ``no_grad``
pass per image. Training runs on :func:`sumseg.train.loop.run_loop` (checkpoints, resume, AMP, DDP);
every call's randomness is a function of (seed, draw, rank), so a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from sumseg.config import RefinerConfig
from sumseg.config import refiner_config_dict as config_dict
from sumseg.data.dataset import read_dataset
from sumseg.losses import RoundLoss
from sumseg.models.checkpoint import build_model
from sumseg.models.refiner import check_refiner, frozen_copy, trainable_parameters
from sumseg.outputs import check_output_dir
from sumseg.train.distributed import setup
from sumseg.train.inputs import labelled_samples, shared_cache, step_inputs
from sumseg.train.loop import InputFn, loop_config, run_loop
from sumseg.train.optim import param_groups
from sumseg.train.refiner_step import RefinerStep
from sumseg.train.run_state import check_resumed_config, kept_rows
from sumseg.train.schedule import LabelledSource

REFINER_LOSS = RoundLoss(theta=0.5)
"""The refiner's loss: SAM's (focal weight 20, the IoU head trained); on human labels c is 1 or 0 (padding,
ignore), so any dice gate θ in (0, 1) gives the same loss."""


@dataclass
class RefinerRun:
    """A refiner run ready for :func:`~sumseg.train.loop.run_loop`."""

    step: RefinerStep
    inputs: InputFn
    params: list[dict]


def refiner_run(cfg: RefinerConfig) -> RefinerRun:
    """Build the refiner, its frozen twin, the data and (rank 0 first) the embedding cache for ``cfg``."""
    check_output_dir(cfg.run.out, inputs=[*cfg.data.labelled, cfg.model.checkpoint], label="run.out")
    check_resumed_config(Path(cfg.run.out) / "last.ckpt", config_dict(cfg), "refiner")
    replica = setup(cfg.run.device)
    refiner = build_model(cfg.model.name, cfg.model.checkpoint, cfg.model.tasks).to(replica.device)
    check_refiner(refiner, f"model.checkpoint {cfg.model.checkpoint}")  # a checkpoint may hold an HQ model
    trainable_parameters(refiner)
    # as sumseg train's groups: weight decay on matrices only (the encoder is frozen: no layer decay applies)
    params = param_groups(refiner, 0, cfg.optim.lr, 1.0, cfg.optim.weight_decay, 1.0)
    step = RefinerStep(refiner, frozen_copy(refiner), REFINER_LOSS, cfg.inputs.min_iou, cfg.inputs.jitter_ratio,
                       cfg.inputs.max_jitter)
    records = [rec for path in cfg.data.labelled for rec in read_dataset(path).records]
    source = LabelledSource(records, cfg.data.masks_per_image)
    cache = None
    if cfg.data.embedding_cache is not None:
        cache = shared_cache(cfg.data.embedding_cache, refiner, lambda: source.records, replica, cfg.run.progress)
    samples = labelled_samples(source, cfg.run.seed, cfg.data.images_per_step)
    return RefinerRun(step, step_inputs(samples, refiner, cfg.run.seed, cache), params)


def gate_summary(run_dir: str | Path) -> dict[str, float]:
    """The gate over a refiner run's logged steps (its ``metrics.jsonl``): ``kept``, the mean share of masks
    past it, and ``input_iou`` / ``train_iou``, the IoU of the kept masks' candidates and of the refiner's
    outputs for them (each step's mean weighted by its share kept; NaN when no logged step kept a mask).
    A step's own row says little: with 8 masks a step, one step may keep none while the run keeps 20 %."""
    rows = [json.loads(line) for line in kept_rows(Path(run_dir) / "metrics.jsonl", 2**62)]
    kept = [float(r.get("kept") or 0.0) for r in rows]
    total = sum(kept)

    def weighted(key: str) -> float:
        return sum(k * float(r.get(key) or 0.0) for k, r in zip(kept, rows, strict=True)) / total if total else math.nan

    return {"kept": total / len(rows) if rows else math.nan, "input_iou": weighted("input_iou"),
            "train_iou": weighted("train_iou"), "steps_logged": float(len(rows))}


def train_refiner(cfg: RefinerConfig) -> dict[str, float]:
    """Train a refiner into ``cfg.run.out`` (resuming from its ``last.ckpt``); return the last logged row."""
    run = refiner_run(cfg)
    return run_loop(run.step, run.inputs, run.step.refiner, run.params,
                    loop_config(cfg.optim, cfg.run), Path(cfg.run.out),
                    config_dict(cfg), cfg.data.images_per_step, cfg.run.progress)
