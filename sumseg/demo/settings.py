"""What a ``sumseg demo`` run does: the world's sizes and every stage's settings (docs/demo.md says why).

Two presets: :data:`FULL` (``sumseg demo``, under 10 minutes on 2 CPU cores) and :data:`QUICK`
(``sumseg demo --quick``, about 2 minutes; the test suite runs it). Every number that determines
the run's results is here and is written to ``DIR/settings.json``; a rerun into the same folder
with other settings is refused instead of mixing results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sumseg.config import Checker
from sumseg.config.defaults import THETA
from sumseg.data.synthetic import AppearanceShift
from sumseg.errors import ConfigError
from sumseg.tasks import PART, SALIENT, TASK_NAMES

DEFAULT_METHODS: tuple[str, ...] = ("vanilla", "self_training", "sum", "sum_no_task", "refined_labels")
"""The paper's comparisons: baselines and both ablations (sumseg.config.Method values)."""
TRUE_U = "sum_true_u"
"""A diagnostic, asked for by name: SUM trained on the pseudo-labels' true U maps (``sumseg.demo.true_uncertainty``)."""
METHODS: tuple[str, ...] = (*DEFAULT_METHODS, TRUE_U)
"""Fine-tuning methods the demo knows; ``foundation`` is the untuned model."""
FOUNDATION = "foundation"
FIRST_ROUNDS: tuple[str, ...] = ("oracle", "score")
PROTOCOLS: tuple[str, ...] = ("clicks", "box")
GENERAL_SET = "general"


@dataclass(frozen=True)
class PseudoLabelChoice:
    """``sumseg pseudo-label``'s settings for the demo (fields of sumseg.config.PseudoLabelSettings, the rest at
    their defaults)."""

    points_per_side: int = 12
    pred_iou_thresh: str = "q0.6"
    stability_score_thresh: str = "q0.5"
    max_per_image: int = 6
    min_area_ratio: float = 0.002
    calibration_images: int = 8


@dataclass(frozen=True)
class TrainChoice:
    """Fine-tuning settings shared by every method (``sumseg train`` keys)."""

    steps: int = 80
    lr: float = 2e-4  # chosen on the validation world (docs/demo.md, *The settings*)
    warmup: int = 10
    task_lr_mult: float = 30.0
    images_per_step: int = 8
    ratio: tuple[int, int] = (3, 1)  # labelled : pseudo-labelled images per step (methods with pseudo-labels)
    masks_per_image: int = 2  # 2 (not 4): half the decoder work per step, chosen on the validation world
    corrections: int = 2
    theta: float = THETA  # the paper's
    loss_resolution: str = "input"  # loss.resolution: the 256-px input frame (published) or "lowres" (64 px)
    iou_head_on_pseudo: bool = False  # loss.iou_head_on_pseudo (official SUM: human labels only)
    task_prompt: str = "every"  # rounds.task_prompt, in training and evaluation (published: every)
    train_task0: bool = False  # optim.train_task0 (published: task 0 fixed at zero)
    max_mask_uncertainty: float | None = None  # data.max_mask_uncertainty (sum: higher mean U left out)


