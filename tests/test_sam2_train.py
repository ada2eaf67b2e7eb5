"""SAM 2 in the embedding cache, in training (modes full and decoder) and in sumseg checkpoints (sam2_tiny)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from sumseg import build_model, save_checkpoint  # noqa: E402
from sumseg.config import load_config  # noqa: E402
from sumseg.data.embedding_cache import EmbeddingCache  # noqa: E402
from sumseg.data.images import content_key  # noqa: E402
from sumseg.data.records import ImageRecord  # noqa: E402
from sumseg.models.checkpoint import load_checkpoint, read_meta  # noqa: E402
from sumseg.models.sam2_cache import pack, unpack  # noqa: E402
from sumseg.models.sum_sam2 import SumSam2  # noqa: E402
from sumseg.train.distributed import Replica  # noqa: E402
from sumseg.train.lora import MergedSaver, is_adapter, lora_layers  # noqa: E402
from sumseg.train.train_run import build_training, train  # noqa: E402
from tests.test_sam2_arch import random_sam2  # noqa: E402
from tests.train_fixtures import overrides, world_and_store  # noqa: E402

CPU = Replica(0, 1, 0, torch.device("cpu"))
IMAGE_SIDE = ("sam2.vision_encoder.", "sam2.no_memory_embedding", "sam2.mask_decoder.conv_s0.",
              "sam2.mask_decoder.conv_s1.")


def _model() -> SumSam2:
    model = SumSam2(random_sam2(), (0, 1, 2, 3), "sam2_tiny").eval()
    with torch.no_grad():
        model.task_prompts.task_embeddings.normal_(generator=torch.Generator().manual_seed(2))
    return model


def _records(folder: Path, n: int) -> list[ImageRecord]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(96, 160), (120, 80)][:n]):
        path = folder / f"{i}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
        out.append(ImageRecord(image_id=str(i), image_path=path, height=h, width=w))
    return out


def test_pack_is_exact_and_the_cache_serves_sam2_features(tmp_path: Path) -> None:
    model = _model()
    recs = _records(tmp_path / "img", 2)
    keys = EmbeddingCache(tmp_path / "c", model.cache_encoder()).build(recs, progress=False)
    cache = EmbeddingCache(tmp_path / "c", model.cache_encoder())  # reopened from disk
    assert cache.shape == (1024, 16, 16) and len(cache) == 2
    for rec, key in zip(recs, keys, strict=True):
        rgb = rec.load_image()
        assert key == content_key(rgb)
        with torch.no_grad():
            live = model.encode(model.preprocess(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float()))
        back = unpack(pack(live))
        assert torch.equal(back.embeddings, live.embeddings)
        assert back.high_res is not None and live.high_res is not None
        assert all(torch.equal(a, b) for a, b in zip(back.high_res, live.high_res, strict=True))
        cached = model.cached_features(cache.get(key)[None])
        assert cached.high_res is not None
        for a, b in zip((cached.embeddings, *cached.high_res), (live.embeddings, *live.high_res), strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, atol=2e-3 * float(b.abs().max()))  # fp16
    # the fingerprint covers the image side (conv_s0 included), not the prompt side
    with torch.no_grad():
        model.sam2.mask_decoder.iou_token.weight.add_(1.0)
    EmbeddingCache(tmp_path / "c", model.cache_encoder())
    with torch.no_grad():
        model.sam2.mask_decoder.conv_s0.bias.add_(1.0)
    with pytest.raises(Exception, match="another image encoder"):
        EmbeddingCache(tmp_path / "c", model.cache_encoder())


def test_sumseg_checkpoint_of_sam2_round_trips(tmp_path: Path) -> None:
    model = _model()
    path = save_checkpoint(tmp_path / "m.ckpt", model, step=3)
    meta = read_meta(path)
    assert meta is not None and meta.model == "sam2_tiny" and meta.arch["image_size"] == 256
    for loaded in (load_checkpoint(path)[0], build_model(checkpoint=path), build_model("sam2_tiny", path)):
        assert isinstance(loaded, SumSam2) and loaded.task_prompts.task_ids == model.task_prompts.task_ids
        ours, theirs = model.state_dict(), loaded.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    root = tmp_path_factory.mktemp("sam2train")
    world, store = world_and_store(root)
    ckpt = save_checkpoint(root / "sam2_tiny.ckpt", _model())
    return world, store, root, ckpt


@pytest.mark.parametrize("mode", ["full", "decoder", "lora"])
def test_sam2_mode_trains_exactly_its_parameters(data: tuple[Path, Path, Path, Path], mode: str) -> None:
    """One SUM step (pseudo-labels with U maps, labelled images, a correction round) on sam2_tiny:
    gradients reach exactly the mode's trainable parameters, all finite."""
    world, store, root, ckpt = data
    cfg = load_config(None, overrides(world, store, root / f"run_{mode}", "model.name=null",
                                      f"model.checkpoint={ckpt}", f"mode={mode}",
                                      f"data.embedding_cache={root / 'cache'}"))
    setup = build_training(cfg, CPU)
    assert isinstance(setup.model, SumSam2)
    names = [n for n, _ in setup.model.named_parameters()]
    trainable = {n for n, p in setup.model.named_parameters() if p.requires_grad}
    idle = {n for n in names if n.startswith("sam2.mask_decoder.pred_obj_score_head.")}  # no loss uses its score
    expected = {n for n in names if n not in idle and (mode == "full" or not n.startswith(IMAGE_SIDE)
                                                       or (mode == "lora" and is_adapter(n)))}
    assert idle and trainable == expected
    if mode == "lora":  # qkv and proj of sam2_tiny's 5 Hiera blocks
        assert len(lora_layers(setup.model)) == 10 and all(".backbone.blocks." in n for n in lora_layers(setup.model))
    assert {n for g in setup.params for n in g["names"]} == trainable
    batch, sampler = setup.inputs(0, CPU)
    assert (batch.embeddings is not None) == (mode == "decoder")
    losses = setup.module(batch, sampler)
    losses["loss"].backward()
    with_grad = {n for n, p in setup.model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert all(bool(torch.isfinite(p.grad).all()) for p in setup.model.parameters() if p.grad is not None)
    if mode == "lora":  # the merged model (what last.ckpt holds) predicts what the adapted one does
        assert isinstance(setup.save_model, MergedSaver)
        with torch.no_grad():
            for n, p in setup.model.named_parameters():
                if ".lora_B." in n:
                    p.normal_(std=0.1)
            merged = setup.save_model.merged().eval()
            x = torch.rand(1, 3, 256, 256)
            a, b = setup.model.eval().encode(x), merged.encode(x)
        assert float((a.embeddings - b.embeddings).abs().max()) <= 1e-4


def test_sam2_layer_decay_follows_the_hiera_blocks(data: tuple[Path, Path, Path, Path]) -> None:
    world, store, root, ckpt = data
    cfg = load_config(None, overrides(world, store, root / "groups", "model.name=null", f"model.checkpoint={ckpt}",
                                      "optim.lr=1e-3", "optim.layer_decay=0.5"))
    lr = {n: g["lr"] for g in build_training(cfg, CPU).params for n in g["names"]}
    trunk = "sam2.vision_encoder.backbone."  # sam2_tiny: 5 Hiera blocks; layer 0 = patch/pos embedding
    assert lr[trunk + "blocks.4.attn.qkv.weight"] == pytest.approx(1e-3 * 0.5)
    assert lr[trunk + "blocks.0.attn.qkv.weight"] == pytest.approx(1e-3 * 0.5**5)
    assert lr[trunk + "pos_embed"] == pytest.approx(1e-3 * 0.5**6)
    assert lr["sam2.vision_encoder.neck.convs.0.weight"] == 1e-3 and lr["sam2.mask_decoder.iou_token.weight"] == 1e-3


def test_sam2_decoder_run_writes_a_sam2_checkpoint(data: tuple[Path, Path, Path, Path]) -> None:
    world, store, root, ckpt = data
    out = root / "run"
    cfg = load_config(None, overrides(world, store, out, "model.name=null", f"model.checkpoint={ckpt}",
                                      "mode=decoder", "optim.steps=2", f"data.embedding_cache={root / 'cache2'}"))
    metrics = train(cfg)
    assert np.isfinite(metrics["loss"])
    trained = build_model(checkpoint=out / "last.ckpt")
    assert isinstance(trained, SumSam2)
    start = build_model(checkpoint=ckpt)
    enc = [k for k in start.state_dict() if k.startswith(IMAGE_SIDE)]
    assert all(torch.equal(start.state_dict()[k], trained.state_dict()[k]) for k in enc)  # frozen
    assert not torch.equal(start.sam2.mask_decoder.iou_token.weight, trained.sam2.mask_decoder.iou_token.weight)
