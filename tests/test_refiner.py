"""The refiner: input construction (gate, box, point), what trains, the loop, checkpoints, config, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from sumseg import build_model
from sumseg.cli import app
from sumseg.config import load_refiner_config, refiner_config_dict
from sumseg.data.synthetic_world import SPLITS, write_world
from sumseg.errors import ConfigError
from sumseg.losses import RoundLoss
from sumseg.models.checkpoint import read_checkpoint, save_checkpoint
from sumseg.models.refiner import frozen_copy, trainable_parameters
from sumseg.models.sum_sam import SumSam
from sumseg.pipeline.store import ImageLabels
from sumseg.pipeline.uncertainty import refine
from sumseg.prompts.geometry import mask_box
from sumseg.train.batch import MaskBatch, collate
from sumseg.train.distributed import Replica
from sumseg.train.loop import loop_config, run_loop
from sumseg.train.refiner_run import REFINER_LOSS, gate_summary, refiner_run, train_refiner
from sumseg.train.refiner_step import RefinerStep, draw_points, gate, refiner_inputs
from sumseg.train.schedule import LabelledSource, draw_samples

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_world(root, seed=0, sizes={s: 3 if s == "task2_train" else 0 for s in SPLITS}, workers=1, progress=False)
    return root / "task2_train"


@pytest.fixture(scope="module")
def foundation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose task prompts are zero (a plain SAM), saved as a sumseg checkpoint."""
    return save_checkpoint(tmp_path_factory.mktemp("foundation") / "f.ckpt", build_model("tiny"))


def _batch(world: Path, model: SumSam, images: int = 2, masks: int = 4) -> MaskBatch:
    from sumseg.data.dataset import read_dataset

    source = LabelledSource(read_dataset(world), masks)
    return collate(draw_samples(source, seed=0, step=0, rank=0, world=1, per_step=images), model)


def _cfg(world: Path, foundation: Path, out: Path, *extra: str):  # noqa: ANN202 - RefinerConfig
    return load_refiner_config(None, [
        f"data.labelled=[{world}]", f"model.checkpoint={foundation}", "model.name=null", f"run.out={out}",
        "optim.steps=4", "optim.warmup=0", "data.images_per_step=1", "data.masks_per_image=2", "inputs.min_iou=0.0",
        "run.save_every=2", "run.log_every=1", "run.progress=false", *extra])


def _block(n: int, box: tuple[int, int, int, int], size: int = 16) -> torch.Tensor:
    """(size, size) bool with the inclusive box (x0, y0, x1, y1) set."""
    m = torch.zeros(size, size, dtype=torch.bool)
    x0, y0, x1, y1 = box
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def _logits(mask: torch.Tensor) -> torch.Tensor:
    """Logits ±10 of a mask; with the low-res frame as large as the input frame, upsampling is the identity."""
    return torch.where(mask, 10.0, -10.0)


def test_gate_hand_worked() -> None:
    gt = _block(16, (0, 0, 7, 7))  # 64 px
    wide = _block(16, (0, 0, 11, 7))  # 96 px: IoU 64/96 = 0.667
    plus_corner = gt | _block(16, (12, 12, 15, 15))  # 80 px: IoU 0.8, box (0, 0, 15, 15)
    small = _block(16, (0, 0, 3, 3))  # IoU 0.25
    empty = torch.zeros(16, 16, dtype=torch.bool)
    low = torch.stack([torch.stack([_logits(m) for m in outs]) for outs in
                       [(wide, plus_corner, empty), (wide, empty, small), (wide, small, empty)]])
    ignore = torch.zeros(3, 16, 16, dtype=torch.bool)
    ignore[2, :, 8:12] = True  # the extra columns of `wide` are ignored for mask 2: IoU 1
    got = gate(low, gt.expand(3, -1, -1), ignore, min_iou=0.7)
    torch.testing.assert_close(got.iou, torch.tensor([0.8, 64 / 96, 1.0]))
    assert got.kept.tolist() == [True, False, True]
    # the box is the candidate's, not the GT's (0, 0, 7, 7)
    assert got.boxes.tolist() == [[0, 0, 15, 15], [0, 0, 11, 7], [0, 0, 11, 7]]
    assert torch.equal(got.logits[:, 0], low[[0, 1, 2], [1, 0, 0]])


