"""Training step benchmarks (CPU): 5 correction rounds + a final one (7 decoder calls per mask).

1. Decoder-only step (``mode=decoder``) reading embeddings from the embedding cache vs the same
   step recomputing the frozen encoder's embeddings (what a run without the cache does), on the
   tiny model (2 images × up to 4 masks) and on ViT-B (1 image × up to 2 masks, random weights).
   Both include building the batch (``inputs``). ``identical``: the cached embeddings equal the
   encoder's float32 output up to float16 rounding (the cache stores float16), checked per batch.
2. The full step (tiny, ``mode=full``) vs its network work alone: the encoder forward, the same
   7 decoder calls (with the prompts and mask inputs the step used, recorded) and the loss of each
   round, one backward — i.e. the step without the prompt sampler and the upsampling that picks
   the next point. ``identical``: the same loss, bit for bit. The ratio is the round loop's cost.
3. The step with its loss in the S×S input frame (``loss.resolution=input``, the default) vs the
   S/4 low-res frame (``lowres``) on the same batches: what the published form costs (tiny full and
   decoder modes; ViT-B decoder mode, one call each).

Times are CPU seconds of this process (``time.process_time``): on a shared machine wall time swings
by more than the differences measured here. Calls alternate between the two sides on the same
batches; each side's time is the median over the repetitions (tiny: 5 after a warm-up; vit_b: one
call each, its encoder forward alone is ~20 CPU seconds).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.run import BenchRow
from sumseg.config import TrainConfig, load_config
from sumseg.data.synthetic_world import SPLITS, write_world
from sumseg.losses import LOSS_NAMES, total
from sumseg.prompts.batch import PromptBatch
from sumseg.train.batch import MaskBatch
from sumseg.train.distributed import Replica
from sumseg.train.step import InteractiveStep, input_frame_logits
from sumseg.train.train_run import build_sources, build_training, make_inputs

REPLICA = Replica(0, 1, 0, torch.device("cpu"))
REPS = 5


def _config(root: Path, mode: str, model: str = "tiny", images: int = 2, masks: int = 4) -> TrainConfig:
    path = root / f"{mode}_{model}.yaml"
    path.write_text(f"""\
model: {{name: {model}}}
data: {{labelled: [{{path: {root / 'world' / 'task3_train'}, task: 3}}], masks_per_image: {masks},
       images_per_step: {images}}}
method: vanilla
mode: {mode}
rounds: {{corrections: 5, final_round: true}}
run: {{out: {root / f"{mode}_{model}"}, device: cpu, progress: false}}
""")
    return load_config(path)


def _forward_backward(module: InteractiveStep, args: tuple) -> float:
    loss = module(*args)["loss"]
    loss.backward()
    module.zero_grad(set_to_none=True)
    return float(loss.detach())


def _alternate(a: Callable[[int], float], b: Callable[[int], float], reps: int = REPS,
               warm_up: bool = True) -> tuple[float, float, list[tuple]]:
    """Median CPU seconds of ``a(rep)`` and ``b(rep)`` called in turn (after a warm-up call of each),
    and their results."""
    ta, tb, out = [], [], []
    for rep in range(reps + int(warm_up)):
        t0 = time.process_time()
        ra = a(rep)
        t1 = time.process_time()
        rb = b(rep)
        t2 = time.process_time()
        if rep or not warm_up:
            ta.append(t1 - t0)
            tb.append(t2 - t1)
            out.append((ra, rb))
    return statistics.median(ta), statistics.median(tb), out


def bench_decoder_cache(root: Path, model: str, images: int, masks: int, reps: int,
                        warm_up: bool = True) -> BenchRow:
    cfg = _config(root, "decoder", model, images, masks)
    s = build_training(cfg, REPLICA)  # builds the cache of the training images
    uncached = make_inputs(cfg, s.model, build_sources(cfg, s.model, REPLICA.device), None)
    computed: list[torch.Tensor] = []
    s.model.sam.image_encoder.register_forward_hook(lambda mod, args, out: computed.append(out.detach()))
    cached: list[torch.Tensor] = []

    def with_cache(draw: int) -> float:
        batch, sampler = s.inputs(draw, REPLICA)
        cached.append(batch.embeddings)  # type: ignore[arg-type]
        return _forward_backward(s.module, (batch, sampler))

    ours, ref, _ = _alternate(with_cache, lambda d: _forward_backward(s.module, uncached(d, REPLICA)), reps,
                              warm_up)
    # the cache holds float16: equal to the encoder's float32 output up to rounding (half an ulp)
    same = all(bool(((c - e).abs() <= 2**-11 * e.abs() + 3e-8).all()) for c, e in zip(cached, computed, strict=True))
    return BenchRow(f"decoder-only step ({model}, {images} img × ≤{masks} masks), embedding cache vs encoder "
                    "recomputed", ours, ref, same, "per step, batch building included; identical: embeddings "
                    "equal to float16 rounding")


class _Recorder:
    """The step's sampler, keeping what it drew (round-1 prompts, then one point per correction)."""

    def __init__(self, sampler: object) -> None:
        self.sampler, self.drawn = sampler, []

    def first(self, *args: torch.Tensor) -> PromptBatch:
        self.drawn = [self.sampler.first(*args)]  # type: ignore[attr-defined]
        return self.drawn[0]

    def correction(self, *args: torch.Tensor) -> PromptBatch:
        self.drawn.append(self.sampler.correction(*args))  # type: ignore[attr-defined]
        return self.drawn[-1]


