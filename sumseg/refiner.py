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
5. loss: :func:`sumseg.losses.sum_loss` on the refiner's output against the GT with the human-label
   confidence of :meth:`~sumseg.train.batch.MaskBatch.confidence_lowres` (1 on the image, 0 on
   padding and ignore pixels), averaged over the kept masks.

The image encoder (the refiner's, frozen) is the only one: the frozen twin (:func:`frozen_copy`,
prompt encoder + mask decoder) decodes the same embeddings, which come from
:class:`~sumseg.data.EmbeddingCache` when ``data.embedding_cache`` is set, else from one ``no_grad``
pass per image. Training runs on :func:`sumseg.train.loop.run_loop` (checkpoints, resume, AMP, DDP);
every call's randomness is a function of (seed, draw, rank), so a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import MISSING, OmegaConf
from segment_anything.modeling import Sam
from torch import Tensor, nn

from sumseg.config import Checker, ModelConfig, RunConfig, check_model, check_optim, check_run
from sumseg.config_io import load_structured
from sumseg.data.dataset import read_dataset
from sumseg.data.embedding_cache import EmbeddingCache
from sumseg.data.images import content_key
from sumseg.losses import mask_iou, sum_loss
from sumseg.models.checkpoint import build_model
from sumseg.models.sum_sam import ImageFeatures, PromptBatch, SumSam
from sumseg.outputs import check_output_dir
from sumseg.prompts.geometry import flat_to_xy, tight_boxes
from sumseg.prompts.sampler import draw_pixels, jitter_boxes
from sumseg.train.batch import MaskBatch, collate
from sumseg.train.data import LabelledSource, draw_samples, step_generator
from sumseg.train.distributed import Replica, barrier, setup
from sumseg.train.loop import InputFn, LoopConfig, run_loop
from sumseg.train.optim import param_groups


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


