"""``sumseg demo``: the end-to-end smoke run of what is built so far, on built-in data.

Until pretraining and fine-tuning land, the demo runs every built stage on the synthetic
world: it writes small test splits, builds the tiny SAM, saves a sumseg checkpoint, exports
task 1 to a stock state_dict (verified against the stock loader) and evaluates the model
with both interactive protocols on the task and general test sets. The tiny model has random
weights and small random task prompts here (so the export check has something to fold), so
its scores are near zero: the point is that every stage runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sumseg.data.synthetic_world import SPLITS, write_world
from sumseg.evaluate.run import EvalSettings, evaluate
from sumseg.models.checkpoint import build_model, save_checkpoint
from sumseg.models.export import export_checkpoint

DEMO_TEST_SPLITS: dict[str, int] = {"task1_test": 6, "task3_test": 6, "general_test": 6}


def run_demo(out_dir: Path, rounds: int = 5, progress: bool = True) -> tuple[dict, float]:
    """Run the smoke pipeline into ``out_dir``.

    Returns the evaluation's results.json dict and the export check's largest logit difference.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    world = out_dir / "world"
    write_world(world, seed=0, sizes={s: DEMO_TEST_SPLITS.get(s, 0) for s in SPLITS}, progress=progress)
    model = build_model("tiny")
    prompts = model.task_prompts.task_embeddings
    with torch.no_grad():  # small non-zero task prompts, so that the export check below is not trivially exact
        prompts.copy_(0.1 * torch.randn(prompts.shape, generator=torch.Generator().manual_seed(0)))
    ckpt = save_checkpoint(out_dir / "tiny.ckpt", model)
    _, diff = export_checkpoint(ckpt, 1, out_dir / "tiny_task1_stock.pth", verify=True)
    settings = EvalSettings(protocols=("clicks", "box"), rounds=rounds, task="auto")
    datasets = {split: world / split for split in DEMO_TEST_SPLITS}
    assert diff is not None  # verify=True always measures
    data, _ = evaluate(model, datasets, settings, out_dir / "eval", progress=progress)
    return data, diff
