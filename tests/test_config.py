"""The config tree: YAML + overrides, errors that name the key's path, value checks, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sumseg.config import (
    LossResolution,
    Method,
    Mode,
    Precision,
    Schedule,
    TaskPromptRounds,
    TrainConfig,
    config_changes,
    load_config,
    to_dict,
    to_yaml,
)
from sumseg.errors import ConfigError

CONFIGS = Path(__file__).parent.parent / "configs"
BASE = ["model.name=tiny", "data.labelled=[{path: data/a, task: 1}]", "data.pseudo_labels=pl"]


def load(*overrides: str, path: Path | None = None) -> TrainConfig:
    return load_config(path, [*BASE, *overrides])


def refused(*overrides: str, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        load(*overrides, path=path)
    return str(e.value)


def test_defaults_are_the_published_settings() -> None:
    cfg = load()
    assert (cfg.optim.lr, cfg.optim.layer_decay, cfg.data.ratio) == (1e-5, 0.8, [1.0, 1.0])
    assert (cfg.rounds.corrections, cfg.rounds.final_round, cfg.rounds.p_box) == (5, True, 0.5)
    assert cfg.rounds.task_prompt is TaskPromptRounds.every and not cfg.optim.train_task0  # the official code
    assert (cfg.loss.resolution, cfg.loss.focal_weight, cfg.loss.theta) == (LossResolution.input, 20.0, 0.6)
    assert cfg.loss.iou_head_on_pseudo is False
    assert (cfg.method, cfg.mode, cfg.optim.schedule, cfg.run.precision) == (
        Method.sum, Mode.full, Schedule.cosine, Precision.fp32)
    assert cfg.data.labelled[0].path == "data/a" and cfg.data.labelled[0].task == 1


def test_yaml_then_overrides_in_order(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-4\n  steps: 7\nmethod: vanilla\nmode: lora\nlora: {rank: 4}\n")
    cfg = load("optim.lr=2e-4", "lora.targets=[qkv]", "optim.lr=3e-4", path=f)
    assert cfg.optim.lr == 3e-4 and cfg.optim.steps == 7  # YAML's "1e-4" (a YAML 1.1 string) became a float
    assert cfg.method is Method.vanilla and cfg.mode is Mode.lora
    assert cfg.lora.rank == 4 and cfg.lora.targets == ["qkv"]


@pytest.mark.parametrize(("override", "names"), [
    ("optim.lrr=1", "unknown key optim.lrr"),
    ("nosuch.section=1", "unknown key nosuch"),
    ("data.labelled=[{path: a, tusk: 1}]", "unknown key data.labelled[0].tusk"),
    ("optim.lr=fast", "optim.lr: Value 'fast'"),
    ("optim.steps=1e12", "optim.steps: Value '1000000000000.0'"),
    ("optim.steps=2.5", "optim.steps"),
    ("rounds.final_round=maybe", "rounds.final_round"),
    ("data.ratio=[one, 1]", "data.ratio[0]"),
    ("data.labelled=[{path: a, task: x}]", "data.labelled[0].task: Value 'x'"),
    ("data.labelled=[{path: a}, {path: b, task: [1]}]", "data.labelled[1].task"),
    ("method=magic", "method: Invalid value 'magic'"),
    ("optim.lr", "expected key=value"),
    ("data.labelled=[a", "unreadable value: while parsing a flow sequence"),  # YAML's error, not a traceback
    ("=3", "expected key=value"),
])
def test_bad_keys_and_types_name_the_key(override: str, names: str) -> None:
    message = refused(override)
    assert names in message and f"override {override!r}" in message


@pytest.mark.parametrize(("override", "names"), [
    ("optim.lr=-1", "optim.lr must lie in (0, 1], got -1.0"),
    ("optim.lr=0", "optim.lr must lie in (0, 1]"),
    ("optim.lr=nan", "optim.lr must be a finite number, got nan"),
    ("optim.grad_clip=inf", "optim.grad_clip must be a finite number"),
    ("optim.steps=1000000000000", "optim.steps must lie in [1, 1e+08]"),
    ("optim.steps=0", "optim.steps must lie in [1"),
    ("optim.betas=[0.9]", "optim.betas must be [beta1, beta2]"),
    ("data.ratio=[0, 0]", "data.ratio must give labelled or pseudo-labelled images a share > 0"),
    ("data.ratio=[1, -1]", "data.ratio[1] must lie in"),
    ("data.ratio=[1, 2, 3]", "data.ratio must be [labelled, pseudo]"),
    ("data.masks_per_image=0", "data.masks_per_image"),
    ("rounds.p_box=1.5", "rounds.p_box"),
    ("loss.theta=1", "loss.theta must lie in [0, 1)"),
    ("loss.focal_weight=nan", "loss.focal_weight must be a finite number"),
    ("loss.resolution=full", "loss.resolution"),
    ("rounds.theta=0.5", "rounds.theta is now loss.theta: rename it"),
    ("rounds.task_prompt=last", "rounds.task_prompt"),
    ("lora.targets=[]", "lora.targets"),
    ("model.tasks=[0, 0]", "model.tasks must be distinct"),
    ("model.name=vit_z", "model.name must be one of"),
    ("data.labelled=[{path: a, task: 5000}]", "data.labelled[0].task must lie in"),
    ("run.device=tpu", "run.device must be one of auto, cpu, cuda"),
])
def test_bad_values_name_the_key_and_the_override(override: str, names: str) -> None:
    assert f"override {override!r}: {names}" in refused(override)


@pytest.mark.parametrize(("override", "names"), [
    ("data.labelled=[x]", "data.labelled[0] must be a section of keys, got 'x'"),
    ("data.labelled={a: 1}", "data.labelled must be a list, got a section"),
    ("data.labelled=[[1]]", "data.labelled[0] must be a section of keys, got a list"),
    ("data.labelled=[{path: a, task: 1}, 7]", "data.labelled[1] must be a section of keys, got 7"),
    ("data.labelled=[{path: {a: 1}}]", "data.labelled[0].path must be a single value, got a section"),
    ("data.ratio={a: 1}", "data.ratio must be a list, got a section"),
    ("model.tasks=[[1]]", "model.tasks[0] must be a single value, got a list"),
    ("lora.targets=[{a: 1}]", "lora.targets[0] must be a single value, got a section"),
    ("optim=[1, 2]", "optim must be a section of keys, got a list"),
    ("run=5", "run must be a section of keys, got 5"),
    ("optim.lr={a: 1}", "optim.lr must be a single value, got a section"),
    ("data.pseudo_labels=[a]", "data.pseudo_labels must be a single value, got a list"),
])
def test_wrong_shapes_name_the_key(override: str, names: str) -> None:
    assert f"override {override!r}: {names}" in refused(override)


def test_missing_pieces_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data.pseudo_labels is needed by method sum \(a pseudo-label store\)"):
        load_config(None, ["model.name=tiny", "data.labelled=[{path: a}]"])
    with pytest.raises(ConfigError, match=r"data.labelled is needed by method vanilla"):
        load_config(None, ["model.name=tiny", "method=vanilla"])
    with pytest.raises(ConfigError, match=r"model.name may be null only with a model.checkpoint"):
        load_config(None, ["method=vanilla", "data.labelled=[{path: a}]"])
    with pytest.raises(ConfigError, match=r"data.refiner is needed by method refined_labels"):
        load("method=refined_labels")
    with pytest.raises(ConfigError, match=r"data.labelled\[0\].path: .*missing mandatory value"):
        load_config(None, ["model.name=tiny", "data.labelled=[{task: 1}]", "data.pseudo_labels=pl"])
    # a labelled-only run needs no store; a pseudo-only run needs no labelled set
    assert load_config(None, ["model.checkpoint=m.ckpt", "method=vanilla", "data.labelled=[{path: a}]"]
                       ).data.pseudo_labels is None
    assert load_config(None, ["model.name=tiny", "data.ratio=[0, 1]", "data.pseudo_labels=pl"]).data.labelled == []


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not readable YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: the config must be a section of keys, got a list"):
        load_config(bad)
    bad.write_text("? [1, 2]\n: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: not readable YAML"):
        load_config(bad)
    bad.write_text("1: 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key 1"):
        load_config(bad)
    bad.write_text("optim:\n  lr: 0.0\n")  # a bad value names the file that set it
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.lr must lie in \(0, 1\], got 0.0"):
        load_config(bad, BASE)
    with pytest.raises(ConfigError, match=r"override 'optim.lr=2': optim.lr must lie in"):
        load_config(bad, [*BASE, "optim.lr=2"])
    bad.write_text("optim:\n  lr: 1e-4\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key optim.momentum"):
        load_config(bad, BASE)
    bad.write_text("optim:\n  steps: many\n")
    with pytest.raises(ConfigError, match="bad.yaml: optim.steps"):
        load_config(bad, BASE)


def test_yaml_round_trip_and_plain_dict(tmp_path: Path) -> None:
    cfg = load("mode=lora", "optim.schedule=constant", "run.precision=bf16")
    data = yaml.safe_load(to_yaml(cfg))
    assert data == to_dict(cfg)
    assert data["mode"] == "lora" and data["optim"]["schedule"] == "constant" and data["run"]["precision"] == "bf16"
    (tmp_path / "saved.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_config_changes_lists_what_a_resume_may_not_change() -> None:
    a = to_dict(load())
    b = to_dict(load("optim.lr=2e-5", "run.progress=false", "run.device=cpu", "method=self_training"))
    assert config_changes(a, b) == ["method: 'sum' -> 'self_training'", "optim.lr: 1e-05 -> 2e-05"]
    assert config_changes(a, a) == []


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("refiner")),
                         ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.data.labelled and cfg.data.pseudo_labels and cfg.method is Method.sum
    assert cfg.model.checkpoint or cfg.model.name == "tiny_foundation", "a shipped config starts from a foundation"


def test_a_bound_between_two_keys_names_where_each_was_set(tmp_path: Path) -> None:
    """optim.warmup <= optim.steps: the message names both keys and, when they came from two places, both places."""
    f = tmp_path / "c.yaml"
    f.write_text("optim: {warmup: 20, steps: 500}\n")
    msg = refused("optim.steps=10", path=f)
    assert msg == ("optim.warmup must lie in [0, optim.steps], got 20 with optim.steps = 10 "
                   f"(optim.warmup from {f}, optim.steps from override 'optim.steps=10')")
    assert refused("optim.warmup=2000").startswith(
        "optim.warmup must lie in [0, optim.steps], got 2000 with optim.steps = 1000 "
        "(optim.warmup from override 'optim.warmup=2000', optim.steps from the defaults)")
    f.write_text("optim: {warmup: 20, steps: 10}\n")  # one source: it leads the message, as for any key
    assert refused(path=f) == f"{f}: optim.warmup must lie in [0, optim.steps], got 20 with optim.steps = 10"
    assert load("optim.steps=10", "optim.warmup=10", path=f).optim.warmup == 10


def test_every_problem_is_listed_once() -> None:
    msg = refused("optim.lr=-1", "optim.steps=0", "run.device=tpu")
    assert msg.count("; ") == 2 and "optim.lr must lie in" in msg and "optim.steps must lie in" in msg
    assert "run.device must be one of" in msg and "optim.warmup" not in msg  # 0 <= 0: the default warm-up fits


@pytest.mark.parametrize("checkpoint", [None, "m.ckpt"])
def test_the_shipped_foundation_is_a_model_name(checkpoint: str | None) -> None:
    """model.name=tiny_foundation: the weights shipped in the package, as for every other command."""
    if checkpoint is None:
        assert load("model.name=tiny_foundation").model.name == "tiny_foundation"
        return
    msg = refused("model.name=tiny_foundation", f"model.checkpoint={checkpoint}")
    assert "override 'model.checkpoint=m.ckpt': model.checkpoint must be null with model.name tiny_foundation" in msg
    assert "give model.name tiny or leave it out" in msg
