"""``sumseg pretrain``: train the tiny SAM on the synthetic world's general masks (task 0).

SAM-style interactive training (round 1 box or point, correction rounds, a final round) of every
weight of the ``tiny`` configuration from random initialisation, on the ``pretrain`` split: every
entity and every part, so the model learns all granularities and an IoU head that ranks them.
The result plays the foundation model in the demo (``tiny_foundation``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from sumseg.config import PretrainConfig
from sumseg.data.coco import read_coco
from sumseg.data.synthetic_world import SPLITS, write_world
from sumseg.losses import RoundLoss
from sumseg.models.checkpoint import build_model
from sumseg.train.distributed import main_first, setup
from sumseg.train.inputs import labelled_samples, step_inputs
from sumseg.train.loop import loop_config, run_loop
from sumseg.train.schedule import LabelledSource
from sumseg.train.step import InteractiveStep

PRETRAIN_LOSS = RoundLoss()
"""SAM's loss (focal weight 20, the IoU head trained on every mask; human labels: c is 1 or 0)."""


def pretrain(out_dir: Path, cfg: PretrainConfig, progress: bool = True) -> dict[str, float]:
    """Write (or reuse) the world's ``pretrain`` split under ``out_dir/world`` and train into ``out_dir``
    (also as every rank of a ``torchrun`` job: rank 0 writes the world, the others wait)."""
    out_dir = Path(out_dir)
    world = out_dir / "world"
    loop = loop_config(cfg.optim, cfg.run)
    replica = setup(loop.device)
    main_first(replica, lambda: write_world(world, seed=cfg.world_seed, progress=progress,
                                            sizes={s: cfg.images if s == "pretrain" else 0 for s in SPLITS}))
    source = LabelledSource(read_coco(world / "pretrain" / "annotations.json"), cfg.masks_per_image)
    model = build_model("tiny")
    torch.manual_seed(cfg.seed)
    # no task prompt: the foundation is a plain SAM (its task prompts stay 0); the loss at the decoder's
    # low resolution, as the shipped tiny foundation was trained (it reproduces bit for bit)
    step_module = InteractiveStep(model, cfg.corrections, cfg.final_round, PRETRAIN_LOSS, use_task=False,
                                  resolution="lowres")
    inputs = step_inputs(labelled_samples(source, cfg.seed, cfg.images_per_step), model, cfg.seed, p_box=cfg.p_box)
    params = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    return run_loop(step_module, inputs, model, params, loop, out_dir, {"pretrain": asdict(cfg)},
                    cfg.images_per_step, progress)