@dataclass(frozen=True)
class DemoSettings:
    """One demo run. Sizes are images per split of the synthetic world (docs/synthetic-world.md)."""

    world_seed: int = 0  # 0: the test world the report is for; 1: the validation world settings were chosen on
    shift: AppearanceShift | None = field(default_factory=AppearanceShift)  # the tasks' and unlabelled images' domain
    tasks: tuple[int, ...] = (SALIENT, PART)  # labelled tasks whose masks conflict (an object vs its parts)
    unlabelled: int = 112
    task_train: int = 32  # labelled training images per task
    task_test: int = 40  # test images per task
    general_test: int = 32  # general test images (every entity and part; task 0 prompt)
    pseudo: PseudoLabelChoice = field(default_factory=PseudoLabelChoice)
    refiner_steps: int = 100
    refiner_lr: float = 1e-4
    train: TrainChoice = field(default_factory=TrainChoice)
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 1
    rounds: int = 20  # NoC@85/90 are defined on 20 rounds
    protocols: tuple[str, ...] = ("clicks",)
    first_rounds: tuple[str, ...] = ("oracle",)
    uncertainty_examples: int = 6  # U-map overlays shown in the report
    real_limit: int | None = 15  # instances per real benchmark (GrabCut, Berkeley); None = skip them

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"demo methods must be some of {', '.join(METHODS)}, got {list(self.methods)}")
        if self.seeds < 1 or self.rounds < 3:
            raise ConfigError(f"demo needs seeds >= 1 and rounds >= 3, got seeds={self.seeds}, rounds={self.rounds}")
        if not self.tasks or any(t not in TASK_NAMES or t == 0 for t in self.tasks) or len(set(self.tasks)) != len(
                self.tasks):
            raise ConfigError(f"demo tasks must be distinct labelled task ids of the world (1, 2, 3), got {self.tasks}")
        if not set(self.protocols) <= set(PROTOCOLS) or not set(self.first_rounds) <= set(FIRST_ROUNDS) or not (
                self.protocols and self.first_rounds):
            raise ConfigError(f"demo protocols must be some of {PROTOCOLS} and first rounds some of {FIRST_ROUNDS}")
        if not 0 <= self.world_seed < 2**32:
            raise ConfigError(f"demo world seed must be in [0, 2^32), got {self.world_seed}")

    @property
    def task_sets(self) -> tuple[str, ...]:
        """The test sets of the labelled tasks, named after their task ("salient", "part")."""
        return tuple(TASK_NAMES[t] for t in self.tasks)

    @property
    def test_sets(self) -> tuple[str, ...]:
        return (*self.task_sets, GENERAL_SET)

    @property
    def protocol_keys(self) -> list[str]:
        """``clicks`` / ``box`` (oracle first round), ``clicks_score`` / ``box_score`` (score first round)."""
        return [p if f == "oracle" else f"{p}_{f}" for f in self.first_rounds for p in self.protocols]

    @property
    def world_sizes(self) -> dict[str, int]:
        """Images per split of the demo's world (the other splits are left out)."""
        sizes = {"unlabeled": self.unlabelled, "general_test": self.general_test}
        for t in self.tasks:
            sizes |= {f"task{t}_train": self.task_train, f"task{t}_test": self.task_test}
        return sizes

    def runs(self) -> list[tuple[str, int]]:
        """(method, seed) of every fine-tuning run, seeds 0..seeds-1 per method."""
        return [(m, s) for s in range(self.seeds) for m in self.methods]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = DemoSettings()
QUICK = DemoSettings(
    unlabelled=12, task_train=4, task_test=4, general_test=2, protocols=PROTOCOLS, first_rounds=FIRST_ROUNDS,
    pseudo=PseudoLabelChoice(points_per_side=6, calibration_images=4, max_per_image=4),
    refiner_steps=6,
    train=TrainChoice(steps=6, warmup=1, images_per_step=2, ratio=(1, 1), masks_per_image=2, corrections=1),
    rounds=3, uncertainty_examples=2, real_limit=None,
)


MAX_SEEDS = 100  # fine-tuning runs per method: each is a whole training and evaluation
MAX_WORKERS = 256
DEMO_FLAGS = {"seeds": "--seeds", "workers": "--workers", "world_seed": "--world-seed"}
"""``sumseg demo``'s flag of each number :func:`check_demo_options` checks."""


def check_demo_options(c: Checker, seeds: int, workers: int, world_seed: int,
                       keys: dict[str, str] | None = None, shift: AppearanceShift | None = None) -> None:
    """The ranges of the demo's numbers, each problem named by ``keys[name]`` (the CLI's flags,
    :data:`DEMO_FLAGS`) or by its name (``run_demo``'s arguments and :class:`DemoSettings` fields); the
    world's ``shift`` as ``sumseg data synth`` checks it (before the demo writes anything)."""
    from sumseg.data.synthetic_world import check_shift

    k = (keys or {}).get
    c.number(k("seeds", "seeds"), seeds, 1, MAX_SEEDS)
    c.number(k("workers", "workers"), workers, 0, MAX_WORKERS)
    c.number(k("world_seed", "world_seed"), world_seed, 0, 2**32 - 1)
    if shift is not None:
        check_shift(c, shift)


def preset(quick: bool, seeds: int = 1, methods: Sequence[str] | None = None, world_seed: int = 0) -> DemoSettings:
    """:data:`QUICK` or :data:`FULL` with ``seeds`` fine-tuning seeds per method (and other ``methods``), on
    the world of ``world_seed``."""
    base = QUICK if quick else FULL
    return replace(base, seeds=seeds, methods=tuple(m.strip() for m in methods) if methods else base.methods,
                   world_seed=world_seed)
