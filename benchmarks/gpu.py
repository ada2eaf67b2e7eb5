"""Full-size SAM on one device: throughput, memory and MFU of every hot path, in one prepared command.

    python -m benchmarks.gpu --out DIR [--size tiny|full] [--budget-s 420] [--only S,..] [--skip S,..]

writes ``DIR/gpu.json`` (every figure, rewritten after each stage, so a killed run keeps what it
measured) and ``DIR/gpu.md`` (the tables). ``--size full``: ViT-B at 1024², random weights;
``--size tiny``: the registry's tiny SAM at 256² (what the test suite runs on a CPU). The device is
CUDA when there is one, else the CPU (``--device``). docs/performance.md says what each figure means.

Every figure comes with a reference measured in the same run, on the same device and input:

- ``matmul``: the measured matrix rate (bf16 on CUDA, fp32 on a CPU: the MFU denominator), and the
  other dtype's rate as its reference;
- ``sdpa_check``: SAM's ViT attention with ``scaled_dot_product_attention`` (the decomposed
  relative-position bias as ``attn_mask``) against the stock attention on random input: max |diff|;
- ``train/<setting>``: one full fine-tuning step of the project's own interactive step
  (``InteractiveStep``: 1 + 5 corrections + final round = 7 rounds; ``UncertaintySampler``;
  ``collate``; AdamW over ``param_groups``, gradient clipping), for fp32 (the reference), bf16
  autocast, bf16 + activation checkpointing of the encoder blocks, bf16 + SDPA attention, and
  bf16 + SDPA + ``torch.compile`` of the image encoder: images/s, its ratio to fp32, peak memory,
  MFU (model FLOPs counted with ``FlopCounterMode`` on the forward, ×3 for fwd + bwd; and, for
  ViT-B, from the constants 0.97 TFLOP per image for the encoder + 3.6 GFLOP per prompt per round);
- ``max_batch``: the largest number of images at 30 masks per image whose step fits (CUDA only);
- ``decoder_only``: the decoder-only step on precomputed embeddings vs recomputing the encoder;
- ``pseudo_labels``: sumseg's generator vs the stock ``SamAutomaticMaskGenerator``, same images and
  thresholds, masks matched one to one at IoU ≥ 0.99;
- ``interactive_eval``: sumseg's 20-round click protocol (``evaluate_instances``) vs the loop a user
  would otherwise write (stock ``SamPredictor`` + RITM's clicker + boundary-iou-api's boundary IoU).

Anything a stage needs is imported inside it: a stage that fails (a missing package, an
out-of-memory, an API another torch lacks) records its error and the run goes on. A global time
budget skips the stages left once it is spent and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from benchmarks.matching import match_rate

TRAIN_SETTINGS: dict[str, dict[str, Any]] = {  # name → (autocast bf16, checkpointing, SDPA, compile)
    "fp32": {"bf16": False, "ckpt": False, "sdpa": False, "compile": False},
    "bf16": {"bf16": True, "ckpt": False, "sdpa": False, "compile": False},
    "bf16_ckpt": {"bf16": True, "ckpt": True, "sdpa": False, "compile": False},
    "bf16_sdpa": {"bf16": True, "ckpt": False, "sdpa": True, "compile": False},
    "bf16_sdpa_compile": {"bf16": True, "ckpt": False, "sdpa": True, "compile": True},
}
# the order they run in: the cheap and the most asked-for first; compile (slow to warm up) and the batch
# search (which fills the rest of the budget) last
STAGES: tuple[str, ...] = ("matmul", "sdpa_check", *(f"train/{s}" for s in TRAIN_SETTINGS if s != "bf16_sdpa_compile"),
                           "decoder_only", "pseudo_labels", "interactive_eval", "train/bf16_sdpa_compile", "max_batch")
ROUNDS = 7  # 1 + 5 corrections + final
VIT_B_ENCODER_FWD_FLOP = 0.97e12  # per 1024² image
DECODER_FWD_FLOP = 3.6e9  # per prompt per round


@dataclass
class Size:
    """Everything a ``--size`` fixes."""

    model: str
    images: int  # timed training step: images × masks per image
    masks: int
    warmup: int
    reps: int
    pl_images: int
    pl_grid: int
    eval_instances: int
    eval_rounds: int = 20
    search_masks: int = 30
    search_images: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    search_cap_s: float = 35.0
    pl_model: str = ""  # pseudo-labels and evaluation: a shipped pretrained model, else ``model`` (random, sharpened)


SIZES = {
    "tiny": Size("tiny", images=2, masks=4, warmup=1, reps=2, pl_images=2, pl_grid=16, eval_instances=2,
                 pl_model="tiny_foundation"),
    "full": Size("vit_b", images=4, masks=16, warmup=2, reps=5, pl_images=4, pl_grid=32, eval_instances=8),
}


# --------------------------------------------------------------------------------------------- run state


@dataclass
class Run:
    out: Path
    size_name: str
    size: Size
    device: Any  # torch.device
    deadline: float
    t0: float
    selected: set[str]
    result: dict[str, Any] = field(default_factory=dict)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def stage(self, name: str) -> dict[str, Any]:
        return self.result["stages"].get(name, {})

    def write(self) -> None:
        self.result["elapsed_s"] = round(time.perf_counter() - self.t0, 2)
        self.out.mkdir(parents=True, exist_ok=True)
        for fname, text in (("gpu.json", json.dumps(_jsonable(self.result), indent=2) + "\n"),
                            ("gpu.md", markdown(self.result))):
            tmp = self.out / f".{fname}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / fname)


def _jsonable(o: Any) -> Any:
    """JSON-safe copy: non-finite floats → None, tensors/numpy scalars → numbers, other objects → str."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, bool | int | str) or o is None:
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if hasattr(o, "item"):
        return _jsonable(o.item())
    return str(o)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_info(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}
    with contextlib.suppress(OSError):
        info["load_avg"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    memory_bytes=int(p.total_memory), multiprocessors=int(p.multi_processor_count))
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
        info["name"] = f"CPU: {name} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return info


