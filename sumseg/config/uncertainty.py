"""The settings of ``sumseg uncertainty`` (docs/pseudo-labels.md): the section a YAML file (``--config``)
and the flags set. Defaults are written here once (the flags take theirs from here); checked by the
one :class:`~sumseg.config.checker.Checker`, each problem named by its flag or its key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumseg.config.checker import Checker, load_checked

MAX_SHOWN = 10_000


@dataclass
class UncertaintyConfig:
    """``sumseg uncertainty``: the store, the refiner, the overlays, where it runs."""

    pseudo_labels: str | None = None  # the pseudo-label store made by sumseg pseudo-label (needed)
    refiner: str | None = None  # the refiner checkpoint of sumseg refiner train (needed by the command)
    show: int = 0  # write overlay PNGs of the first N masks
    shard: str | None = None  # "i/N": every N-th image of the store from the i-th
    cache: str | None = None  # embedding cache folder of the refiner's encoder
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    progress: bool = True


UNCERTAINTY_KEYS = {k: k for k in ("pseudo_labels", "refiner", "show", "shard", "cache", "device", "progress")}
"""Each flag of ``sumseg uncertainty`` (its parameter name) → the key of :class:`UncertaintyConfig` it sets."""


def check_uncertainty_options(show: int, c: Checker, key: str = "show") -> None:
    """The ranges of ``sumseg uncertainty``'s numbers (``--show``: overlays written, each a PNG)."""
    c.number(key, show, 0, MAX_SHOWN)


def check_uncertainty_config(cfg: UncertaintyConfig, c: Checker, name: Callable[[str], str] = lambda k: k) -> None:
    """The whole section; ``name(key)`` names each problem (the flag that set the key, or the key)."""
    c.require(name("pseudo_labels"), cfg.pseudo_labels is not None,
              "is needed: the pseudo-label store (--pseudo-labels or pseudo_labels:)")
    c.require(name("refiner"), cfg.refiner is not None, "is needed: the refiner checkpoint (--refiner or refiner:)")
    check_uncertainty_options(cfg.show, c, name("show"))


def load_uncertainty_config(path: str | Path | None = None,
                            flags: Mapping[str, tuple[str, Any]] | None = None) -> UncertaintyConfig:
    """The section from the YAML ``path`` (optional), then the flags given (key → (flag, value)); checked:
    one ConfigError lists every problem, each led by its flag, or by its key and the file that set it."""
    return load_checked(UncertaintyConfig, check_uncertainty_config, path, flags or {})
