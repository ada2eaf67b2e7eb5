"""The model names every command accepts and the one rule for a (name, checkpoint) pair.

Plain data (no torch): the config checks and the CLI read it before anything is built;
:mod:`sumseg.models.registry` builds each architecture.
"""

from __future__ import annotations

from pathlib import Path

MODEL_NAMES: tuple[str, ...] = ("vit_h", "vit_l", "vit_b", "tiny", "hq_vit_h", "hq_vit_l", "hq_vit_b", "hq_tiny")
"""The registry's architectures (:data:`sumseg.models.registry.ARCHS` builds each)."""
SAM2_NAMES: tuple[str, ...] = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "sam2_tiny")
"""SAM 2.1 image models, built from ``transformers`` classes (:data:`sumseg.models.sam2_arch.SAM2_ARCHS`)."""
PRETRAINED: dict[str, Path] = {
    # the tiny foundation model trained by `sumseg pretrain` (docs/tiny-foundation.md), a sumseg checkpoint
    "tiny_foundation": Path(__file__).resolve().parent / "assets" / "tiny_foundation.safetensors",
}
"""Weights shipped inside the package, by name: a name here goes wherever a registry name does
(``--model``, ``model.name``, ``build_model``), with no checkpoint."""
ARCHS_OF: dict[str, str] = {"tiny_foundation": "tiny"}
"""The registry architecture of each shipped name."""
MODEL_CHOICES: tuple[str, ...] = (*MODEL_NAMES, *SAM2_NAMES, *PRETRAINED)


def model_problems(name: str | None, checkpoint: object,
                   keys: tuple[str, str] = ("model.name", "model.checkpoint")) -> list[tuple[str, str]]:
    """What is wrong with a (model name, checkpoint) pair: (key, message) per problem, [] when fine.

    The one rule of every command (``sumseg train``, ``refiner train``, ``pseudo-label``, ``eval``,
    ``build_model``): the name is a registry name or a shipped one (:data:`PRETRAINED`); it may be
    left out only with a checkpoint (a sumseg checkpoint names its model); a shipped name takes no
    checkpoint. ``keys`` are how the caller spells the two (``--model``, ``--checkpoint``).
    """
    name_key, ckpt_key = keys
    left_out = "null" if "." in name_key else "omitted"
    if name is not None and name not in MODEL_CHOICES:
        return [(name_key, f"{name_key} must be one of {', '.join(MODEL_CHOICES)}, got {name!r}")]
    if name is None and checkpoint is None:
        return [(name_key, f"{name_key} may be {left_out} only with a {ckpt_key}")]
    if name in PRETRAINED and checkpoint is not None:
        return [(ckpt_key, f"{ckpt_key} must be {left_out} with {name_key} {name} (that name loads the weights "
                           f"shipped with sumseg); for weights of your own give {name_key} {ARCHS_OF[name]} "
                           "or leave it out")]
    return []


def refiner_problem(name: str | None, where: str) -> str | None:
    """Why ``name`` cannot be a refiner (``where``: the key or file that gave it), None when it can.

    The one rule of ``sumseg refiner train`` (``model.name``, or the model its checkpoint holds),
    ``sumseg uncertainty`` (``--refiner``) and ``sumseg train`` (``data.refiner``): a refiner is a plain
    SAM model, because its U maps and refined labels are the single-output mask decoder's logits."""
    if name is None or not ARCHS_OF.get(name, name).startswith("hq_"):
        return None
    return (f"{where}: a refiner must be a plain SAM model, got the HQ-SAM model {name} (U maps and refined "
            f"labels are SAM's mask-decoder logits); train the refiner from {name.removeprefix('hq_')}")