def peak_memory(device: Any) -> tuple[int | None, str]:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process peak RSS so far (CPU)"
    except (ImportError, OSError):  # pragma: no cover - not Linux
        return None, "n/a"


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------------------------- inputs


def scenes(n: int, size: int, seed: int = 0) -> list[tuple[Any, list[Any], list[int]]]:
    """``n`` synthetic-world scenes at ``size``²: (image (S, S, 3) uint8, masks (S, S) bool, task ids)."""
    import cv2
    import numpy as np

    from sumseg.data.synthetic import render_scene, scene_rng

    out = []
    for i in range(n):
        sc = render_scene(scene_rng(seed, "bench_gpu", i), 256)
        masks = [*sc.objects, *sc.parts]
        tasks = [1 if j == sc.salient else 2 for j in range(len(sc.objects))] + [3] * len(sc.parts)
        image = sc.image
        if size != 256:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
            masks = [cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
                     for m in masks]
        keep = [j for j, m in enumerate(masks) if m.any()]
        out.append((image, [masks[j] for j in keep], [tasks[j] for j in keep]))
    return out


def samples(pool: list, images: int, masks: int, image_size: int) -> list:
    """``images`` training samples of ``masks`` masks each (cycled from each scene's masks); odd images are
    pseudo-labelled (task 0, a random confidence map), even ones human-labelled (their task ids)."""
    import dataclasses

    import numpy as np
    import torch

    from sumseg.train.batch import MaskSample

    rng = np.random.default_rng(0)
    low = image_size // 4
    out = []
    for b in range(images):
        image, ms, tasks = pool[b % len(pool)]
        idx = [k % len(ms) for k in range(masks)]
        pseudo = b % 2 == 1
        conf = torch.as_tensor(rng.uniform(0.2, 1.0, (masks, low, low)).astype(np.float32)) if pseudo else None
        extra = {"pseudo": pseudo} if "pseudo" in {f.name for f in dataclasses.fields(MaskSample)} else {}
        out.append(MaskSample(image=image, masks=np.stack([ms[k] for k in idx]),
                              tasks=np.zeros(masks, np.int64) if pseudo else np.array([tasks[k] for k in idx]),
                              confidence=conf, **extra))
    return out


def slice_batch(batch: Any, images: int) -> Any:
    """The first ``images`` images of a :class:`MaskBatch` and their masks (every per-mask field sliced)."""
    import dataclasses

    sel = batch.image_index < images
    kw = {}
    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if v is not None and f.name in ("images", "embeddings"):
            v = v[:images]
        elif hasattr(v, "shape") and v.shape[:1] == batch.image_index.shape:
            v = v[sel]
        kw[f.name] = v
    return type(batch)(**kw)


# --------------------------------------------------------------------------------------------- model patches


def make_sdpa_forward() -> Callable[[Any, Any], Any]:
    """SAM ViT ``Attention.forward`` with ``scaled_dot_product_attention``; the decomposed relative-position
    bias (``add_decomposed_rel_pos``, from the unscaled q as in the stock code) goes in as ``attn_mask``.

    Imports happen here, once, so the forward itself holds none (``torch.compile`` traces it whole)."""
    import torch
    import torch.nn.functional as F
    from segment_anything.modeling.image_encoder import get_rel_pos

    def sdpa_forward(self: Any, x: Any) -> Any:
        b, h, w, _ = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, nh, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, nH, L, C)
        bias = None
        if self.use_rel_pos:
            rh = get_rel_pos(h, h, self.rel_pos_h)
            rw = get_rel_pos(w, w, self.rel_pos_w)
            r_q = q.reshape(b, nh, h, w, -1)
            rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
            rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, nh, h * w, h * w).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.view(b, nh, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)

    return sdpa_forward


def patch_sdpa(attn: Any) -> Any:
    """Give one SAM ViT ``Attention`` module the SDPA forward (in place); returns it."""
    attn.forward = types.MethodType(make_sdpa_forward(), attn)
    return attn


def vit_attentions(model: Any) -> list[Any]:
    from segment_anything.modeling.image_encoder import Attention

    return [m for m in model.sam.image_encoder.modules() if isinstance(m, Attention)]


def use_sdpa(model: Any) -> int:
    mods = vit_attentions(model)
    for m in mods:
        patch_sdpa(m)
    return len(mods)


