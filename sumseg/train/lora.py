"""LoRA on the image encoder's attention (peft), and checkpoints that hold the merged weights.

``add_lora`` wraps each ``blocks.<i>.attn.<target>`` Linear of ``sam.image_encoder`` (SAM's ``qkv``
and ``proj`` by default) in a peft LoRA layer: ``y = x W0ᵀ + b + (alpha / rank) · x Aᵀ Bᵀ``,
B zero-initialised, so the model starts as the foundation model. Checkpoints never hold adapters:
:func:`merged_state_dict` folds ``(alpha / rank) · B A`` into ``W0`` and names every tensor as
stock SAM does, so a LoRA run's ``last.ckpt`` loads strictly with ``build_model``, ``sumseg eval``
and ``sumseg export`` like any other. The run's state file keeps the adapters for resuming.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sumseg.errors import ConfigError
from sumseg.models.checkpoint import save_checkpoint

if TYPE_CHECKING:
    from peft.tuners.lora import Linear as LoraLinear

    from sumseg.models.backbones import Backbone

ADAPTER = "default"
# peft (and the transformers it imports) is imported where it is used: ~2 s of start-up that
# every process not training LoRA would pay.


def add_lora(model: Backbone, rank: int, alpha: int, targets: Sequence[str], dropout: float = 0.0) -> list[str]:
    """Inject LoRA adapters into the encoder's attention Linears named ``targets``; return their names.

    The adapters' A matrices are drawn from torch's global generator (seed it first).
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    pattern = rf"blocks\.\d+\.attn\.({'|'.join(re.escape(t) for t in targets)})"
    prefix, encoder = model.encoder_blocks()  # SAM's ViT or SAM 2's Hiera trunk (both: attn.qkv, attn.proj)
    found = [n for n, m in encoder.named_modules() if re.fullmatch(pattern, n) and isinstance(m, torch.nn.Linear)]
    if not found:
        raise ConfigError(f"lora.targets {list(targets)} name no Linear layer in the encoder's attention blocks "
                          "(SAM's are qkv and proj)")
    config = PeftLoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    inject_adapter_in_model(config, encoder, adapter_name=ADAPTER)
    return [f"{prefix}{n}" for n in found]


def lora_layers(model: torch.nn.Module) -> dict[str, LoraLinear]:
    """The peft LoRA Linear layers of ``model``, by module name."""
    from peft.tuners.lora import Linear as LoraLinear

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def is_adapter(name: str) -> bool:
    """True for the parameters peft adds (``lora_A``, ``lora_B``, ...)."""
    return ".lora_" in name


@torch.no_grad()
def merged_state_dict(model: Backbone) -> dict[str, Tensor]:
    """``model``'s state with every adapter folded into its base weight, under the stock key names.

    The model itself is not changed (W0 + ΔW is computed into new tensors).
    """
    layers = lora_layers(model)
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if is_adapter(key):
            continue
        owner, _, leaf = key.rpartition(".base_layer.")
        if owner and owner in layers:
            if leaf == "weight":
                value = value + layers[owner].get_delta_weight(ADAPTER).to(value.dtype)
            key = f"{owner}.{leaf}"
        out[key] = value.detach()
    return out


class MergedSaver:
    """The loop's ``save_model`` for a LoRA run: ``last.ckpt`` holds the merged weights.

    One stock model of the same architecture (the model's ``new_like()``) is kept on the CPU and receives
    the merged weights at each save (strict load, so a key the merge missed fails loudly).
    """

    def __init__(self, model: Backbone, config: dict) -> None:
        self.model = model
        self.config = config
        self.stock: Backbone = model.new_like()

    def merged(self) -> Backbone:
        self.stock.load_state_dict({k: v.cpu() for k, v in merged_state_dict(self.model).items()}, strict=True)
        return self.stock

    def __call__(self, path: Path, step: int) -> None:
        save_checkpoint(path, self.merged(), step=step, config=self.config)
