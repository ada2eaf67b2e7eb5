"""The loop's mechanics on a small real step module: accumulation, the NaN/inf guard, in-process
resume bit for bit (also with fp16's loss scale), bf16, TensorBoard events and metrics rows.

The step regresses the tiny SAM's IoU head (256 → 4 MLP) onto fixed random targets: a real
``nn.Module`` whose losses are exactly computable, so each test takes well under a second; the
interactive SAM step runs under the loop in test_train_resume.py and test_train_ddp.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from sumseg import build_model
from sumseg.errors import ConfigError, TrainingError
from sumseg.models.checkpoint import read_checkpoint
from sumseg.models.sum_sam import SumSam
from sumseg.train.distributed import Replica, weights_digest
from sumseg.train.loop import LoopConfig, run_loop

POOL = 256  # rows of fixed data; call ``draw`` of ``n`` rows reads rows [draw·n, draw·n + n)


class HeadStep(nn.Module):
    """Step module: mean squared error of the IoU head's 4 outputs on (x, y)."""

    def __init__(self, model: SumSam) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        pred = self.model.sam.mask_decoder.iou_prediction_head(x)  # (n, 4)
        mse = ((pred.float() - y) ** 2).mean()
        return {"loss": mse, "mse": mse}


def head_setup() -> tuple[HeadStep, SumSam, list[dict]]:
    model = build_model("tiny")
    head = model.sam.mask_decoder.iou_prediction_head
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return HeadStep(model), model, [{"params": list(head.parameters())}]


def inputs_fn(n: int, y_scale: float = 1.0, nan_at: int | None = None, stop_at: int | None = None,
              same_rows: bool = False):
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(POOL, 256, generator=g), torch.randn(POOL, 4, generator=g) * y_scale

    def inputs(draw: int, replica: Replica) -> tuple[Tensor, Tensor]:
        if draw == stop_at:
            raise KeyboardInterrupt  # the process dies inside this step
        start = 0 if same_rows else draw * n
        x, y = xs[start:start + n], ys[start:start + n].clone()
        if draw == nan_at:
            y[0, 0] = float("nan")  # a corrupt target
        return x, y

    return inputs


def train(run_dir: Path, inputs, n: int = 2, grads: list[dict[str, Tensor]] | None = None,
          **loop) -> tuple[dict[str, float], SumSam]:
    step, model, params = head_setup()
    if grads is not None:
        record_grads(model, grads)
    cfg = LoopConfig(**{"steps": 6, "lr": 1e-2, "save_every": 2, "log_every": 1, "device": "cpu", **loop})
    row = run_loop(step, inputs, model, params, cfg, run_dir, {"test": True}, n, progress=False)
    return row, model


def same_weights(a: Path, b: Path) -> bool:
    ta, tb = read_checkpoint(a)[0], read_checkpoint(b)[0]
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def record_grads(model: SumSam, calls: list[dict[str, Tensor]]) -> None:
    """Append to ``calls``, after every backward, each IoU-head parameter's ``.grad`` (the running sum)."""
    for name, p in model.sam.mask_decoder.iou_prediction_head.named_parameters():
        def hook(p: Tensor, name: str = name) -> None:
            if not calls or name in calls[-1]:
                calls.append({})
            assert p.grad is not None
            calls[-1][name] = p.grad.detach().clone()
        p.register_post_accumulate_grad_hook(hook)


