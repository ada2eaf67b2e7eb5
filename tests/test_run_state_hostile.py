"""A run folder's own files read back with a user's file's checks (issue 17, class 1): the resume state
``state/step_<n>.pt`` beside ``last.ckpt``, ``config.yaml`` and ``metrics.jsonl``.

Hypothesis (derandomised, fixed counts) on damaged copies. Each case must end in an error whose message
starts with the damaged file's path, or in a resume that works: finite weights, the schedule at the saved
step, and one more optimiser step that runs.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from sumseg.config import load_config, to_yaml
from sumseg.errors import CheckpointError, ConfigError, DataError, TrainingError
from sumseg.models.checkpoint import build_model, save_checkpoint
from sumseg.train.loop import resume_run, save_run
from sumseg.train.progress import append_metrics
from sumseg.train.train_run import prepare_run_dir

CASES = settings(max_examples=80, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HOSTILE: list[Any] = [math.nan, math.inf, -1, 0, 1e12, 2**64, -(2**70), "x", None, True, [], {}, 1.5,
                      torch.tensor(math.nan), torch.zeros(7), torch.zeros(3, 4, dtype=torch.int64),
                      torch.full((3, 4), math.inf)]
STEP = 1  # the saved step (0-based): two optimiser and schedule steps were taken


def _toy() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, torch.amp.GradScaler]:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    module[0].bias.requires_grad_(False)  # a frozen parameter (not saved)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return module, opt, sched, torch.amp.GradScaler("cpu", enabled=False)


def _step(module: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR) -> None:
    opt.zero_grad()
    module(torch.ones(2, 4)).square().sum().backward()
    opt.step()
    sched.step()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    ckpt = save_checkpoint(root / "model.ckpt", build_model("tiny"), step=STEP)
    module, opt, sched, scaler = _toy()
    for _ in range(STEP + 1):
        _step(module, opt, sched)
    (root / "r").mkdir()
    save_run(root / "r", module, opt, sched, scaler, STEP, lambda path, step: shutil.copy(ckpt, path))
    return root / "r"


def _leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in [(*path, k), *_leaves(v, (*path, k))]]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in [(*path, i), *_leaves(v, (*path, i))]]
    return []


def _set(obj: Any, path: tuple, value: Any) -> Any:
    """``obj`` with the value at ``path`` replaced (``value`` is _DELETE: removed)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, tuple):
        obj = list(obj)
    if rest or value is not _DELETE:
        obj[head] = _set(obj[head], rest, value)
    elif isinstance(obj, dict):
        del obj[head]
    else:
        obj.pop(head)
    return obj


_DELETE = object()


def _resume_or_refuse(run_dir: Path, named: Path) -> None:
    module, opt, sched, scaler = _toy()
    try:
        start = resume_run(run_dir, module, None, opt, sched, scaler)  # type: ignore[arg-type] - model unused
    except (CheckpointError, TrainingError) as e:
        assert str(e).startswith(str(named)), str(e)
        return
    assert start == STEP + 1 and sched.last_epoch == STEP + 1
    assert all(bool(torch.isfinite(p).all()) for p in module.parameters())
    _step(module, opt, sched)  # the restored optimiser takes a step
    assert all(bool(torch.isfinite(p).all()) for p in module.parameters())


@CASES
@given(st.data())
def test_damaged_resume_state_is_refused_by_name_or_resumes(run: Path, tmp_path_factory: pytest.TempPathFactory,
                                                            data: st.DataObject) -> None:
    copy = tmp_path_factory.mktemp("case") / "r"
    shutil.copytree(run, copy)
    path = next((copy / "state").glob("step_*.pt"))
    if data.draw(st.booleans(), "bytes"):
        raw = bytearray(path.read_bytes())
        if data.draw(st.booleans(), "truncate"):
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), "cut")]
        else:
            for _ in range(data.draw(st.integers(1, 3), "flips")):
                raw[data.draw(st.integers(0, len(raw) - 1), "at")] ^= data.draw(st.integers(1, 255), "xor")
        path.write_bytes(bytes(raw))
    else:
        state = torch.load(path, weights_only=True)
        for _ in range(data.draw(st.integers(1, 2), "edits")):
            leaves = _leaves(state)
            where = data.draw(st.sampled_from(leaves), "where")
            value = data.draw(st.sampled_from([*HOSTILE, _DELETE]), "value")
            state = _set(state, where, value)
        torch.save(state, path)
    _resume_or_refuse(copy, path)