def _network_alone(step: InteractiveStep, batch: MaskBatch, drawn: list[PromptBatch]) -> float:
    """Encoder + the step's decoder calls and round losses on recorded prompts, one backward."""
    model, prompts = step.model, drawn[0]
    features = step.features(batch)
    target, conf, _ = step._frame(batch)
    totals = {k: torch.zeros(()) for k in LOSS_NAMES}
    prev = None
    for r in range(1 + step.corrections + int(step.final_round)):
        task = batch.tasks if step.use_task and (r == 0 or step.task_rounds == "every") else None
        low, iou = model(features, prompts, prev, task, multimask=r == 0)
        logits = input_frame_logits(low, model.image_size) if step.resolution == "input" else low
        parts, best = step.loss(logits, iou, target, conf, batch.pseudo)
        totals = {k: totals[k] + parts[k] for k in LOSS_NAMES}
        prev = low[torch.arange(len(best)), best][:, None].detach()
        if r + 1 < len(drawn):
            prompts = prompts.with_points(drawn[r + 1])
    loss = total(totals)
    loss.backward()
    step.zero_grad(set_to_none=True)
    return float(loss.detach())


def bench_loss_resolution(root: Path, model: str, mode: str, images: int, masks: int, reps: int,
                          warm_up: bool = True) -> BenchRow:
    """The step with its loss in the S×S input frame (the default) vs the S/4 low-res frame, same batches."""
    s = build_training(_config(root, mode, model, images, masks), REPLICA)
    lowres = InteractiveStep(s.model, s.module.corrections, s.module.final_round, s.module.loss,
                             s.module.use_task, s.module.task_rounds, resolution="lowres")
    calls = [s.inputs(d, REPLICA) for d in range(reps + int(warm_up))]
    seeds = [_Recorder(sampler) for _, sampler in calls]
    again = [_Recorder(s.inputs(d, REPLICA)[1]) for d in range(len(calls))]
    ours, ref, _ = _alternate(lambda d: _forward_backward(s.module, (calls[d][0], seeds[d])),
                              lambda d: _forward_backward(lowres, (calls[d][0], again[d])), reps, warm_up)
    # human labels (c ≡ 1 in both frames): both steps draw the same round-1 prompts from the same seed
    same = all(torch.equal(a.drawn[0].points, b.drawn[0].points) and torch.equal(a.drawn[0].boxes, b.drawn[0].boxes)
               for a, b in zip(seeds, again, strict=True))
    return BenchRow(f"{mode} step ({model}, {images} img × ≤{masks} masks, 7 rounds), loss at the input frame "
                    "vs at low resolution", ours, ref, same,
                    f"per step; input-frame loss costs {100 * (ours / ref - 1):+.0f} %; identical: the same round-1 "
                    "prompts (different losses by design)")


def bench_round_loop(root: Path) -> BenchRow:
    s = build_training(_config(root, "full"), REPLICA)
    calls = [s.inputs(d, REPLICA) for d in range(REPS + 1)]
    recorders = [_Recorder(sampler) for _, sampler in calls]
    step = s.module
    ours, ref, losses = _alternate(lambda d: _forward_backward(step, (calls[d][0], recorders[d])),
                                   lambda d: _network_alone(step, calls[d][0], recorders[d].drawn))
    same = all(a == b for a, b in losses)
    return BenchRow("full step (tiny, 7 rounds) vs encoder fwd+bwd + 7 decoder fwd+bwd alone", ours, ref, same,
                    f"per step; the round loop adds {100 * (ours / ref - 1):+.0f} % (target ≤ 15 %)")


def bench() -> list[BenchRow]:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_world(root / "world", sizes={s: 4 if s == "task3_train" else 0 for s in SPLITS}, workers=1,
                    progress=False)
        return [bench_decoder_cache(root, "tiny", 2, 4, REPS), bench_round_loop(root),
                bench_loss_resolution(root, "tiny", "full", 2, 4, REPS),
                bench_loss_resolution(root, "tiny", "decoder", 2, 4, REPS),
                bench_decoder_cache(root, "vit_b", 1, 2, 1, warm_up=False),
                bench_loss_resolution(root, "vit_b", "decoder", 1, 2, 1, warm_up=False)]
