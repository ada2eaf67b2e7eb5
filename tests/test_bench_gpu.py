"""``benchmarks/gpu.py`` in its tiny configuration on a CPU: every stage reported, ratios sane, SDPA attention
equal to SAM's own, pseudo-labels matched one to one; failures and the time budget recorded, not raised."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu

FAST = ["--size", "tiny", "--device", "cpu", "--skip", "train/bf16_sdpa_compile",
        "--set", "reps=1,warmup=0,pl_images=1,eval_instances=1"]


def _positive(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_gpu")
    return gpu.main(["--out", str(out), *FAST]), out


def test_every_stage_reported(tiny_run: tuple[dict, Path]) -> None:
    res, out = tiny_run
    on_disk = json.loads((out / "gpu.json").read_text())
    assert on_disk["stages"].keys() == set(gpu.STAGES) == res["stages"].keys()
    st = on_disk["stages"]
    errors = {k: v["error"] for k, v in st.items() if v["status"] == "error"}
    assert not errors
    assert st["train/bf16_sdpa_compile"]["status"] == "skipped"
    assert st["max_batch"]["status"] == "skipped" and st["max_batch"]["reason"].startswith("n/a on CPU")
    assert {k for k, v in st.items() if v["status"] == "ok"} == set(gpu.STAGES) - {"train/bf16_sdpa_compile",
                                                                                   "max_batch"}
    assert on_disk["device"]["name"].startswith("CPU") and not on_disk["budget_exhausted"]
    md = (out / "gpu.md").read_text()
    assert "| fp32 | ok | 2 × 4 |" in md and "| pseudo_labels | ok |" in md and "CPU" in md.splitlines()[0]


def test_figures_finite_and_positive(tiny_run: tuple[dict, Path]) -> None:
    st = tiny_run[0]["stages"]
    assert _positive(st["matmul"]["tflops"]) and _positive(st["matmul"]["ratio"])
    for s in ("fp32", "bf16", "bf16_ckpt", "bf16_sdpa"):
        t = st[f"train/{s}"]
        assert t["rounds"] == 7 and t["images"] == 2 and t["masks_per_image"] == 4
        for key in ("images_per_s", "ratio_vs_fp32", "mfu", "model_tflop_per_step", "peak_memory_bytes"):
            assert _positive(t[key]), (s, key, t[key])
        assert math.isfinite(t["first_loss"])
    assert st["train/fp32"]["ratio_vs_fp32"] == 1.0
    assert st["train/bf16_ckpt"]["checkpointed_blocks"] == 4 and st["train/bf16_sdpa"]["sdpa_attentions"] == 4
    assert st["train/bf16"]["first_loss_rel_diff_vs_fp32"] < 0.05  # bf16 autocast: the same step, rounded
    for name in ("decoder_only", "pseudo_labels", "interactive_eval"):
        assert _positive(st[name]["ratio"]), name


def test_sdpa_matches_stock_attention(tiny_run: tuple[dict, Path]) -> None:
    sd = tiny_run[0]["stages"]["sdpa_check"]
    for kind in ("global", "window"):
        assert sd[kind]["max_abs_output"] > 0.1  # a non-trivial output: the comparison means something
        assert sd[kind]["max_abs_diff_fp32"] <= 1e-4
        assert sd[kind]["max_abs_grad_diff_fp32"] <= 1e-3


def test_pseudo_labels_one_to_one(tiny_run: tuple[dict, Path]) -> None:
    pl = tiny_run[0]["stages"]["pseudo_labels"]
    assert pl["ours_masks"] > 0 and pl["one_to_one"]
    assert pl["matched"] == pl["matched_of"] == pl["ours_masks"] == pl["stock_masks"]
    ev = tiny_run[0]["stages"]["interactive_eval"]
    assert ev["rounds"] == 20 and ev["equal_iou_curves"] == ev["instances"] == 1


def test_sdpa_forward_on_the_tiny_encoder() -> None:
    """The patched encoder gives SAM's embeddings (the whole ViT, rel-pos tables made non-zero)."""
    from sumseg import build_model

    model = build_model("tiny")
    with torch.no_grad():
        for a in gpu.vit_attentions(model):
            a.rel_pos_h.normal_(0, 0.5)
            a.rel_pos_w.normal_(0, 0.5)
    patched = copy.deepcopy(model)
    assert gpu.use_sdpa(patched) == 4
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = model.sam.image_encoder(x), patched.sam.image_encoder(x)
    assert torch.allclose(out, ref, atol=1e-4, rtol=0)


def test_budget_and_failures_are_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = gpu.main(["--out", str(tmp_path / "none"), "--size", "tiny", "--device", "cpu", "--budget-s", "0"])
    assert res["budget_exhausted"] and set(res["stopped_stages"]) == set(gpu.STAGES)
    assert all(v["status"] == "skipped" and "time budget" in v["reason"] for v in res["stages"].values())

    run = gpu.Run(tmp_path / "err", "tiny", gpu.SIZES["tiny"], torch.device("cpu"), time.perf_counter() + 60,
                  time.perf_counter(), {"matmul"})
    run.result = {"stages": {}, "budget_s": 60, "stopped_stages": [], "device": gpu.device_info(run.device),
                  "model": "tiny", "image_size": 256, "date": "now"}

    def broken(run: gpu.Run) -> dict:
        raise RuntimeError("no such kernel")

    gpu.run_stage(run, "matmul", broken)
    gpu.run_stage(run, "sdpa_check", broken)
    st = json.loads((tmp_path / "err" / "gpu.json").read_text())["stages"]
    assert st["matmul"]["status"] == "error" and "RuntimeError: no such kernel" in st["matmul"]["error"]
    assert st["sdpa_check"]["status"] == "skipped"
    assert "RuntimeError: no such kernel" in (tmp_path / "err" / "gpu.md").read_text()


def test_stage_selection() -> None:
    assert gpu._select("train/fp32", "") == {"matmul", "train/fp32"}
    assert gpu._select("", "train,max") == set(gpu.STAGES) - {s for s in gpu.STAGES if s.startswith(("train", "max"))}
    with pytest.raises(SystemExit):
        gpu._select("nonsense", "")
    assert gpu._overrides("reps=3,search_images=1/2") == {"reps": 3, "search_images": (1, 2)}


@pytest.mark.slow
def test_tiny_run_with_compile(tmp_path: Path) -> None:
    """The whole tiny configuration, torch.compile included (minutes on a CPU: inductor compiles C++)."""
    res = gpu.main(["--out", str(tmp_path), "--size", "tiny", "--device", "cpu"])
    st = res["stages"]
    assert not [k for k, v in st.items() if v["status"] == "error"]
    assert _positive(st["train/bf16_sdpa_compile"]["ratio_vs_fp32"])