def test_accumulation_equals_one_call_on_all_the_rows(tmp_path: Path) -> None:
    # 2 calls of 2 rows, each loss halved, add up to the gradient of 1 call on the 4 rows (mean MSE).
    # What accumulation promises is that *gradient*, equal up to float32 round-off of the reordered sums.
    # Adam divides by sqrt(v), which amplifies that round-off on weights whose gradient is tiny (to ~1e-5
    # after 3 steps, depending on the machine's kernels), so the weights are only checked to a bound
    # Adam keeps: a hundredth of the most a weight can move (lr per step).
    lr, steps = 1e-2, 3
    calls_a: list[dict[str, Tensor]] = []
    calls_b: list[dict[str, Tensor]] = []
    row_a, a = train(tmp_path / "a", inputs_fn(2), n=2, grads=calls_a, accumulate=2, steps=steps, lr=lr)
    row_b, b = train(tmp_path / "b", inputs_fn(4), n=4, grads=calls_b, steps=steps, lr=lr)
    assert len(calls_a) == 2 * steps and len(calls_b) == steps  # one record per backward
    # step 0: both runs start from the same weights, so the gradients must agree to round-off
    grad_a, grad_b = calls_a[1], calls_b[0]  # after the 2nd micro-call of step 0 / the one call
    half = calls_a[0]
    for k in grad_b:
        scale = float(grad_b[k].abs().max())
        assert scale > 0, k
        torch.testing.assert_close(grad_a[k], grad_b[k], rtol=1e-5, atol=1e-6 * scale, msg=k)
        assert not torch.allclose(half[k], grad_b[k], rtol=1e-3, atol=1e-3 * scale), k  # it did accumulate
    # the loss curve follows the same path; the weights stay within lr * steps / 100 of each other
    curve = [[json.loads(ln)["loss"] for ln in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
             for d in ("a", "b")]
    assert len(curve[0]) == steps and curve[0] == pytest.approx(curve[1], rel=1e-5)
    assert row_a["loss"] == pytest.approx(row_b["loss"], rel=1e-5)
    head_a = a.sam.mask_decoder.iou_prediction_head.state_dict()
    head_b = b.sam.mask_decoder.iou_prediction_head.state_dict()
    init = build_model("tiny").sam.mask_decoder.iou_prediction_head.state_dict()
    for k in head_a:
        assert float((head_a[k] - head_b[k]).abs().max()) <= lr * steps * 1e-2, k
        assert float((head_a[k] - init[k]).abs().max()) > lr / 2, k  # it did train (Adam moves ~lr per step)
    assert torch.equal(a.sam.image_encoder.pos_embed, init_pos := build_model("tiny").sam.image_encoder.pos_embed)
    assert torch.equal(b.sam.image_encoder.pos_embed, init_pos)  # frozen weights untouched


def test_nan_in_data_stops_keeps_last_good_checkpoint_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    train(tmp_path / "ref", inputs_fn(2))
    stop = (r"non-finite loss, mse, gradient norm in step 4 of 6 \(lower the lr or check the data\); stopped\. "
            r".*run/last\.ckpt keeps the last good weights \(after 2 of 6 steps\)")  # steps as a user counts
    with pytest.raises(TrainingError, match=stop):
        train(tmp_path / "run", inputs_fn(2, nan_at=3))
    _, meta = read_checkpoint(tmp_path / "run" / "last.ckpt")
    assert meta is not None and meta.step == 1
    train(tmp_path / "run", inputs_fn(2))  # the data fixed, the same command goes on from step 2
    assert same_weights(tmp_path / "ref" / "last.ckpt", tmp_path / "run" / "last.ckpt")
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(ln) for ln in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(6))  # step 2 was logged twice, kept once
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref]
    assert sorted(p.name for p in (tmp_path / "run" / "state").iterdir()) == ["step_00000005.pt"]


def test_tensorboard_events_read_as_one_run_after_a_resume(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, inputs_fn(2, stop_at=3))  # steps 0-2 logged, step 1 saved
    train(tmp_path, inputs_fn(2))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/images_per_s"} <= set(events.Tags()["scalars"])
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(6))  # the redone step 2 was purged from the first file
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows])


def test_inf_lr_stops_before_saving_non_finite_weights(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"non-finite weights after step 1 .*no checkpoint was written yet"):
        train(tmp_path, inputs_fn(2), lr=float("inf"), save_every=1)
    assert not (tmp_path / "last.ckpt").exists() and not (tmp_path / "state").exists()


def test_fp16_resume_restores_the_loss_scale(tmp_path: Path) -> None:
    # targets × 10 overflow fp16 gradients at the initial scale 65536: steps 0, 1 and 3 are skipped
    # by the scaler and the scale halves; a resume that forgot the scale would redo the overflow
    train(tmp_path / "ref", inputs_fn(2, y_scale=10.0), precision="fp16")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", inputs_fn(2, y_scale=10.0, stop_at=2), precision="fp16")
    state = torch.load(tmp_path / "run" / "state" / "step_00000001.pt", weights_only=True)
    assert state["scaler"]["scale"] == 16384.0
    train(tmp_path / "run", inputs_fn(2, y_scale=10.0), precision="fp16")
    assert same_weights(tmp_path / "ref" / "last.ckpt", tmp_path / "run" / "last.ckpt")


def test_bf16_trains_and_unknown_precision_is_refused(tmp_path: Path) -> None:
    row, _ = train(tmp_path / "bf16", inputs_fn(2, same_rows=True), precision="bf16", steps=3)
    first = json.loads((tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss"] < first["loss"]
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        train(tmp_path / "fp8", inputs_fn(2), precision="fp8")
    with pytest.raises(ConfigError, match="LoopConfig.accumulate must be >= 1, got 0"):
        LoopConfig(steps=1, accumulate=0)


def test_weights_digest_sees_one_ulp() -> None:
    a = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[517] = torch.nextafter(b[517], torch.tensor(float("inf")))
    assert weights_digest([a]) == weights_digest([a.clone()])
    assert weights_digest([a]) != weights_digest([b])
    assert weights_digest([a.to(torch.bfloat16)]) != weights_digest([a])