def use_checkpointing(model: Any) -> int:
    """Activation checkpointing around each block of the image encoder (non-reentrant)."""
    from torch.utils.checkpoint import checkpoint

    blocks = list(model.sam.image_encoder.blocks)
    for blk in blocks:
        plain = blk.forward
        blk.forward = lambda x, plain=plain: checkpoint(plain, x, use_reentrant=False)
    return len(blocks)


# --------------------------------------------------------------------------------------------- stages


def stage_matmul(run: Run) -> dict[str, Any]:
    import torch

    def rate(dtype: Any, n: int, iters: int) -> float:
        """The best of 3 timings of ``iters`` products (a shared CPU's load only ever slows one down)."""
        a = torch.randn(n, n, device=run.device, dtype=dtype)
        b = torch.randn(n, n, device=run.device, dtype=dtype)
        for _ in range(3):
            a @ b
        best = math.inf
        for _ in range(3):
            _sync(run.device)
            t = time.perf_counter()
            for _ in range(iters):
                a @ b
            _sync(run.device)
            best = min(best, time.perf_counter() - t)
        return 2 * n**3 * iters / best / 1e12

    if run.cuda:
        main_dt, n, iters, other_dt, other_n, other_iters = torch.bfloat16, 8192, 10, torch.float32, 8192, 3
    else:
        main_dt, n, iters, other_dt, other_n, other_iters = torch.float32, 1024, 4, torch.bfloat16, 512, 2
    main = rate(main_dt, n, iters)
    other = rate(other_dt, other_n, other_iters)
    name = lambda d: str(d).removeprefix("torch.")  # noqa: E731
    return {"dtype": name(main_dt), "n": n, "iters": iters, "tflops": main, "reference_dtype": name(other_dt),
            "reference_n": other_n, "reference_tflops": other, "ratio": main / other,
            "note": "MFU denominator = tflops (bf16 on CUDA, fp32 on CPU); random data, 3 warm-ups, best of 3 "
                    "timings of `iters` products"}


def stage_sdpa_check(run: Run) -> dict[str, Any]:
    import copy

    import torch

    from sumseg import build_model

    model = build_model(run.size.model)
    enc = model.sam.image_encoder
    emb = enc.img_size // enc.patch_embed.proj.kernel_size[0]
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    for kind, blk in (("global", next(b for b in enc.blocks if b.window_size == 0)),
                      ("window", next(b for b in enc.blocks if b.window_size > 0))):
        side = emb if kind == "global" else blk.window_size
        ref = copy.deepcopy(blk.attn).to(run.device).float()
        with torch.no_grad():  # rel-pos tables are zero-initialised: make them random so the bias matters
            for p in (ref.rel_pos_h, ref.rel_pos_w):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        sdp = patch_sdpa(copy.deepcopy(ref))
        x = torch.randn(2, side, side, enc.patch_embed.proj.out_channels, generator=gen).to(run.device)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ref(xa), sdp(xb)
        g = torch.randn(ya.shape, generator=gen).to(run.device)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        grads = [(xa.grad, xb.grad), (ref.rel_pos_h.grad, sdp.rel_pos_h.grad),
                 (ref.qkv.weight.grad, sdp.qkv.weight.grad)]
        ya, yb = ya.detach(), yb.detach()
        out[kind] = {"shape": list(x.shape), "max_abs_diff_fp32": float((ya - yb).abs().max()),
                     "max_abs_output": float(ya.abs().max()),
                     "max_abs_grad_diff_fp32": max(float((a - b).abs().max()) for a, b in grads)}
        if run.cuda:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                out[kind]["max_abs_diff_bf16_vs_fp32_stock"] = float((sdp(x).float() - ya).abs().max())
                out[kind]["max_abs_diff_bf16_stock_vs_fp32_stock"] = float((ref(x).float() - ya).abs().max())
    out["max_abs_diff_fp32"] = max(out[k]["max_abs_diff_fp32"] for k in ("global", "window"))
    out["max_abs_grad_diff_fp32"] = max(out[k]["max_abs_grad_diff_fp32"] for k in ("global", "window"))
    out["note"] = "stock Attention vs the SDPA forward on random input with random rel-pos tables, fp32"
    return out


