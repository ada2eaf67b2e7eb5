"""Methods as data/loss choices in one code path; labelled:pseudo mixing; every method × mode runs."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from sumseg import build_model
from sumseg.config import load_config
from sumseg.errors import DataError
from sumseg.models.checkpoint import save_checkpoint
from sumseg.pipeline.store import open_store
from sumseg.train.distributed import Replica
from sumseg.train.schedule import LabelledSource, draw_mixed, draw_samples, slot_source
from sumseg.train.sources import PseudoLabelSource
from sumseg.train.train_run import build_training, train
from tests.train_fixtures import overrides, world_and_store

CPU = Replica(0, 1, 0, torch.device("cpu"))
METHODS = ["sum", "vanilla", "self_training", "refined_labels", "sum_no_task"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("methods")
    world, store = world_and_store(root)
    save_checkpoint(root / "refiner.ckpt", build_model("tiny"))
    return world, store, root


def config(data: tuple[Path, Path, Path], out: str, *extra: str):  # noqa: ANN201 - TrainConfig
    world, store, root = data
    return load_config(None, overrides(world, store, root / out, f"data.refiner={root / 'refiner.ckpt'}",
                                       f"data.embedding_cache={root / 'cache'}", "data.images_per_step=4", *extra))


def test_slots_follow_the_ratio() -> None:
    assert [slot_source(p, Fraction(1, 2))[0] for p in range(6)] == [1, 0, 1, 0, 1, 0]
    # 2:1 → share 2/3; each source's positions count up without gaps
    slots = [slot_source(p, Fraction(2, 3)) for p in range(300)]
    labelled = [pos for s, pos in slots if s == 0]
    pseudo = [pos for s, pos in slots if s == 1]
    assert labelled == list(range(200)) and pseudo == list(range(100))
    for n in range(1, 300):  # every prefix within one image of the ratio
        assert abs(sum(s == 0 for s, _ in slots[:n]) - n * 2 / 3) < 1
    assert {slot_source(p, Fraction(1))[0] for p in range(10)} == {0}
    assert {slot_source(p, Fraction(0))[0] for p in range(10)} == {1}


def test_mixed_draws(data: tuple[Path, Path, Path]) -> None:
    world, store_path, _ = data
    from sumseg.data.coco import read_coco

    labelled = LabelledSource(read_coco(world / "task1_train" / "annotations.json"), 2)
    pseudo = PseudoLabelSource(open_store(store_path), 3, 256, True)
    # all labelled: exactly draw_samples (the pretraining path)
    a = draw_mixed([labelled, pseudo], Fraction(1), 0, 5, 0, 1, 2)
    b = draw_samples(labelled, 0, 5, 0, 1, 2)
    assert all(np.array_equal(x.masks, y.masks) and np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    # 1:1 over two ranks: each step's four slots alternate pseudo / labelled; ranks see different images
    r0 = draw_mixed([labelled, pseudo], Fraction(1, 2), 0, 3, 0, 2, 2)
    r1 = draw_mixed([labelled, pseudo], Fraction(1, 2), 0, 3, 1, 2, 2)
    assert [s.confidence is None for s in r0 + r1] == [False, True, False, True]
    assert all(len(s.masks) <= 3 and (s.tasks == 0).all() for s in (r0[0], r1[0]))
    assert not np.array_equal(r0[0].image, r1[0].image) or not np.array_equal(r0[0].masks, r1[0].masks)


def _split(batch):  # noqa: ANN001, ANN202 - MaskBatch → (pseudo rows, labelled rows)
    return batch.tasks == 0, batch.tasks != 0


@pytest.mark.parametrize("method", METHODS)
def test_method_decides_targets_confidence_and_task_prompt(data: tuple[Path, Path, Path], method: str) -> None:
    setup = build_training(config(data, f"m_{method}", f"method={method}"), CPU)
    batch, _ = setup.inputs(0, CPU)
    pseudo, labelled = _split(batch)
    assert setup.module.use_task == (method != "sum_no_task")
    conf = batch.confidence
    assert ((conf[labelled] == 0) | (conf[labelled] == 1)).all()  # human labels: c ≡ 1 (0 on padding)
    if method == "vanilla":
        assert not pseudo.any()
        return
    assert pseudo.sum() > 0 and labelled.sum() > 0
    uncertain = ((conf[pseudo] > 0) & (conf[pseudo] < 1)).any()
    assert bool(uncertain) == (method in ("sum", "sum_no_task"))
    if method in ("sum", "sum_no_task"):  # c = 1 − U: the hand-written U is 0.8 on mask borders
        assert torch.isclose(conf[pseudo], torch.tensor(1 - 204 / 255)).any()
    # refined targets differ from the stored pseudo-labels (the random refiner rewrites them)
    base, _ = build_training(config(data, f"m_{method}_st", "method=self_training"), CPU).inputs(0, CPU)
    same_targets = torch.equal(batch.gt[pseudo], base.gt[base.tasks == 0])
    assert same_targets == (method != "refined_labels")


@pytest.mark.parametrize("mode", ["full", "decoder", "lora"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_mode_runs(data: tuple[Path, Path, Path], method: str, mode: str) -> None:
    cfg = config(data, f"run_{method}_{mode}", f"method={method}", f"mode={mode}", "optim.steps=2",
                 "rounds.corrections=0", "rounds.final_round=false", "data.images_per_step=2")
    row = train(cfg)
    out = Path(cfg.run.out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and row["step"] == 1
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    model = build_model(None, out / "last.ckpt")  # strict load of the stock key set
    assert model.name == "tiny"


@pytest.mark.parametrize("train_task0", [False, True])
def test_task0_stays_zero_through_training_unless_freed(data: tuple[Path, Path, Path], train_task0: bool) -> None:
    # the official zero_token_no_grad: task 0 (the pseudo-labels' task) is the foundation's own prompt path

    cfg = config(data, f"t0_{train_task0}", "mode=decoder", "optim.steps=2", "optim.task_lr_mult=10",
                 f"optim.train_task0={str(train_task0).lower()}")
    train(cfg)
    model = build_model(None, Path(cfg.run.out) / "last.ckpt")
    prompts = model.task_prompts
    assert bool(prompts.embedding(1).abs().sum() > 0) and bool(prompts.embedding(3).abs().sum() > 0)
    assert bool((prompts.embedding(0) == 0).all()) != train_task0
    if not train_task0:  # exported for task 0, the stock weights are the model's own, bit for bit
        state = model.stock_state_dict(0)
        assert all(torch.equal(v, state[k]) for k, v in model.sam.state_dict().items())


def test_pseudo_labels_of_high_mean_u_are_left_out(data: tuple[Path, Path, Path]) -> None:
    # the hand-written U is 0.8 on a 2-pixel band along each outline and 0.05 inside: small masks (mostly band)
    # have a high mean U, large ones a low one
    _, store_path, _ = data
    store = open_store(store_path)
    every = PseudoLabelSource(store, 6, 256, True)
    mean_u = {}
    for i in every.index:
        u, inside = 1 - store.confidence(i), store.logits(i) > 0
        mean_u[i] = ((u * inside).flatten(1).sum(1) / inside.flatten(1).sum(1)).tolist()
    values = sorted(v for vs in mean_u.values() for v in vs)
    cut = (values[len(values) // 2] + values[len(values) // 2 + 1]) / 2
    assert values[0] < cut < values[-1]
    strict = PseudoLabelSource(store, 6, 256, True, max_mask_u=cut)
    kept, total = strict.filtered
    assert total == len(values) and kept == sum(v <= cut for v in values) and 0 < kept < total
    for i, ok in strict.eligible.items():
        assert sorted(ok.tolist()) == [j for j, v in enumerate(mean_u[i]) if v <= cut]
    rng = np.random.default_rng(0)
    for index in range(len(strict)):
        sample = strict.sample(index, rng)
        i = strict.index[index]
        assert len(sample.masks) == min(6, len(strict.eligible[i]))
    # no filter: the draw is the same as before the filter existed (all masks eligible)
    a, b = every.sample(0, np.random.default_rng(3)), PseudoLabelSource(store, 6, 256, True).sample(
        0, np.random.default_rng(3))
    assert np.array_equal(a.masks, b.masks)
    with pytest.raises(DataError, match="no pseudo-label has a mean U"):
        PseudoLabelSource(store, 6, 256, True, max_mask_u=values[0] / 2)
    # the config key reaches the trainer's source (methods with U maps only)
    from sumseg.train.train_run import build_sources

    for method, filtered in (("sum", True), ("self_training", False)):
        cfg = config(data, "filtered", f"data.max_mask_uncertainty={cut}", f"method={method}")
        source = build_sources(cfg, build_model("tiny"), CPU.device)[1]
        assert isinstance(source, PseudoLabelSource)
        assert source.filtered == ((kept, total) if filtered else None)
