"""Fine-tuning modes: which parameters train, layer-wise lr decay, frozen weights untouched, LoRA merges."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sumseg import build_model
from sumseg.config import load_config
from sumseg.evaluate.run import EvalSettings, evaluate
from sumseg.models.checkpoint import read_checkpoint
from sumseg.train.distributed import Replica
from sumseg.train.lora import MergedSaver, is_adapter, lora_layers
from sumseg.train.train_run import build_training, train
from tests.train_fixtures import overrides, world_and_store

CPU = Replica(0, 1, 0, torch.device("cpu"))
ENC = "sam.image_encoder."


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("modes")
    world, store = world_and_store(root)
    return world, store, root


def config(data: tuple[Path, Path, Path], out: str, *extra: str):  # noqa: ANN201 - TrainConfig
    world, store, root = data
    return load_config(None, overrides(world, store, root / out, f"data.embedding_cache={root / 'cache'}",
                                       "data.masks_per_image=4", *extra))


def expected_trainable(names: list[str], mode: str) -> set[str]:
    if mode == "full":
        return set(names)
    return {n for n in names if not n.startswith(ENC) or (mode == "lora" and is_adapter(n))}


def test_layerwise_lr_decay_and_weight_decay_groups(data: tuple[Path, Path, Path]) -> None:
    cfg = config(data, "groups", "optim.lr=1e-3", "optim.layer_decay=0.5", "optim.task_lr_mult=10",
                 "optim.weight_decay=0.2")
    setup = build_training(cfg, CPU)
    lr = {n: g["lr"] for g in setup.params for n in g["names"]}
    wd = {n: g["weight_decay"] for g in setup.params for n in g["names"]}
    assert setup.params[0]["lr"] == 1e-3  # the group logs show
    # tiny encoder: D = 4 blocks; layer 0 = patch/pos embedding, block i = i + 1, neck = 5 → lr · 0.5^(5 − layer)
    expected = {
        ENC + "neck.0.weight": 1e-3, ENC + "blocks.3.attn.qkv.weight": 1e-3 * 0.5,
        ENC + "blocks.0.mlp.lin1.weight": 1e-3 * 0.5**4, ENC + "patch_embed.proj.weight": 1e-3 * 0.5**5,
        ENC + "pos_embed": 1e-3 * 0.5**5, "sam.mask_decoder.iou_token.weight": 1e-3,
        "sam.prompt_encoder.no_mask_embed.weight": 1e-3, "task_prompts.task_embeddings": 1e-2,
    }
    for name, value in expected.items():
        assert math.isclose(lr[name], value, rel_tol=1e-12), name
    assert wd[ENC + "blocks.3.attn.qkv.weight"] == 0.2 and wd["sam.mask_decoder.iou_token.weight"] == 0.2
    for name in (ENC + "blocks.3.attn.qkv.bias", ENC + "blocks.0.norm1.weight", ENC + "pos_embed",
                 ENC + "blocks.1.attn.rel_pos_h", "task_prompts.task_embeddings"):
        assert wd[name] == 0.0, name


@pytest.mark.parametrize("mode", ["full", "decoder", "lora"])
def test_mode_trains_exactly_its_parameters(data: tuple[Path, Path, Path], mode: str) -> None:
    cfg = config(data, f"run_{mode}", f"mode={mode}", "optim.steps=2")
    setup = build_training(cfg, CPU)
    names = [n for n, _ in setup.model.named_parameters()]
    trainable = {n for n, p in setup.model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(names, mode)
    assert {n for g in setup.params for n in g["names"]} == trainable
    if mode == "lora":
        assert len(lora_layers(setup.model)) == 8  # qkv and proj of 4 blocks
    # one step's gradients reach exactly the trainable parameters
    losses = setup.module(*setup.inputs(0, CPU))
    losses["loss"].backward()
    with_grad = {n for n, p in setup.model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert all(bool(torch.isfinite(p.grad).all()) for p in setup.model.parameters() if p.grad is not None)

    # a short run: frozen weights bit-identical in last.ckpt; the trainable ones (and, in LoRA, the
    # merged attention weights) moved — all but a few whose gradient can be exactly 0 (e.g. the
    # hypernetwork of a multimask output that was never the best of 3 and has no weight decay)
    start = dict(build_model("tiny").state_dict())
    train(cfg)
    saved, meta = read_checkpoint(Path(cfg.run.out) / "last.ckpt")
    assert meta is not None and meta.step == 1 and meta.config["mode"] == mode
    assert set(saved) == set(start)  # the stock key set in every mode (LoRA merged)
    merged = {n.split(".lora_")[0] + ".weight" for n in trainable if is_adapter(n)}
    may_move = (trainable | merged) & set(start)
    moved = {name for name, before in start.items() if not torch.equal(saved[name], before)}
    assert moved <= may_move, f"frozen weights changed: {sorted(moved - may_move)[:5]}"
    assert merged <= moved
    assert len(moved) >= 0.9 * len(may_move), sorted(may_move - moved)


def test_lora_checkpoint_is_merged_loads_strictly_and_evaluates(data: tuple[Path, Path, Path]) -> None:
    world, _, root = data
    setup = build_training(config(data, "lora_merge", "mode=lora"), CPU)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # adapters as training leaves them (B is zero at the start)
        for layer in lora_layers(setup.model).values():
            layer.lora_B["default"].weight.copy_(0.05 * torch.randn(layer.lora_B["default"].weight.shape, generator=g))
    saver = MergedSaver(setup.model, setup.config)
    saver(root / "lora.ckpt", 7)
    loaded = build_model(None, root / "lora.ckpt")  # strict: stock keys, no adapters
    images = torch.randn(1, 3, 256, 256, generator=g)
    with torch.no_grad():
        live = setup.model.encode(images).embeddings
        assert not torch.allclose(live, build_model("tiny").encode(images).embeddings, atol=1e-3)
        torch.testing.assert_close(loaded.encode(images).embeddings, live, atol=2e-5, rtol=1e-4)
    data_, _ = evaluate(loaded, {"task1": world / "task1_train"}, EvalSettings(rounds=2, limit=2, overlays=0),
                        root / "eval_lora", progress=False)
    assert data_["task1"]["clicks"]["n"] == 2
