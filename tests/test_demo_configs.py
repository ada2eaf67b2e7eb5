"""The demo builds its runs' configs as objects (``sumseg.demo.stages``); they equal what the override
strings it wrote before gave through ``load_config`` / ``load_refiner_config``, key for key and in the
saved ``config.yaml`` text, for every method and both presets."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from sumseg.config import load_config, load_refiner_config, refiner_config_dict, to_yaml
from sumseg.demo import stages
from sumseg.demo.context import Ctx
from sumseg.demo.settings import FULL, METHODS, QUICK, TRUE_U, DemoSettings


def _old_train_overrides(ctx: Ctx, method: str, seed: int) -> list[str]:
    """The override strings the demo gave ``load_config`` before (kept here as the reference); the
    ``sum_true_u`` diagnostic is ``method=sum`` on the store with the true U maps, in its own run folder."""
    t = ctx.settings.train
    run_dir, store = ctx.run_dir(method, seed), ctx.store
    if method == TRUE_U:
        method, store = "sum", ctx.true_u_store
    labelled = ", ".join(f"{{path: {json.dumps(str(p))}, task: {k}}}" for k, p in ctx.labelled_sets().items())
    out = ["model.name=null", f"model.checkpoint={json.dumps(str(ctx.foundation))}",
           f"data.labelled=[{labelled}]", f"data.ratio=[{t.ratio[0]}, {t.ratio[1]}]",
           f"data.masks_per_image={t.masks_per_image}", f"data.images_per_step={t.images_per_step}",
           f"method={method}", "mode=decoder", f"rounds.corrections={t.corrections}",
           f"rounds.task_prompt={t.task_prompt}", f"loss.theta={t.theta}", f"loss.resolution={t.loss_resolution}",
           f"loss.iou_head_on_pseudo={str(t.iou_head_on_pseudo).lower()}",
           f"optim.train_task0={str(t.train_task0).lower()}",
           f"optim.lr={t.lr}", f"optim.warmup={t.warmup}", f"optim.steps={t.steps}",
           f"optim.task_lr_mult={t.task_lr_mult}", f"run.out={json.dumps(str(run_dir))}",
           f"run.seed={seed}", f"run.save_every={max(1, t.steps // 2)}", "run.device=cpu", "run.progress=false"]
    if method != "vanilla":
        out.append(f"data.pseudo_labels={json.dumps(str(store))}")
    if method in ("sum", "sum_no_task") and t.max_mask_uncertainty is not None:
        out.append(f"data.max_mask_uncertainty={t.max_mask_uncertainty}")
    if method == "refined_labels":
        out.append(f"data.refiner={json.dumps(str(ctx.refiner / 'last.ckpt'))}")
    return out


def _old_refiner_overrides(ctx: Ctx) -> list[str]:
    s = ctx.settings
    return ["model.name=null", f"model.checkpoint={json.dumps(str(ctx.foundation))}",
            f"data.labelled=[{', '.join(json.dumps(str(p)) for p in ctx.labelled_sets().values())}]",
            f"data.embedding_cache={json.dumps(str(ctx.refiner / 'embeddings'))}",
            f"optim.steps={s.refiner_steps}", f"optim.lr={s.refiner_lr}",
            f"optim.warmup={min(20, s.refiner_steps // 5)}", f"run.out={json.dumps(str(ctx.refiner))}",
            f"run.save_every={max(1, s.refiner_steps // 2)}", "run.device=cpu", "run.progress=false"]


SETTINGS = [QUICK, FULL, DemoSettings(train=FULL.train.__class__(max_mask_uncertainty=0.2, lr=1, ratio=(2, 0)))]


@pytest.mark.parametrize("settings", SETTINGS, ids=["quick", "full", "other"])
def test_the_demo_configs_equal_the_override_strings(tmp_path: Path, settings: DemoSettings) -> None:
    ctx = Ctx(tmp_path / "demo dir", tmp_path / "found\"ation.ckpt", settings)
    for method in METHODS:
        for seed in (0, 3):
            new = stages.train_config(ctx, method, seed)
            old = load_config(None, _old_train_overrides(ctx, method, seed))
            assert new == old and to_yaml(new) == to_yaml(old), method
    new_ref, old_ref = stages.refiner_config(ctx), load_refiner_config(None, _old_refiner_overrides(ctx))
    assert new_ref == old_ref and refiner_config_dict(new_ref) == refiner_config_dict(old_ref)


def test_tiny_sum_yaml_states_the_demos_fine_tuning_settings(tmp_path: Path) -> None:
    """configs/tiny_sum.yaml is documented as the demo's fine-tuning settings (docs/training.md): every
    training choice of the full demo's SUM run is the file's (the data paths, model and run keys differ)."""
    shipped = asdict(load_config(Path(__file__).parents[1] / "configs" / "tiny_sum.yaml"))
    demo = asdict(stages.train_config(Ctx(tmp_path, tmp_path / "f.ckpt", FULL), "sum", 0))
    for section in ("rounds", "loss", "optim"):
        assert shipped[section] == demo[section], section
    for key in ("ratio", "masks_per_image", "images_per_step", "max_mask_uncertainty"):
        assert shipped["data"][key] == demo["data"][key], key
    assert (shipped["method"], shipped["mode"]) == (demo["method"], demo["mode"])
