"""AdamW parameter groups: layer-wise lr decay on the image encoder, a task-prompt lr multiplier.

Encoder parameters get ``lr · decay^(D + 1 − layer)`` (BEiT/MAE-style, D = encoder blocks):
layer 0 = patch embedding and absolute position embedding, layer i + 1 = block i, layer D + 1 =
the neck (so the neck trains at ``lr``, the last block at ``lr · decay``, the first at
``lr · decay^D``). The prompt encoder and mask decoder train at ``lr``, task prompts at
``lr · task_lr_mult``. Weight decay applies to matrices only: not to biases, norms (1-D), the
encoder's position embeddings (absolute and relative) or the task prompts.
"""

from __future__ import annotations

import re

from torch import nn

ENCODER = "sam.image_encoder."
TASKS = "task_prompts."
_BLOCK = re.compile(r"blocks\.(\d+)\.")


def encoder_layer(name: str, depth: int) -> int:
    """Layer id (0 … depth + 1) of an encoder parameter named relative to the encoder."""
    if name.startswith(("patch_embed.", "pos_embed")):
        return 0
    block = _BLOCK.match(name)
    return int(block.group(1)) + 1 if block else depth + 1


def lr_scale(name: str, depth: int, layer_decay: float, task_lr_mult: float, encoder: str = ENCODER) -> float:
    """Multiplier of the base lr for the parameter ``name`` of a model whose encoder blocks are under the
    prefix ``encoder`` (SumSam's ``sam.image_encoder.``; SumSam2's Hiera trunk: its FPN neck trains at lr)."""
    if name.startswith(encoder):
        return layer_decay ** (depth + 1 - encoder_layer(name.removeprefix(encoder), depth))
    if name.startswith(TASKS):
        return task_lr_mult
    return 1.0


def decays(name: str, ndim: int) -> bool:
    """Whether weight decay applies to the parameter ``name`` of ``ndim`` dimensions."""
    return ndim >= 2 and not (name.startswith(TASKS) or name.endswith("pos_embed") or "rel_pos" in name)


def param_groups(model: nn.Module, depth: int, lr: float, layer_decay: float, weight_decay: float,
                 task_lr_mult: float, encoder: str = ENCODER) -> list[dict]:
    """AdamW groups of ``model``'s trainable parameters, one per (lr, weight decay) pair.

    Each group carries ``lr``, ``weight_decay`` and ``names`` (its parameters' names, for logs and tests);
    a group at the base ``lr`` comes first.
    """
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = lr_scale(name, depth, layer_decay, task_lr_mult, encoder)
        key = (lr * scale, weight_decay if decays(name, p.ndim) else 0.0)
        group = groups.setdefault(key, {"params": [], "names": [], "lr": key[0], "weight_decay": key[1]})
        group["params"].append(p)
        group["names"].append(name)
    return sorted(groups.values(), key=lambda g: g["lr"] != lr)  # the base-lr group first: the one logs show
