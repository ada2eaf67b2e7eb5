"""The one config tree: every command's settings as plain dataclasses, one loader, one checker.

==================== ======================================================================
module               holds
==================== ======================================================================
``defaults``         the method's default numbers, each written once (θ, focal weight, box jitter, ...)
``checker``          :class:`Checker`: the value checks of every command (config keys and flags)
``sections``         the shared sections ``model``, ``optim``, ``run`` and their checks
``train``            ``sumseg train``'s :class:`TrainConfig` (and its own sections), loader, dict
``refiner``          ``sumseg refiner train``'s :class:`RefinerConfig`, loader, dict
``pretrain``         ``sumseg pretrain``'s :class:`PretrainConfig` (a flat record; ``optim``/``run`` views)
``pseudo_label``     ``sumseg pseudo-label``'s :class:`PseudoLabelConfig` (its ``amg``: :class:`PseudoLabelSettings`)
``uncertainty``      ``sumseg uncertainty``'s :class:`UncertaintyConfig`
==================== ======================================================================

Every tree is read by :func:`sumseg.config_io.load_structured` (YAML file, then ``key=value``
overrides). The config room is tier 0 (docs/architecture.md): it imports no room and no torch; the
one translation into the training loop's settings is ``sumseg.train.loop.loop_config(optim, run)``.
``sumseg pseudo-label`` and ``sumseg uncertainty`` read their section from ``--config FILE.yaml``
with their flags over it (:func:`sumseg.config_io.load_with_flags`); their flags and ``sumseg demo``'s
are checked with the same :class:`Checker` (docs/reliability.md, class 3).
"""

from sumseg.config.checker import Checker, refuse_bad
from sumseg.config.pretrain import PretrainConfig
from sumseg.config.pseudo_label import (
    PSEUDO_LABEL_FLAGS,
    PseudoLabelConfig,
    PseudoLabelSettings,
    check_pseudo_label_config,
    check_pseudo_label_settings,
    load_pseudo_label_config,
)
from sumseg.config.refiner import (
    RefinerConfig,
    RefinerData,
    RefinerInputsConfig,
    RefinerOptim,
    check_refiner_config,
    load_refiner_config,
)
from sumseg.config.refiner import config_dict as refiner_config_dict
from sumseg.config.sections import (
    DEVICES,
    MAX_STEPS,
    ModelConfig,
    OptimConfig,
    Precision,
    RunConfig,
    Schedule,
    check_model,
    check_optim,
    check_run,
)
from sumseg.config.train import (
    MOVED_KEYS,
    NEEDS_PSEUDO,
    RESUME_FREE,
    DataConfig,
    LabelledSet,
    LoraConfig,
    LossConfig,
    LossResolution,
    Method,
    Mode,
    RoundsConfig,
    TaskPromptRounds,
    TrainConfig,
    check_config,
    config_changes,
    load_config,
    to_dict,
    to_yaml,
)
from sumseg.config.uncertainty import (
    MAX_SHOWN,
    UncertaintyConfig,
    check_uncertainty_config,
    check_uncertainty_options,
    load_uncertainty_config,
)

__all__ = [
    "DEVICES", "MAX_SHOWN", "MAX_STEPS", "MOVED_KEYS", "NEEDS_PSEUDO", "PSEUDO_LABEL_FLAGS", "RESUME_FREE", "Checker",
    "DataConfig", "LabelledSet", "LoraConfig", "LossConfig", "LossResolution", "Method", "Mode", "ModelConfig",
    "OptimConfig", "Precision", "PretrainConfig", "PseudoLabelConfig", "PseudoLabelSettings", "RefinerConfig",
    "RefinerData", "RefinerInputsConfig", "RefinerOptim", "RoundsConfig", "RunConfig", "Schedule", "TaskPromptRounds",
    "TrainConfig", "UncertaintyConfig", "check_config", "check_model", "check_optim", "check_pseudo_label_config",
    "check_pseudo_label_settings", "check_refiner_config", "check_run", "check_uncertainty_config",
    "check_uncertainty_options", "config_changes", "load_config", "load_pseudo_label_config", "load_refiner_config",
    "load_uncertainty_config", "refiner_config_dict", "refuse_bad", "to_dict", "to_yaml",
]