class _SharedEncoder(nn.Module):
    """The frozen twin's image encoder slot: the twin reads the refiner's embeddings instead."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size

    def forward(self, images: Tensor) -> Tensor:
        raise RuntimeError("the frozen twin has no image encoder: give it the refiner's embeddings")


def frozen_copy(model: SumSam) -> SumSam:
    """A frozen copy of ``model``'s prompt encoder, mask decoder and task prompts, without an image
    encoder of its own (it decodes the embeddings of ``model``'s encoder, which never trains)."""
    sam = model.sam
    frozen_sam = Sam(_SharedEncoder(model.image_size), copy.deepcopy(sam.prompt_encoder),  # type: ignore[arg-type]
                     copy.deepcopy(sam.mask_decoder), pixel_mean=sam.pixel_mean.flatten().tolist(),
                     pixel_std=sam.pixel_std.flatten().tolist())
    frozen = SumSam(frozen_sam, model.task_prompts.task_ids, model.name).to(sam.pixel_mean.device).eval()
    frozen.task_prompts.load_state_dict(model.task_prompts.state_dict())
    return frozen.requires_grad_(False)


def trainable_parameters(refiner: SumSam) -> list[nn.Parameter]:
    """Freeze everything but the prompt encoder and the mask decoder; return those parameters."""
    refiner.requires_grad_(False)
    parts = (refiner.sam.prompt_encoder, refiner.sam.mask_decoder)
    for part in parts:
        part.requires_grad_(True)
    return [p for part in parts for p in part.parameters()]


def draw_points(gt: Tensor, ignore: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One point per mask, uniform in ``gt & ~ignore`` ((N, S, S) bool): ((N, 1, 2) xy, (N,) valid)."""
    flat, valid = draw_pixels(gt & ~ignore, None, generator)
    return flat_to_xy(flat, gt.shape[2]), valid


@dataclass
class Gated:
    """The candidate of each mask and the gate's verdict (N masks).

    logits: (N, 1, L, L) low-res logits of the output of best IoU; boxes: (N, 4) float32 inclusive
    xyxy tight box of that output in the input frame (zeros when empty); iou: (N,) its IoU with the
    GT; kept: (N,) bool, iou ≥ min_iou and the output is not empty.
    """

    logits: Tensor
    boxes: Tensor
    iou: Tensor
    kept: Tensor


def gate(low: Tensor, gt: Tensor, ignore: Tensor, min_iou: float) -> Gated:
    """Best-of-M selection and the IoU gate for (N, M, L, L) low-res logits and (N, S, S) GT masks."""
    n, m = low.shape[:2]
    size = gt.shape[-1]
    best_iou = torch.full((n,), -1.0, device=low.device)
    best = torch.zeros(n, dtype=torch.long, device=low.device)
    for k in range(m):  # one output at a time: (N, S, S) at full input size is the big tensor
        up = F.interpolate(low[:, k : k + 1], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        iou = mask_iou(up, gt.float(), ~ignore)
        better = iou > best_iou
        best_iou, best = torch.where(better, iou, best_iou), torch.where(better, k, best)
    logits = low[torch.arange(n, device=low.device), best][:, None]
    up = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    boxes, non_empty = tight_boxes(up > 0)
    return Gated(logits, boxes, best_iou, (best_iou >= min_iou) & non_empty)


@dataclass
class RefinerInputs:
    """The refiner's prompts for N masks (all of them; train on ``kept``).

    mask_input: (N, 1, L, L) frozen logits; boxes: (N, 4) jittered xyxy; points: (N, 1, 2) xy;
    input_iou: (N,) IoU of the frozen candidate with the GT; kept: (N,) bool.
    """

    mask_input: Tensor
    boxes: Tensor
    points: Tensor
    input_iou: Tensor
    kept: Tensor

    def take(self, index: Tensor) -> RefinerInputs:
        """The inputs of the masks ``index`` ((K,) long)."""
        return RefinerInputs(*(getattr(self, f.name)[index] for f in fields(self)))


@torch.no_grad()
def refiner_inputs(frozen: SumSam, features: ImageFeatures, batch: MaskBatch, generator: torch.Generator,
                   min_iou: float = 0.7, jitter_ratio: float = 0.1, max_jitter: float = 20.0) -> RefinerInputs:
    """Points, frozen best-of-3 candidates, the gate and jittered boxes for ``batch`` (module docstring).

    Randomness, in this order, from ``generator`` only: the points, then the box jitter.
    """
    size = frozen.image_size
    points, valid = draw_points(batch.gt, batch.ignore, generator)
    labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
    no_box = torch.zeros(len(points), dtype=torch.bool, device=points.device)
    prompts = PromptBatch(batch.image_index, points, labels, torch.zeros(len(points), 4, device=points.device), no_box)
    low, _ = frozen(features, prompts, None, None, multimask=True)
    cand = gate(low, batch.gt, batch.ignore, min_iou)
    boxes = jitter_boxes(cand.boxes, size, size, generator, jitter_ratio, max_jitter)
    return RefinerInputs(cand.logits, boxes, points, cand.iou, cand.kept & valid)


def _kept_mean(values: Tensor, weight: Tensor) -> Tensor:
    return (values * weight).sum() / weight.sum().clamp(min=1)


class RefinerStep(nn.Module):
    """One refiner training step: batch → ``{"loss", "focal", "dice", "iou", "train_iou", "input_iou",
    "kept"}`` (what the loop minimises and logs; what DDP wraps).

    The refiner runs on the kept masks only; a step in which nothing passes the gate runs it on one
    mask with weight 0, so its loss is 0 (zero gradient, the same graph on every rank), not a NaN.
    ``train_iou`` / ``input_iou``: mean IoU of the refined / frozen mask over the kept masks;
    ``kept``: the fraction of masks that passed the gate.
    """

    def __init__(self, refiner: SumSam, frozen: SumSam, min_iou: float = 0.7, jitter_ratio: float = 0.1,
                 max_jitter: float = 20.0) -> None:
        super().__init__()
        self.refiner = refiner
        self.frozen = frozen
        self.min_iou = min_iou
        self.jitter_ratio = jitter_ratio
        self.max_jitter = max_jitter

    def features(self, batch: MaskBatch) -> ImageFeatures:
        """Cached embeddings when the batch has them, else one no-grad pass of the frozen encoder."""
        if batch.embeddings is not None:
            return ImageFeatures(batch.embeddings)
        assert batch.images is not None
        with torch.no_grad():
            return self.refiner.encode(batch.images)

    def forward(self, batch: MaskBatch, generator: torch.Generator) -> dict[str, Tensor]:
        features = self.features(batch)
        inp = refiner_inputs(self.frozen, features, batch, generator, self.min_iou, self.jitter_ratio,
                             self.max_jitter)
        sel = inp.kept.nonzero().squeeze(1)
        if sel.numel() == 0:  # one masked-out mask keeps the graph (and DDP's reduction) whole
            sel = torch.zeros(1, dtype=torch.long, device=inp.kept.device)
        used = inp.take(sel)
        weight = used.kept.float()
        low, iou = self.refine(features, batch.image_index[sel], used)
        # human labels: c is 1 or 0 (padding, ignore), so any dice gate in (0, 1) is the same
        losses = sum_loss(low[:, 0], iou[:, 0], batch.target[sel], batch.confidence_lowres()[sel], theta=0.5)
        out = {k: _kept_mean(v, weight) for k, v in losses.items()}
        with torch.no_grad():
            size = self.refiner.image_size
            up = F.interpolate(low.detach(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
            train_iou = _kept_mean(mask_iou(up, batch.gt[sel].float(), ~batch.ignore[sel]), weight)
        return {"loss": out["focal"] + out["dice"] + out["iou"], **out, "train_iou": train_iou,
                "input_iou": _kept_mean(used.input_iou, weight), "kept": inp.kept.float().mean()}

    def refine(self, features: ImageFeatures, image_index: Tensor, inp: RefinerInputs) -> tuple[Tensor, Tensor]:
        """The refiner's (K, 1, L, L) logits and (K, 1) IoUs for K masks (``image_index`` (K,)): ``inp``'s
        mask prompt, box and positive point, one output, no task prompt — ``sumseg uncertainty``'s call."""
        labels = torch.ones(len(image_index), 1, dtype=torch.long, device=image_index.device)
        prompts = PromptBatch(image_index, inp.points, labels, inp.boxes, labels[:, 0] == 1)
        return self.refiner(features, prompts, inp.mask_input, None, multimask=False)


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
    step = RefinerStep(refiner, frozen_copy(refiner), cfg.inputs.min_iou, cfg.inputs.jitter_ratio,
                       cfg.inputs.max_jitter)
    records = [rec for path in cfg.data.labelled for rec in read_dataset(path).records]
    source = LabelledSource(records, cfg.data.masks_per_image)
    cache = None
    if cfg.data.embedding_cache is not None:
        if replica.is_main:
            EmbeddingCache(cfg.data.embedding_cache, refiner.sam).build(source.records, progress=cfg.run.progress)
        barrier(replica)
        cache = EmbeddingCache(cfg.data.embedding_cache, refiner.sam)
    seed, per_call = cfg.run.seed, cfg.data.images_per_step

    def inputs(draw: int, rep: Replica) -> tuple[MaskBatch, torch.Generator]:
        samples = draw_samples(source, seed, draw, rep.rank, rep.world, per_call)
        emb = None if cache is None else torch.stack([cache.get(content_key(s.image)) for s in samples])
        batch = collate(samples, refiner, emb).to(rep.device)
        return batch, step_generator(seed, draw, rep.rank, rep.device)

    return RefinerRun(step, inputs, params)


def train_refiner(cfg: RefinerConfig) -> dict[str, float]:
    """Train a refiner into ``cfg.run.out`` (resuming from its ``last.ckpt``); return the last logged row."""
    run = refiner_run(cfg)
    return run_loop(run.step, run.inputs, run.step.refiner, run.params, cfg.loop(), Path(cfg.run.out),
                    config_dict(cfg), cfg.data.images_per_step, cfg.run.progress)
