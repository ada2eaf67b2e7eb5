"""Mixed precision of the training step: ``fp32``, ``bf16`` or ``fp16`` autocast.

Weights, optimiser state and checkpoints stay float32 in every mode; autocast runs the step's
matmuls and convolutions in the lower precision. ``fp16`` needs loss scaling (a
:class:`torch.amp.GradScaler`, whose state is part of the run's state file so a resume goes on
with the same scale); ``bf16`` has float32's range and needs none.

Where it is supported: CUDA GPUs (``bf16`` only where ``torch.cuda.is_bf16_supported()``, i.e.
Ampere and later) and CPUs (torch's CPU autocast does both, but *slower* than fp32: on the tiny
step, on a Xeon with AMX-BF16, bf16 took 1.25× and fp16 14× the CPU time of fp32 — see
docs/training.md — so on a CPU it is for checking a config, not for speed).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from sumseg.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run, naming it."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision 'bf16' is not supported on {torch.cuda.get_device_name(device)} "
                          "(needs compute capability 8.0+): use fp16")


def autocast(name: str, device: torch.device) -> AbstractContextManager[object]:
    """The autocast context of one step call (nothing for fp32)."""
    dtype = PRECISIONS[name]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(name: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaler: active for fp16 only (disabled, it passes losses and ``step`` straight through)."""
    return torch.amp.GradScaler(device.type, enabled=name == "fp16")