def test_gate_drops_an_empty_candidate_even_at_min_iou_zero() -> None:
    low = torch.full((1, 3, 16, 16), -10.0)
    got = gate(low, _block(16, (0, 0, 7, 7))[None], torch.zeros(1, 16, 16, dtype=torch.bool), min_iou=0.0)
    assert got.kept.tolist() == [False] and got.boxes.tolist() == [[0, 0, 0, 0]]


def test_refiner_inputs_are_the_frozen_models_best_output(world: Path) -> None:
    model = build_model("tiny")
    frozen = frozen_copy(model)
    batch = _batch(world, model)
    with torch.no_grad():
        feats = model.encode(batch.images)
    inp = refiner_inputs(frozen, feats, batch, torch.Generator().manual_seed(5), min_iou=0.0, jitter_ratio=0.0)
    points, _ = draw_points(batch.gt, batch.ignore, torch.Generator().manual_seed(5))
    assert torch.equal(inp.prompts.points, points)  # the generator's first draw: the points
    size = frozen.image_size
    for n in range(len(batch.gt)):
        x, y = inp.prompts.points[n, 0].long().tolist()
        assert batch.gt[n, y, x]  # the point lies in the GT
        with torch.no_grad():  # an independent SamPredictor-style call for this one point
            low, _ = frozen.decode(feats.select(int(batch.image_index[n])), (inp.prompts.points[n : n + 1],
                                   torch.ones(1, 1, dtype=torch.long)), multimask=True)
        up = F.interpolate(low[0, :, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0
        gt = batch.gt[n].numpy()
        ious = [(m & gt).sum() / max(1, (m | gt).sum()) for m in up.numpy()]
        best = int(np.argmax(ious))
        assert inp.input_iou[n].item() == pytest.approx(ious[best], abs=1e-6)
        torch.testing.assert_close(inp.mask_input[n, 0], low[0, best])
        assert tuple(inp.prompts.boxes[n].long().tolist()) == mask_box(up[best].numpy())  # the output's box
    threshold = float(inp.input_iou.median())
    gated = refiner_inputs(frozen, feats, batch, torch.Generator().manual_seed(5), min_iou=threshold,
                           jitter_ratio=0.0)
    assert torch.equal(gated.kept, inp.input_iou >= threshold) and 0 < int(gated.kept.sum()) < len(gated.kept)
    jittered = refiner_inputs(frozen, feats, batch, torch.Generator().manual_seed(5), min_iou=0.0,
                              jitter_ratio=0.1, max_jitter=3.0)
    moved, fixed = jittered.prompts, inp.prompts
    assert torch.equal(moved.points, fixed.points) and not torch.equal(moved.boxes, fixed.boxes)
    assert float((moved.boxes - fixed.boxes).abs().max()) <= 3.0


def test_refiner_prompt_is_the_one_uncertainty_inference_builds(world: Path) -> None:
    """Training's refiner call on kept masks = ``sumseg uncertainty``'s call with (s, box, point)."""
    refiner = build_model("tiny")
    step = RefinerStep(refiner, frozen_copy(refiner), REFINER_LOSS, min_iou=0.0)
    batch = _batch(world, refiner, images=1)
    feats = step.features(batch)
    inp = refiner_inputs(step.frozen, feats, batch, torch.Generator().manual_seed(1), 0.0)
    with torch.no_grad():
        trained, _ = step.refine(feats, inp)
    k, prompts = len(inp.prompts), inp.prompts  # 256-px images: the input frame is the image frame
    assert prompts.points is not None
    labels = ImageLabels([{}] * k, inp.mask_input[:, 0], prompts.boxes, prompts.points[:, 0], torch.ones(k),
                         torch.ones(k))
    torch.testing.assert_close(refine(refiner, feats.embeddings, labels, (256, 256)), trained[:, 0])


def test_only_prompt_encoder_and_decoder_train(world: Path) -> None:
    refiner = build_model("tiny")
    encoder_before = {k: v.clone() for k, v in refiner.sam.image_encoder.state_dict().items()}
    params = trainable_parameters(refiner)
    frozen = frozen_copy(refiner)
    frozen_before = {k: v.clone() for k, v in frozen.state_dict().items()}
    step = RefinerStep(refiner, frozen, REFINER_LOSS, min_iou=0.0)
    opt = torch.optim.AdamW(params, lr=1e-3)
    batch = _batch(world, refiner)
    for i in range(2):
        opt.zero_grad()
        step(batch, torch.Generator().manual_seed(i))["loss"].backward()
        if i == 0:
            assert all(p.grad is None for p in refiner.sam.image_encoder.parameters())
            assert all(p.grad is None for p in frozen.parameters())
            assert all(p.grad is not None for p in refiner.sam.mask_decoder.parameters())
            no_grad = {n for n, p in refiner.sam.prompt_encoder.named_parameters() if p.grad is None}
            assert no_grad == {"no_mask_embed.weight"}  # a mask prompt is always given
        opt.step()
    for k, v in refiner.sam.image_encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, frozen_before[k]), k
    assert not torch.equal(frozen.sam.mask_decoder.iou_prediction_head.layers[0].weight,
                           refiner.sam.mask_decoder.iou_prediction_head.layers[0].weight)


def test_a_few_steps_lower_the_loss(world: Path) -> None:
    refiner = build_model("tiny")
    step = RefinerStep(refiner, frozen_copy(refiner), REFINER_LOSS, min_iou=0.0)
    opt = torch.optim.AdamW(trainable_parameters(refiner), lr=1e-3)
    batch = _batch(world, refiner, images=1, masks=3)
    batch.embeddings, batch.images = step.features(batch).embeddings, None  # one encoder pass
    losses = []
    for _ in range(5):
        out = step(batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_step_loss_is_the_sam_loss_of_the_kept_masks(world: Path) -> None:
    refiner = build_model("tiny")
    frozen = frozen_copy(refiner)
    batch = _batch(world, refiner)
    feats = RefinerStep(refiner, frozen, REFINER_LOSS).features(batch)
    every = refiner_inputs(frozen, feats, batch, torch.Generator().manual_seed(3), 0.0)
    threshold = float(every.input_iou.median())
    step = RefinerStep(refiner, frozen, REFINER_LOSS, min_iou=threshold)
    with torch.no_grad():
        out = step(batch, torch.Generator().manual_seed(3))
        kept = (every.input_iou >= threshold).nonzero().squeeze(1)
        low, iou = step.refine(feats, every.take(kept))
        want = RoundLoss().per_mask(low[:, 0], iou[:, 0], batch.target[kept])  # c ≡ 1: no padding or ignore here
    assert float(out["kept"]) == pytest.approx(len(kept) / len(batch.gt)) and 0 < len(kept) < len(batch.gt)
    for name in ("focal", "dice", "iou"):
        torch.testing.assert_close(out[name], want[name].mean())
    torch.testing.assert_close(out["input_iou"], every.input_iou[kept].mean())


def test_nothing_kept_gives_zero_loss_not_nan(world: Path) -> None:
    refiner = build_model("tiny")
    step = RefinerStep(refiner, frozen_copy(refiner), REFINER_LOSS, min_iou=1.0)  # a random model reaches IoU 1 nowhere
    out = step(_batch(world, refiner), torch.Generator().manual_seed(0))
    assert float(out["kept"]) == 0 and float(out["loss"].detach()) == 0
    out["loss"].backward()  # still tied to the trainable weights (every rank runs the same graph)


def test_checkpoint_loads_and_resume_is_exact(world: Path, foundation: Path, tmp_path: Path) -> None:
    whole = train_refiner(_cfg(world, foundation, tmp_path / "whole"))
    assert whole["step"] == 3 and 0 < whole["kept"] <= 1
    model = build_model(None, tmp_path / "whole" / "last.ckpt")  # a normal sumseg checkpoint
    base = build_model(None, foundation)
    for k, v in base.sam.image_encoder.state_dict().items():
        assert torch.equal(v, model.sam.image_encoder.state_dict()[k]), k
    assert not torch.equal(base.sam.mask_decoder.output_upscaling[0].weight,
                           model.sam.mask_decoder.output_upscaling[0].weight)
    _, meta = read_checkpoint(tmp_path / "whole" / "last.ckpt")
    assert meta is not None and meta.config["refiner"]["inputs"]["min_iou"] == 0.0

    cfg = _cfg(world, foundation, tmp_path / "killed")
    run = refiner_run(cfg)
    trained = {n for g in run.params for n in g["names"]}
    assert trained == {n for n, _ in run.step.refiner.named_parameters()
                       if n.startswith(("sam.prompt_encoder.", "sam.mask_decoder."))}
    assert all(g["weight_decay"] == 0 for g in run.params if any(n.endswith(".bias") for n in g["names"]))

    def dies_at_3(draw: int, replica: Replica) -> tuple:
        if draw == 3:
            raise KeyboardInterrupt  # the run stops in step 3; step 1 was saved
        return run.inputs(draw, replica)

    with pytest.raises(KeyboardInterrupt):
        run_loop(run.step, dies_at_3, run.step.refiner, run.params, loop_config(cfg.optim, cfg.run),
                 tmp_path / "killed", refiner_config_dict(cfg), 1, progress=False)  # what train_refiner saves
    train_refiner(cfg)
    a, _ = read_checkpoint(tmp_path / "whole" / "last.ckpt")
    b, _ = read_checkpoint(tmp_path / "killed" / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cache_serves_the_embeddings(world: Path, foundation: Path, tmp_path: Path) -> None:
    from sumseg.data.embedding_cache import EmbeddingCache

    row = train_refiner(_cfg(world, foundation, tmp_path / "run", f"data.embedding_cache={tmp_path / 'cache'}",
                             "optim.steps=1"))
    assert np.isfinite(row["loss"])
    assert len(EmbeddingCache(tmp_path / "cache", build_model(None, foundation).cache_encoder())) == 3


@pytest.mark.parametrize(("override", "key"), [
    ("optim.steps=0", "optim.steps"), ("inputs.min_iou=1.5", "inputs.min_iou"), ("optim.lr=-1", "optim.lr"),
    ("optim.warmup=401", "optim.warmup"), ("optim.steps=many", "optim.steps"), ("inputs.no_such=1", "inputs.no_such"),
    ("model.name=null", "model.name"), ("data.labelled=[]", "data.labelled"), ("run.precision=fp8", "run.precision"),
    ("data.masks_per_image=0", "data.masks_per_image"), ("optim.betas=[0.9]", "optim.betas"),
])
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_refiner_config(None, ["data.labelled=[x]", "model.name=tiny", override])
    assert f"override {override!r}" in str(e.value) and key in str(e.value)


def test_every_problem_is_reported_as_sumseg_train_words_it() -> None:
    """The refiner's config goes through sumseg train's checker: every problem at once, the same wording."""
    from sumseg.config import load_config

    with pytest.raises(ConfigError) as e:
        load_refiner_config(None, ["data.labelled=[x]", "model.name=tiny", "optim.lr=-1", "inputs.min_iou=2",
                                   "run.device=tpu"])
    msg = str(e.value)
    assert "override 'optim.lr=-1': optim.lr must lie in (0, 1], got -1.0" in msg
    assert "override 'inputs.min_iou=2': inputs.min_iou must lie in [0, 1], got 2.0" in msg
    assert "override 'run.device=tpu': run.device must be one of auto, cpu, cuda" in msg
    with pytest.raises(ConfigError) as e:
        load_refiner_config(None, ["data.labelled=[x]", "model.name=tiny", "optim.steps=10"])  # warmup 20
    with pytest.raises(ConfigError) as t:
        load_config(None, ["model.name=tiny", "data.labelled=[{path: x}]", "data.pseudo_labels=pl",
                           "optim.warmup=20", "optim.steps=10"])
    bound = "optim.warmup must lie in [0, optim.steps], got 20 with optim.steps = 10"
    assert str(e.value).startswith(bound) and "optim.warmup from the defaults" in str(e.value)
    assert str(t.value).startswith(bound)


def test_the_shipped_foundation_is_a_model_name() -> None:
    cfg = load_refiner_config(None, ["data.labelled=[x]", "model.name=tiny_foundation"])
    assert cfg.model.name == "tiny_foundation" and cfg.model.checkpoint is None
    with pytest.raises(ConfigError, match="model.checkpoint must be null with model.name tiny_foundation"):
        load_refiner_config(None, ["data.labelled=[x]", "model.name=tiny_foundation", "model.checkpoint=a.ckpt"])


def test_shipped_configs(tmp_path: Path) -> None:
    tiny = load_refiner_config(REPO / "configs" / "refiner_tiny.yaml")
    assert tiny.model.name == "tiny_foundation" and tiny.data.labelled and tiny.inputs.min_iou == 0.7
    vit_b = REPO / "configs" / "refiner_vit_b.yaml"
    with pytest.raises(ConfigError, match=f"{vit_b}: model.checkpoint is \\?\\?\\? .*; {vit_b}: data.labelled is"):
        load_refiner_config(vit_b)  # the user's paths, both named
    with pytest.raises(ConfigError, match=f"^{vit_b}: model.checkpoint is \\?\\?\\? .* add model.checkpoint=...$"):
        load_refiner_config(vit_b, ["data.labelled=[a]"])  # never the default (null: random weights)
    cfg = load_refiner_config(vit_b, ["data.labelled=[a]", "model.checkpoint=b.pth"])
    assert cfg.model.name == "vit_b" and cfg.model.checkpoint == "b.pth"
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_refiner_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    for text, why in [("optim: [1", "not readable YAML"), ("refiner: {min_iou: 0.5}", "unknown key refiner"),
                      ("optim: {lr: fast}", "optim.lr: Value 'fast'")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=f"{bad}: {why}"):
            load_refiner_config(bad)


def test_cli(world: Path, foundation: Path, tmp_path: Path) -> None:
    yaml = tmp_path / "r.yaml"
    yaml.write_text(f"model: {{name: tiny, checkpoint: {foundation}}}\n"
                    f"data: {{labelled: [{world}], images_per_step: 1, masks_per_image: 2}}\n"
                    "optim: {steps: 2, warmup: 0}\ninputs: {min_iou: 0.0}\n")
    runner = CliRunner()
    res = runner.invoke(app, ["refiner", "train", "--config", str(yaml), f"run.out={tmp_path / 'run'}",
                              "run.progress=false"])
    assert res.exit_code == 0, res.output
    assert str(tmp_path / "run" / "last.ckpt") in res.output and "kept" in res.output
    assert ": 2 of 2 steps done, last loss" in res.output  # not "step 1" (the 0-based index of the last step)
    args = ["refiner", "train", "--config", str(yaml), f"run.out={tmp_path / 'run'}", "run.progress=false"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "last.ckpt is already trained: 2 of 2 steps; nothing to do" in res.output
    res = runner.invoke(app, [*args, "optim.steps=1"])  # another config, refused as sumseg train refuses it
    assert res.exit_code == 1 and "this run was started with another config (optim.steps: 2 -> 1)" in res.output
    res = runner.invoke(app, ["refiner", "train", "--config", str(yaml), f"run.out={tmp_path / 'none'}",
                              "run.progress=false", "inputs.min_iou=1"])  # a random model reaches IoU 1 nowhere
    assert res.exit_code == 0 and "kept 0% of masks" in res.output and "no mask passed the gate" in res.output
    res = runner.invoke(app, ["refiner", "train", "--config", str(yaml), "inputs.min_iou=2"])
    assert res.exit_code == 1 and "inputs.min_iou" in res.output and res.output.startswith("error: ")



def test_gate_summary_weights_each_logged_step_by_its_share_kept(tmp_path: Path) -> None:
    """Hand-worked: kept 1/2, 0, 1/4 → 1/4 of masks; IoUs weighted 2 : 0 : 1 (a step that kept none counts
    for the share only); a run that never kept a mask has no IoU (NaN), not 0."""
    rows = [{"step": 0, "kept": 0.5, "input_iou": 0.8, "train_iou": 0.9},
            {"step": 10, "kept": 0.0, "input_iou": 0.0, "train_iou": 0.0},
            {"step": 20, "kept": 0.25, "input_iou": 0.9, "train_iou": 0.95}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    g = gate_summary(tmp_path)
    assert g["kept"] == pytest.approx(0.25) and g["steps_logged"] == 3
    assert g["input_iou"] == pytest.approx((0.5 * 0.8 + 0.25 * 0.9) / 0.75)
    assert g["train_iou"] == pytest.approx((0.5 * 0.9 + 0.25 * 0.95) / 0.75)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(rows[1]) + "\n")
    none = gate_summary(tmp_path)
    assert none["kept"] == 0 and math.isnan(none["input_iou"]) and math.isnan(none["train_iou"])