def test_hand_picked_damages_name_the_field(run: Path, tmp_path: Path) -> None:
    """Before: accepted (NaN weights and moments, a schedule at another step, a cast dtype) or a traceback
    (RuntimeError on a shape, a TypeError inside the first step)."""
    shutil.copytree(run, tmp_path / "untouched")
    module, opt, sched, scaler = _toy()
    assert resume_run(tmp_path / "untouched", module, None, opt, sched, scaler) == STEP + 1  # type: ignore[arg-type]
    cases = {
        ("module", "0.weight"): (torch.full((3, 4), math.nan), "tensor 'module.0.weight' has non-finite values"),
        ("scheduler", "last_epoch"): (10**6, "field 'scheduler.last_epoch' is 1000000, but step 1 is saved"),
        ("step",): (5, "field 'step' is 5, but last.ckpt holds step 1"),
        ("module", "1.weight"): (torch.zeros(2, 3, dtype=torch.float64), "its trained tensors do not fit this run"),
        ("module", "1.bias"): (torch.zeros(7), "its trained tensors do not fit this run"),
        ("optimizer", "state", 0, "exp_avg"): (torch.zeros(5), "its optimiser state does not fit this run"),
        ("optimizer", "param_groups", 0, "lr"): (-1.0, "'optimizer.param_groups.lr' must be a learning rate"),
    }
    for i, (where, (value, message)) in enumerate(cases.items()):
        copy = tmp_path / str(i)
        shutil.copytree(run, copy)
        path = next((copy / "state").glob("step_*.pt"))
        torch.save(_set(torch.load(path, weights_only=True), where, value), path)
        module, opt, sched, scaler = _toy()
        with pytest.raises(CheckpointError) as e:
            resume_run(copy, module, None, opt, sched, scaler)  # type: ignore[arg-type]
        assert str(e.value).startswith(f"{path}: ") and message in str(e.value), (where, str(e.value))


# --- config.yaml: read back through the user's loader ---

@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("cfg")
    (root / "data").mkdir()
    cfg = load_config(None, ["method=vanilla", "model.name=tiny", f"run.out={root / 'run'}",
                             f"data.labelled=[{{path: {root / 'data'}, task: 1}}]"])
    prepare_run_dir(cfg)
    (root / "run" / "last.ckpt").write_bytes(b"")  # a started run: its config.yaml is compared
    return cfg, root / "run" / "config.yaml"


def _yaml_leaves(doc: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in [(*path, k), *_yaml_leaves(v, (*path, k))]]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in [(*path, i), *_yaml_leaves(v, (*path, i))]]
    return []


YAML_HOSTILE: list[Any] = [math.nan, math.inf, -1, 0, 1e12, 2**64, "x", None, True, [], {}, "12", [1, 2]]


@settings(max_examples=60, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_config_yaml_is_refused_by_name_or_equal(cfg_dir: tuple[Any, Path], data: st.DataObject) -> None:
    cfg, saved = cfg_dir
    good = to_yaml(cfg)
    try:
        if data.draw(st.booleans(), "bytes"):
            raw = bytearray(good.encode())
            for _ in range(data.draw(st.integers(1, 3), "flips")):
                raw[data.draw(st.integers(0, len(raw) - 1), "at")] = data.draw(st.integers(0, 255), "byte")
            saved.write_bytes(bytes(raw))
        else:
            doc = yaml.safe_load(good)
            where = data.draw(st.sampled_from(_yaml_leaves(doc)), "where")
            doc = _set(doc, where, data.draw(st.sampled_from([*YAML_HOSTILE, _DELETE]), "value"))
            saved.write_text(yaml.safe_dump(doc))
        try:
            prepare_run_dir(cfg)
        except ConfigError as e:
            assert str(e).startswith(f"{saved}: "), str(e)  # damaged, or a valid config that is another one
            assert "the run's saved config" in str(e) or "this run was started with another config" in str(e), str(e)
            return
        assert load_config(saved) == cfg  # accepted: it says what the run was started with
    finally:
        saved.write_text(good)


def test_config_yaml_that_is_no_config_names_the_file(cfg_dir: tuple[Any, Path]) -> None:
    """Before: a YAMLError, an AttributeError (a list) or a UnicodeDecodeError traceback."""
    cfg, saved = cfg_dir
    good = saved.read_text()
    try:
        for text in (b"- 1\n- 2\n", b"a: [", b"\xff\xfe\x00", b"optim: {lr: .nan}\n"):
            saved.write_bytes(text)
            with pytest.raises(ConfigError) as e:
                prepare_run_dir(cfg)
            assert str(e.value).startswith(str(saved)) and "the run's saved config" in str(e.value), str(e.value)
    finally:
        saved.write_text(good)


def test_damaged_metrics_rows_name_the_line(tmp_path: Path) -> None:
    """Before: a JSONDecodeError / KeyError traceback on resume."""
    path = tmp_path / "metrics.jsonl"
    for text, line in (('{"step": 0}\nnot json\n', 2), ('{"step": 0}\n{"loss": 1}\n', 2), ('[1]\n', 1),
                       ('{"step": "0"}\n', 1)):
        path.write_text(text)
        with pytest.raises(DataError, match=rf"^{path}: line {line} "):
            append_metrics(path, {"step": 1}, resumed_from=1)
        assert path.read_text() == text  # unchanged
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "lo')  # a killed append's partial row is dropped
    append_metrics(path, {"step": 1, "loss": math.nan}, resumed_from=1)
    assert path.read_text() == '{"step": 0}\n{"step": 1, "loss": null}\n'