class _Trainer:
    """One model + the project's step + AdamW, for one setting."""

    def __init__(self, run: Run, setting: dict[str, Any], decoder_only: bool = False) -> None:
        import torch

        from sumseg import build_model
        from sumseg.train.optim import param_groups
        from sumseg.train.step import InteractiveStep

        self.run, self.setting = run, setting
        self.model = build_model(run.size.model).to(run.device).train()
        for p in self.model.parameters():
            p.requires_grad_(True)
        if decoder_only:
            for p in self.model.sam.image_encoder.parameters():
                p.requires_grad_(False)
        self.patched: dict[str, Any] = {}
        if setting["sdpa"]:
            self.patched["sdpa_attentions"] = use_sdpa(self.model)
        if setting["ckpt"]:
            self.patched["checkpointed_blocks"] = use_checkpointing(self.model)
        if setting["compile"]:
            self.model.sam.image_encoder.compile()
        # the project's defaults for everything but the rounds (loss, its resolution, task rounds)
        self.step = InteractiveStep(self.model, corrections=5, final_round=True)
        self.patched["step"] = {k: str(v) for k, v in vars(self.step).items()
                                if not k.startswith("_") and k not in ("model", "training")}
        groups = param_groups(self.model, len(self.model.sam.image_encoder.blocks), 1e-5, 0.8, 0.1, 1.0)
        kw = {"fused": True} if run.cuda else {}
        self.opt = torch.optim.AdamW(groups, lr=1e-5, **kw)
        self.gen = torch.Generator(device=run.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        return torch.autocast(self.run.device.type, dtype=torch.bfloat16) if self.setting["bf16"] \
            else contextlib.nullcontext()

    def sampler(self, seed: int) -> Any:
        from sumseg.prompts.sampler import UncertaintySampler

        self.gen.manual_seed(seed)
        return UncertaintySampler(self.gen, p_box=0.5)

    def __call__(self, batch: Any, seed: int = 0) -> float:
        """One training step (sampler + 7 rounds + losses + backward + clip + AdamW); returns the loss."""
        import torch

        with self.autocast():
            losses = self.step(batch, self.sampler(seed))
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(losses["loss"].detach())

    def count_flops(self, batch: Any) -> float:
        """Model FLOPs of one step's forward (FlopCounterMode: matmuls, convolutions, attention)."""
        from torch.utils.flop_counter import FlopCounterMode

        # with autograd on: FlopCounterMode's module tracker hooks the outputs' gradients (under no_grad it
        # fails on SAM's prompt encoder); the graph is dropped without a backward
        with FlopCounterMode(display=False) as fc:
            losses = self.step(batch, self.sampler(0))
        del losses
        return float(fc.get_total_flops())


def _timed(fn: Callable[[int], Any], device: Any, warmup: int, reps: int, run: Run,
           ) -> tuple[list[float], list[Any], float]:
    """Times of ``reps`` calls ``fn(i)`` after ``warmup`` ones (each synchronised); also every call's result
    (warm-ups first) and the warm-up time. Stops early (after one timed call) once the run's budget is spent."""
    outs = []
    t = time.perf_counter()
    for i in range(warmup):
        outs.append(fn(i))
    _sync(device)
    warm = time.perf_counter() - t
    times = []
    for i in range(reps):
        if times and run.left() < 0:
            break
        t = time.perf_counter()
        outs.append(fn(warmup + i))
        _sync(device)
        times.append(time.perf_counter() - t)
    return times, outs, warm


_FLOPS_CACHE: dict[tuple, float] = {}


def _train_batch(run: Run, images: int, masks: int, model: Any) -> Any:
    from sumseg.train.batch import collate

    pool = scenes(min(images, 8), model.image_size)
    return collate(samples(pool, images, masks, model.image_size), model).to(run.device)


def stage_train(run: Run, name: str, images: int | None = None, masks: int | None = None) -> dict[str, Any]:
    setting = TRAIN_SETTINGS[name]
    images, masks = images or run.size.images, masks or run.size.masks
    reset_peak(run.device)
    tr = _Trainer(run, setting)
    batch = _train_batch(run, images, masks, tr.model)
    key = (run.size.model, images, masks)
    if key not in _FLOPS_CACHE:  # counted on the plain fp32 model (a compiled or patched one counts differently)
        plain = tr if name == "fp32" else _Trainer(run, TRAIN_SETTINGS["fp32"])
        _FLOPS_CACHE[key] = 3 * plain.count_flops(batch)
        del plain
        _free(run.device)
        reset_peak(run.device)
    flop = _FLOPS_CACHE[key]
    times, losses, warm = _timed(lambda i: tr(batch, seed=i), run.device, run.size.warmup, run.size.reps, run)
    step_s = statistics.median(times)
    mem, mem_kind = peak_memory(run.device)
    rate = run.stage("matmul").get("tflops")
    out: dict[str, Any] = {
        "setting": setting, **tr.patched, "images": images, "masks_per_image": masks, "rounds": ROUNDS,
        "step_s": step_s, "step_s_all": times, "warmup_s": warm, "images_per_s": images / step_s,
        "peak_memory_bytes": mem, "peak_memory_kind": mem_kind, "first_loss": losses[0],
        "model_tflop_per_step": flop / 1e12, "achieved_tflops": flop / step_s / 1e12,
        "mfu": flop / step_s / 1e12 / rate if rate else None, "mfu_denominator_tflops": rate,
    }
    if run.size.model == "vit_b":
        const = 3 * (VIT_B_ENCODER_FWD_FLOP * images + DECODER_FWD_FLOP * images * masks * ROUNDS)
        out["model_tflop_per_step_constants"] = const / 1e12
        out["mfu_constants"] = const / step_s / 1e12 / rate if rate else None
    ref = run.stage("train/fp32")
    if name == "fp32":
        out["ratio_vs_fp32"] = 1.0
    elif ref.get("status") == "ok" and ref.get("images") == images and ref.get("masks_per_image") == masks:
        out["ratio_vs_fp32"] = out["images_per_s"] / ref["images_per_s"]
        if ref.get("first_loss"):
            out["first_loss_rel_diff_vs_fp32"] = abs(losses[0] - ref["first_loss"]) / abs(ref["first_loss"])
    if setting["compile"]:
        out["compile_warmup_s"] = warm
    return out


def stage_max_batch(run: Run) -> dict[str, Any]:
    """Largest number of images (``search_masks`` masks each) whose training step fits, per setting:
    doubling, then bisection, each setting capped at ``search_cap_s`` seconds."""
    import torch

    if not run.cuda:
        return {"skipped_reason": "n/a on CPU (no device memory to fill)"}
    s = run.size
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    out: dict[str, Any] = {"masks_per_image": s.search_masks, "candidates": list(s.search_images)}
    big = None
    for name in ("fp32", "bf16", "bf16_ckpt", "bf16_sdpa"):
        if run.left() < 10:
            out[name] = {"skipped_reason": "time budget spent"}
            continue
        t_end = time.perf_counter() + min(s.search_cap_s, run.left())
        tr = _Trainer(run, TRAIN_SETTINGS[name])
        if big is None:
            big = _train_batch(run, max(s.search_images), s.search_masks, tr.model).to("cpu")
        tried: dict[int, Any] = {}

        def fits(n: int, tr: _Trainer = tr, big: Any = big, tried: dict = tried) -> bool:
            b = None
            try:
                reset_peak(run.device)
                b = slice_batch(big, n).to(run.device)
                t = time.perf_counter()
                tr(b)
                _sync(run.device)
                tried[n] = {"fits": True, "step_s": time.perf_counter() - t,
                            "peak_memory_bytes": peak_memory(run.device)[0]}
                return True
            except (oom, RuntimeError) as e:  # cuBLAS/cuDNN report an allocation failure as a RuntimeError
                if not isinstance(e, oom) and "memory" not in str(e).lower() and "ALLOC" not in str(e):
                    raise
                tried[n] = {"fits": False}
                return False
            finally:
                del b
                tr.opt.zero_grad(set_to_none=True)
                _free(run.device)

        lo, hi, capped = 0, None, False
        for n in s.search_images:
            if time.perf_counter() > t_end:
                capped = True
                break
            if fits(n):
                lo = n
            else:
                hi = n
                break
        while hi is not None and hi - lo > 1 and not capped:
            if time.perf_counter() > t_end:
                capped = True
                break
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        out[name] = {"largest_images": lo, "first_oom_images": hi, "capped_by_time": capped,
                     "at_least": hi is None, "tried": {str(k): v for k, v in sorted(tried.items())},
                     "peak_memory_bytes": tried.get(lo, {}).get("peak_memory_bytes")}
        del tr, fits  # fits holds the trainer too: free this setting's model before the next is built
        _free(run.device)
    out["note"] = (f"images × {s.search_masks} masks × {ROUNDS} rounds; one full step (AdamW included) per try; "
                   "'at_least' = no OOM reached (the largest candidate fitted, or the time cap stopped the search)")
    return out


def stage_decoder_only(run: Run) -> dict[str, Any]:
    import torch

    from sumseg.train.batch import collate

    s = run.size
    bf16 = run.cuda
    tr = _Trainer(run, {**TRAIN_SETTINGS["bf16" if bf16 else "fp32"]}, decoder_only=True)
    model = tr.model
    pool = scenes(min(s.images, 8), model.image_size)
    smp = samples(pool, s.images, s.masks, model.image_size)
    with_images = collate(smp, model).to(run.device)
    with torch.no_grad():  # what the embedding cache holds (float16 on disk)
        emb = model.encode(with_images.images).embeddings.half().float()
    cached = collate(smp, model, emb.cpu()).to(run.device)
    ours_t, ref_t = [], []
    for i in range(s.warmup + s.reps):
        if i > s.warmup and run.left() < 0:
            break
        for b, acc in ((cached, ours_t), (with_images, ref_t)):
            _sync(run.device)
            t = time.perf_counter()
            tr(b, seed=i)
            _sync(run.device)
            if i >= s.warmup:
                acc.append(time.perf_counter() - t)
    ours, ref = statistics.median(ours_t), statistics.median(ref_t)
    return {"precision": "bf16" if bf16 else "fp32", "images": s.images, "masks_per_image": s.masks,
            "rounds": ROUNDS, "cached_step_s": ours, "recompute_step_s": ref, "ratio": ref / ours,
            "cached_images_per_s": s.images / ours, "recompute_images_per_s": s.images / ref,
            "note": "encoder frozen; ours reads precomputed (float16-rounded) embeddings, the reference runs the "
                    "encoder (no grad) every step; batches built once, calls alternate"}


def _pl_model(size: Size, device: Any) -> Any:
    """The size's pretrained model (the shipped tiny foundation), or a random-weight SAM whose mask logits are
    scaled ×50 so that stability varies as a trained SAM's does (benchmarks/bench_pseudo_labels.py)."""
    import torch

    from sumseg import build_model

    if size.pl_model:
        return build_model(size.pl_model).to(device).eval()
    model = build_model(size.model).to(device).eval()
    with torch.no_grad():
        for mlp in model.sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(50.0)
    return model


def stage_pseudo_labels(run: Run) -> dict[str, Any]:
    import numpy as np
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from sumseg.config import PseudoLabelSettings
    from sumseg.data.embedding_cache import encode_image
    from sumseg.pipeline.amg import calibrate, label_image

    s = run.size
    model = _pl_model(s, run.device)
    # non-square images (4:3), so the padding and the upsampling to the image's size are exercised
    rgbs = [np.ascontiguousarray(im[: im.shape[0] * 3 // 4]) for im, _, _ in scenes(s.pl_images, model.image_size)]
    feats = {p: (encode_image(model.sam, rgb)[None], rgb.shape[:2]) for p, rgb in enumerate(rgbs)}
    quantile = PseudoLabelSettings(points_per_side=s.pl_grid, pred_iou_thresh="q0.7", stability_score_thresh="q0.5")
    thr, _ = calibrate(model, lambda p: feats[p], list(feats), quantile)
    feats.clear()
    settings = PseudoLabelSettings(points_per_side=s.pl_grid, max_area_ratio=2.0, min_area_ratio=0.0)
    stock = SamAutomaticMaskGenerator(model.sam, points_per_side=s.pl_grid, points_per_batch=64,
                                      pred_iou_thresh=thr["pred_iou_thresh"],
                                      stability_score_thresh=thr["stability_score_thresh"], output_mode="coco_rle")

    def ours(rgb: np.ndarray) -> Any:
        return label_image(model, encode_image(model.sam, rgb)[None], rgb.shape[:2], settings, thr)[0]

    if run.cuda:  # warm-up of both on the first image
        ours(rgbs[0])
        stock.generate(rgbs[0])
    t_ours = t_ref = 0.0
    matched = total = n_ours = n_ref = 0
    done = 0
    with torch.inference_mode():
        for rgb in rgbs:
            if done and run.left() < 0:
                break
            _sync(run.device)
            t = time.perf_counter()
            labels = ours(rgb)
            _sync(run.device)
            t1 = time.perf_counter()
            ref = stock.generate(rgb)
            _sync(run.device)
            t_ours, t_ref = t_ours + t1 - t, t_ref + time.perf_counter() - t1
            a, n = match_rate(labels.rles, [r["segmentation"] for r in ref])
            matched, total, n_ours, n_ref, done = matched + a, total + n, n_ours + len(labels.rles), \
                n_ref + len(ref), done + 1
    return {"images": done, "image_hw": list(rgbs[0].shape[:2]), "grid": s.pl_grid, "points_per_batch": 64,
            "thresholds": thr, "ours_images_per_s": done / t_ours, "stock_images_per_s": done / t_ref,
            "ratio": t_ref / t_ours, "ours_masks": n_ours, "stock_masks": n_ref, "matched": matched,
            "matched_of": total, "one_to_one": matched == total and n_ours == n_ref,
            "model": s.pl_model or f"{s.model} (random weights, hypernetwork ×50)",
            "note": "thresholds = quantiles q0.7 / q0.5 of the model's own scores, given to both; our area filters "
                    "off (the stock generator has none); encoder pass included"}


def stage_interactive_eval(run: Run) -> dict[str, Any]:
    import numpy as np
    import torch
    from segment_anything import SamPredictor

    from benchmarks.reference_eval import ritm_eval_loop
    from sumseg.evaluate.interactive import Instance, evaluate_instances
    from sumseg.models.predictor import SumPredictor

    s = run.size
    model = _pl_model(s, run.device)
    insts = []
    for i, (image, masks, _) in enumerate(scenes(max(1, (s.eval_instances + 1) // 2), model.image_size)):
        for j, m in enumerate(masks[:2]):
            insts.append(Instance(f"s{i}m{j}", f"s{i}", image, m))
    insts = insts[: s.eval_instances]
    ours_pred, ref_pred = SumPredictor(model), SamPredictor(model.sam)
    if run.cuda:  # warm-up
        list(evaluate_instances(ours_pred, insts[:1], ("clicks",), 2))
        ref_pred.set_image(insts[0].image)
        ritm_eval_loop(model.sam, insts[0], 2, ref_pred)
    with torch.no_grad():
        _sync(run.device)
        t = time.perf_counter()
        ours = [res["clicks"].ious for _, res in evaluate_instances(ours_pred, insts, ("clicks",), s.eval_rounds)]
        _sync(run.device)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref, current = [], None
        for inst in insts:
            if inst.image_key != current:
                ref_pred.set_image(inst.image)
                current = inst.image_key
            ref.append(ritm_eval_loop(model.sam, inst, s.eval_rounds, ref_pred))
        _sync(run.device)
        t_ref = time.perf_counter() - t
    equal = sum(len(a) == len(b) and bool(np.allclose(a, b, atol=1e-6)) for a, b in zip(ours, ref, strict=True))
    n = len(insts)
    return {"instances": n, "rounds": s.eval_rounds, "image_hw": list(insts[0].image.shape[:2]),
            "ours_instances_per_s": n / t_ours, "reference_instances_per_s": n / t_ref, "ratio": t_ref / t_ours,
            "equal_iou_curves": equal, "model": s.pl_model or f"{s.model} (random weights, hypernetwork ×50)",
            "final_miou_ours": float(np.mean([c[-1] for c in ours])),
            "final_miou_reference": float(np.mean([c[-1] for c in ref])),
            "note": "clicks protocol, oracle best-of-3 in round 1, previous logits fed back, IoU + boundary IoU per "
                    "round; reference = stock SamPredictor + RITM's clicker + boundary-iou-api (benchmarks/)"}


# --------------------------------------------------------------------------------------------- driver


def _stage_fn(name: str) -> Callable[[Run], dict[str, Any]]:
    if name.startswith("train/"):
        setting = name.removeprefix("train/")
        return lambda run: stage_train(run, setting)
    return globals()[f"stage_{name}"]


def run_stage(run: Run, name: str, fn: Callable[[Run], dict[str, Any]]) -> None:
    """Run one stage into ``run.result["stages"][name]`` (ok / skipped with a reason / error with its
    traceback), then rewrite the output files."""
    stages = run.result["stages"]
    need = 60.0 if (name.endswith("_compile") and run.cuda) else 1.0
    if name not in run.selected:
        stages[name] = {"status": "skipped", "reason": "not selected (--only/--skip)"}
    elif run.left() < need:
        stages[name] = {"status": "skipped", "reason": f"time budget spent ({run.result['budget_s']:.0f} s; "
                                                       f"{max(0.0, run.left()):.0f} s left, {need:.0f} s needed)"}
        run.result["budget_exhausted"] = True
        run.result["stopped_stages"].append(name)
    else:
        print(f"[bench-gpu] {name} ... ({run.left():.0f} s left)", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            res = fn(run)
            if "skipped_reason" in res:
                stages[name] = {"status": "skipped", "reason": res.pop("skipped_reason"), **res}
            else:
                stages[name] = {"status": "ok", **res}
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the run goes on
            stages[name] = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000],
                            "traceback": traceback.format_exc()[-4000:]}
        stages[name]["wall_s"] = time.perf_counter() - t
        _free(run.device)
    run.write()


def _fmt(v: Any, spec: str = ".3g", unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:{spec}}{unit}"


def _gib(b: Any) -> str:
    return "–" if b is None else f"{b / 2**30:.2f} GiB"


def markdown(r: dict[str, Any]) -> str:
    st, dev = r["stages"], r["device"]
    lines = [f"# bench-gpu: {r['model']} at {r['image_size']}², {dev.get('name')}", "",
             f"{r['date']}; torch {dev['torch']}, Python {dev['python']}"
             + (f", CUDA {dev['cuda']}" if dev.get("cuda") else "")
             + (f"; load average {dev['load_avg']}" if dev.get("load_avg") else "")
             + f"; budget {r['budget_s']:.0f} s, elapsed {r.get('elapsed_s', 0):.0f} s"
             + ("; **budget spent, stages skipped: " + ", ".join(r["stopped_stages"]) + "**"
                if r.get("budget_exhausted") else ""), ""]
    m = st.get("matmul", {})
    if m.get("status") == "ok":
        lines += [f"Matrix rate (MFU denominator): {m['dtype']} {m['n']}³ **{m['tflops']:.3g} TFLOP/s**; "
                  f"{m['reference_dtype']} {m['reference_n']}³ {m['reference_tflops']:.3g} TFLOP/s "
                  f"(ratio {m['ratio']:.2f}).", ""]
    sd = st.get("sdpa_check", {})
    if sd.get("status") == "ok":
        lines += [f"SDPA attention vs stock (fp32, random input and rel-pos): max |Δ| output "
                  f"{sd['max_abs_diff_fp32']:.1e}, gradients {sd['max_abs_grad_diff_fp32']:.1e}.", ""]
    lines += ["## Training step (full fine-tuning, 7 rounds)", "",
              "| setting | status | batch | step (s) | images/s | × fp32 | peak memory | MFU | MFU (constants) "
              "| loss Δ vs fp32 |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in TRAIN_SETTINGS:
        t = st.get(f"train/{s}", {})
        if t.get("status") != "ok":
            lines.append(f"| {s} | {t.get('status', '–')}: {t.get('reason') or t.get('error', '')} "
                         "| | | | | | | | |")
            continue
        lines.append(f"| {s} | ok | {t['images']} × {t['masks_per_image']} | {t['step_s']:.3g} | "
                     f"{t['images_per_s']:.3g} | {_fmt(t.get('ratio_vs_fp32'), '.2f', '×')} | "
                     f"{_gib(t['peak_memory_bytes'])} | {_fmt(t.get('mfu'), '.1%')} | "
                     f"{_fmt(t.get('mfu_constants'), '.1%')} | {_fmt(t.get('first_loss_rel_diff_vs_fp32'), '.1e')} |")
    lines += ["", "## Other hot paths", "", "| stage | status | ours | reference | ratio | note |",
              "|---|---|---:|---:|---:|---|"]

    def row(name: str, ours: str, ref: str, ratio: Any, note: str) -> None:
        x = st.get(name, {})
        if x.get("status") != "ok":
            lines.append(f"| {name} | {x.get('status', '–')}: {x.get('reason') or x.get('error', '')} | | | | |")
        else:
            lines.append(f"| {name} | ok | {ours} | {ref} | {_fmt(ratio, '.2f', '×')} | {note} |")

    d = st.get("decoder_only", {})
    row("decoder_only", f"{_fmt(d.get('cached_images_per_s'))} img/s cached",
        f"{_fmt(d.get('recompute_images_per_s'))} img/s encoder recomputed", d.get("ratio"),
        f"{d.get('precision')}, {d.get('images')} × {d.get('masks_per_image')}")
    p = st.get("pseudo_labels", {})
    row("pseudo_labels", f"{_fmt(p.get('ours_images_per_s'))} img/s", f"{_fmt(p.get('stock_images_per_s'))} img/s "
        "stock AMG", p.get("ratio"), f"{p.get('matched')}/{p.get('matched_of')} masks matched one to one "
        f"(IoU ≥ 0.99), {p.get('grid')}² grid, {p.get('images')} images {p.get('image_hw')}")
    e = st.get("interactive_eval", {})
    row("interactive_eval", f"{_fmt(e.get('ours_instances_per_s'))} inst/s",
        f"{_fmt(e.get('reference_instances_per_s'))} inst/s SamPredictor + RITM", e.get("ratio"),
        f"{e.get('instances')} instances × {e.get('rounds')} rounds; {e.get('equal_iou_curves')} equal IoU curves")
    mb = st.get("max_batch", {})
    lines += ["", "## Largest batch", ""]
    if mb.get("status") != "ok":
        lines.append(f"max_batch: {mb.get('status', '–')}: {mb.get('reason') or mb.get('error', '')}")
    else:
        lines += [f"Images × {mb['masks_per_image']} masks × {ROUNDS} rounds, one full step per try.", "",
                  "| setting | largest images | first OOM | peak memory | capped by time |",
                  "|---|---:|---:|---:|:---:|"]
        for s in ("fp32", "bf16", "bf16_ckpt", "bf16_sdpa"):
            x = mb.get(s, {})
            if "largest_images" not in x:
                lines.append(f"| {s} | {x.get('skipped_reason', '–')} | | | |")
                continue
            lines.append(f"| {s} | {'≥' if x['at_least'] else ''}{x['largest_images']} | "
                         f"{_fmt(x['first_oom_images'], 'd')} | {_gib(x['peak_memory_bytes'])} | "
                         f"{'yes' if x['capped_by_time'] else 'no'} |")
    errors = [f"- {k}: {v['error']}" for k, v in st.items() if v.get("status") == "error"]
    if errors:
        lines += ["", "## Errors", "", *errors]
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (gpu.json, gpu.md)")
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    ap.add_argument("--budget-s", type=float, default=420.0, help="global time budget (seconds)")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--only", default="", help="comma-separated stages to run (prefix match; matmul always runs)")
    ap.add_argument("--skip", default="", help="comma-separated stages to skip (prefix match)")
    ap.add_argument("--images", type=int, help="images per training step (default: the size's)")
    ap.add_argument("--masks", type=int, help="masks per image of the training step (default: the size's)")
    ap.add_argument("--reps", type=int, help="timed repetitions (default: the size's)")
    ap.add_argument("--warmup", type=int, help="warm-up repetitions (default: the size's)")
    ap.add_argument("--set", default="", metavar="FIELD=V,..",
                    help=f"override fields of the size: {', '.join(f.name for f in fields(Size))}")
    return ap.parse_args(argv)


def _overrides(spec: str) -> dict[str, Any]:
    """``"pl_images=1,reps=1"`` → typed :class:`Size` field values."""
    known = {f.name: f for f in fields(Size)}
    out: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--set: {item!r} is not FIELD=VALUE with FIELD one of {', '.join(known)}")
        default = getattr(SIZES["tiny"], key)
        out[key] = value if isinstance(default, str) else (
            tuple(int(v) for v in value.split("/")) if isinstance(default, tuple) else type(default)(value))
    return out


def _select(only: str, skip: str) -> set[str]:
    def match(spec: str) -> set[str]:
        items = [x.strip() for x in spec.split(",") if x.strip()]
        unknown = [x for x in items if not any(st.startswith(x) for st in STAGES)]
        if unknown:
            raise SystemExit(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")
        return {st for st in STAGES if any(st.startswith(x) for x in items)}

    selected = (match(only) | {"matmul"}) if only.strip() else set(STAGES)
    return selected - match(skip)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the result dict (also written to ``--out``)."""
    args = _parse(argv)
    t0 = time.perf_counter()
    import torch

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    size = SIZES[args.size]
    size = replace(size, **{k: v for k, v in (("images", args.images), ("masks", args.masks), ("reps", args.reps),
                                              ("warmup", args.warmup)) if v is not None}, **_overrides(args.set))
    run = Run(args.out, args.size, size, device, t0 + args.budget_s, t0, _select(args.only, args.skip))
    model_size = {"tiny": 256}.get(size.model, 1024)
    run.result = {"schema": 1, "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                  "command": " ".join(["python -m benchmarks.gpu", *(argv if argv is not None else sys.argv[1:])]),
                  "size": args.size, "model": size.model, "image_size": model_size, "device": device_info(device),
                  "budget_s": args.budget_s, "budget_exhausted": False, "stopped_stages": [], "stages": {}}
    torch.manual_seed(0)
    for name in STAGES:
        run_stage(run, name, _stage_fn(name))
    run.write()
    return run.result


if __name__ == "__main__":
    res = main()
    bad = [k for k, v in res["stages"].items() if v["status"] == "error"]
    print(f"[bench-gpu] wrote {Path(_parse(None).out) / 'gpu.json'}; errors: {bad or 'none'}", file=sys.stderr)
    sys.exit(0)
