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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING, OmegaConf

from sumseg.config import Checker, ModelConfig, RunConfig, check_model, check_optim, check_run
from sumseg.config_io import load_structured
from sumseg.data.dataset import read_dataset
from sumseg.losses import RoundLoss
from sumseg.models.checkpoint import build_model
from sumseg.models.refiner import frozen_copy, trainable_parameters
from sumseg.outputs import check_output_dir
from sumseg.train.distributed import setup
from sumseg.train.inputs import labelled_samples, shared_cache, step_inputs
from sumseg.train.loop import InputFn, LoopConfig, run_loop
from sumseg.train.optim import param_groups
from sumseg.train.refiner_step import RefinerStep
from sumseg.train.schedule import LabelledSource

REFINER_LOSS = RoundLoss(theta=0.5)
"""The refiner's loss: SAM's (focal weight 20, the IoU head trained); on human labels c is 1 or 0 (padding,
ignore), so any dice gate θ in (0, 1) gives the same loss."""


@dataclass
class RefinerData:
    """The human-labelled masks (``data.*``)."""

    labelled: list[str] = MISSING  # datasets read_dataset reads (COCO, SA-1B, folders), concatenated
    masks_per_image: int = 8  # up to K masks drawn from each image per step
    images_per_step: int = 4  # per process and call
    embedding_cache: str | None = None  # cache folder of the (frozen) encoder; null = encode every call


@dataclass
class RefinerInputsConfig:
    """How a training input is made (``inputs.*``; module docstring)."""

    min_iou: float = 0.7  # the gate: IoU of the frozen best-of-3 output with the GT
    jitter_ratio: float = 0.1  # box jitter: std = ratio · side, clamped to ±max_jitter px
    max_jitter: float = 20.0


@dataclass
class RefinerOptim:
    """``optim.*``: the keys of ``sumseg train``'s ``optim`` section that apply to a decoder-only run."""

    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    steps: int = 400
    accumulate: int = 1  # step calls (of data.images_per_step images each) per optimiser step


@dataclass
class RefinerConfig:
    """``sumseg refiner train`` settings: sections named as in ``sumseg train``'s config (docs/refiner.md)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: RefinerData = field(default_factory=RefinerData)
    inputs: RefinerInputsConfig = field(default_factory=RefinerInputsConfig)
    optim: RefinerOptim = field(default_factory=RefinerOptim)
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/refiner"))

    def loop(self) -> LoopConfig:
        """The training loop's settings."""
        o, r = self.optim, self.run
        return LoopConfig(steps=o.steps, lr=o.lr, weight_decay=o.weight_decay, betas=(o.betas[0], o.betas[1]),
                          warmup=o.warmup, min_lr_ratio=o.min_lr_ratio, grad_clip=o.grad_clip,
                          save_every=r.save_every, log_every=r.log_every, accumulate=o.accumulate,
                          precision=r.precision.value, device=r.device, seed=r.seed)


def check_refiner_config(cfg: RefinerConfig, origin: Callable[[str], str | None] = lambda key: None) -> None:
    """Refuse bad values: one ConfigError lists every problem, each with its key's path and (through
    ``origin``) the file or override that set it — ``sumseg train``'s checker and wording for the
    sections the two share (``model``, ``optim``, ``run``)."""
    c = Checker()
    check_model(cfg.model, c)
    d, i = cfg.data, cfg.inputs
    c.require("data.labelled", len(d.labelled) > 0, "must name at least one dataset")
    c.number("data.masks_per_image", d.masks_per_image, 1, 4096)
    c.number("data.images_per_step", d.images_per_step, 1, 4096)
    c.number("inputs.min_iou", i.min_iou, 0, 1)
    c.number("inputs.jitter_ratio", i.jitter_ratio, 0, 1e6)
    c.number("inputs.max_jitter", i.max_jitter, 0, 1e6)
    check_optim(cfg.optim, c)
    check_run(cfg.run, c)
    c.raise_if_any(origin)


def load_refiner_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RefinerConfig:
    """YAML ``path`` (optional) over the defaults, then ``key=value`` overrides (``optim.lr=1e-4``); checked.

    Read as ``sumseg train``'s config is (:func:`sumseg.config_io.load_structured`): unknown keys,
    values of the wrong type and missing required keys raise :class:`ConfigError` naming the key
    and the file or override it came from; then every out-of-range value is listed at once.
    """
    cfg, sources = load_structured(RefinerConfig, path, overrides)
    check_refiner_config(cfg, sources.origin)
    return cfg


def config_dict(cfg: RefinerConfig) -> dict:
    """The resolved config as saved in the run folder and the checkpoint: ``{"refiner": {...}}``."""
    return {"refiner": OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)}


@dataclass
class RefinerRun:
    """A refiner run ready for :func:`~sumseg.train.loop.run_loop`."""

    step: RefinerStep
    inputs: InputFn
    params: list[dict]


def refiner_run(cfg: RefinerConfig) -> RefinerRun:
    """Build the refiner, its frozen twin, the data and (rank 0 first) the embedding cache for ``cfg``."""
    check_output_dir(cfg.run.out, inputs=[*cfg.data.labelled, cfg.model.checkpoint], label="run.out")
    replica = setup(cfg.run.device)
    refiner = build_model(cfg.model.name, cfg.model.checkpoint, cfg.model.tasks).to(replica.device)
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


def train_refiner(cfg: RefinerConfig) -> dict[str, float]:
    """Train a refiner into ``cfg.run.out`` (resuming from its ``last.ckpt``); return the last logged row."""
    run = refiner_run(cfg)
    return run_loop(run.step, run.inputs, run.step.refiner, run.params, cfg.loop(), Path(cfg.run.out),
                    config_dict(cfg), cfg.data.images_per_step, cfg.run.progress)
