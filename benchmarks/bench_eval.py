"""Interactive evaluation: sumseg's harness (``evaluate_instances``: an image's instances decoded
together, one decoder call per round) vs :func:`benchmarks.reference_eval.ritm_eval_loop` (stock
SamPredictor once per instance and round, RITM's clicker, boundary-iou-api), 20 click rounds,
oracle best-of-3 in round 1, on synthetic-world scenes (objects and parts) with the shipped
``tiny_foundation``. Results: the per-round IoU curves, checked equal.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from segment_anything import SamPredictor

from benchmarks.gpu import scenes
from benchmarks.reference_eval import ritm_eval_loop
from benchmarks.run import BenchRow
from sumseg.evaluate.interactive import Instance, evaluate_instances
from sumseg.models.checkpoint import build_model
from sumseg.models.predictor import SumPredictor

ROUNDS = 20


def bench(n_scenes: int = 6) -> list[BenchRow]:
    model = build_model("tiny_foundation").eval()
    insts = [Instance(f"s{i}m{j}", f"s{i}", image, m) for i, (image, masks, _) in enumerate(scenes(n_scenes, 256))
             for j, m in enumerate(masks)]
    ours_pred, ref_pred = SumPredictor(model), SamPredictor(model.sam)
    with torch.no_grad():
        t = time.perf_counter()
        ours = [res["clicks"].ious for _, res in evaluate_instances(ours_pred, insts, ("clicks",), ROUNDS)]
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref, current = [], None
        for inst in insts:
            if inst.image_key != current:
                ref_pred.set_image(inst.image)
                current = inst.image_key
            ref.append(ritm_eval_loop(model.sam, inst, ROUNDS, ref_pred))
        t_ref = time.perf_counter() - t
    equal = sum(bool(np.allclose(a, b, atol=1e-4)) for a, b in zip(ours, ref, strict=True))
    per_image = len(insts) / n_scenes
    return [BenchRow(f"interactive eval, {len(insts)} instances x {ROUNDS} rounds", t_ours, t_ref,
                     equal == len(insts), f"{per_image:.1f} instances per image; {equal}/{len(insts)} IoU "
                     "curves equal (1e-4); reference: stock SamPredictor per instance + RITM clicker")]
