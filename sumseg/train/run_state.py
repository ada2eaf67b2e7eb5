"""A run folder's own files, read back with the checks a user's file gets (issue 17, class 1).

``state/step_<n>.pt`` (the resume state beside ``last.ckpt``), ``config.yaml`` (``sumseg train``'s saved
config) and ``metrics.jsonl`` (the log rows a resumed run keeps). Each problem is an error whose message
starts with the file's path and names the field; nothing is trusted because it parses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sumseg.errors import CheckpointError, ConfigError, DataError

STATE_KEYS = ("module", "optimizer", "scheduler")
ADAM_KEYS = frozenset({"step", "exp_avg", "exp_avg_sq"})
_FIX = "delete the run folder's last.ckpt and state/ to start over"


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def _non_finite(obj: Any, where: str, out: list[str]) -> None:
    """Problems of the values under ``obj``: NaN / inf floats and tensors, ints beyond 64 bits, other types."""
    if isinstance(obj, Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            out.append(f"tensor {where!r} has non-finite values (NaN or infinity)")
    elif isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            out.append(f"field {where!r} must be a finite number, got {obj}")
    elif isinstance(obj, int):
        if not -(2**63) <= obj < 2**63:
            out.append(f"field {where!r} must fit a 64-bit int, got {obj}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _non_finite(v, f"{where}.{k}" if where else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _non_finite(v, f"{where}[{i}]", out)
    else:
        out.append(f"field {where!r} holds a {type(obj).__name__}")


def _int_is(value: Any, want: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == want


def _structure_problems(state: dict) -> list[str]:
    """The containers a resume needs: ``optimizer.state`` a dict of dicts, ``optimizer.param_groups`` and
    ``scheduler.base_lrs`` lists (of dicts, of numbers), ``scaler`` a dict when present."""
    opt, sched = state["optimizer"], state["scheduler"]
    out = []
    if not isinstance(opt.get("state"), dict) or not all(isinstance(v, dict) for v in opt["state"].values()):
        out.append("field 'optimizer.state' must be a dict of per-parameter dicts")
    groups = opt.get("param_groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        out.append("field 'optimizer.param_groups' must be a non-empty list of dicts")
    if not isinstance(sched.get("base_lrs"), list):
        out.append("field 'scheduler.base_lrs' must be a list")
    if "scaler" in state and not isinstance(state["scaler"], dict):
        out.append("field 'scaler' must be a dict")
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _schedule_problems(state: dict, step: int) -> list[str]:
    """The counters and rates of a state saved after step ``step`` (0-based): one schedule step per step."""
    out = []
    if not _int_is(state.get("step"), step):
        out.append(f"field 'step' is {state.get('step')!r}, but last.ckpt holds step {step}")
    sched = state["scheduler"]
    if not _int_is(sched.get("last_epoch"), step + 1):
        out.append(f"field 'scheduler.last_epoch' is {sched.get('last_epoch')!r}, but step {step} is saved "
                   f"(expected {step + 1})")
    rates = [("scheduler.base_lrs", v) for v in sched["base_lrs"]]
    rates += [("optimizer.param_groups.lr", g.get("lr")) for g in state["optimizer"]["param_groups"]]
    for key, v in rates:
        if not _is_number(v) or not 0 <= v < math.inf:
            out.append(f"field {key!r} must be a learning rate (a finite number >= 0), got {v!r}")
    scale = state.get("scaler", {}).get("scale")
    if scale is not None and (not _is_number(scale) or not scale > 0):
        out.append(f"field 'scaler.scale' must be a number > 0, got {scale!r}")
    return out


def read_state(path: Path, step: int) -> dict:
    """The resume state of step ``step`` (what ``last.ckpt`` holds): typed, finite, its counters those of
    ``step``. CheckpointError naming ``path`` otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - damaged bytes make the restricted unpickler fail in any way
        raise CheckpointError(f"{path}: damaged resume state (truncated or corrupt; {_FIX}): "
                              f"{type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in STATE_KEYS):
        raise CheckpointError(f"{path}: not a sumseg resume state (needs the dicts {', '.join(STATE_KEYS)})")
    problems: list[str] = []
    _non_finite(state, "", problems)
    structure = _structure_problems(state)
    problems += structure or _schedule_problems(state, step)
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise CheckpointError(f"{path}: damaged resume state: {'; '.join(problems[:4])}{more}; {_FIX}")
    return state


def check_module_state(module: nn.Module, saved: dict, path: Path) -> None:
    """The trained tensors of ``saved`` have the shapes and dtypes of ``module``'s (CheckpointError naming
    ``path``): ``load_state_dict`` would cast a dtype silently and fail on a shape with a RuntimeError."""
    own = module.state_dict()
    bad = [f"{k}: {tuple(v.shape)} {v.dtype} vs this run's {tuple(own[k].shape)} {own[k].dtype}"
           for k, v in saved.items() if k in own and isinstance(v, Tensor)
           and (v.shape != own[k].shape or v.dtype != own[k].dtype)]
    bad += [f"{k}: not a tensor" for k, v in saved.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: its trained tensors do not fit this run ({len(bad)} differ: "
                              f"{'; '.join(bad[:3])}); {_FIX}")


_SCHEDULE_COUNTERS = ("last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial")


def _differs(saved: Any, fresh: Any) -> bool:
    if isinstance(saved, Tensor) or isinstance(fresh, Tensor) or type(saved) is not type(fresh):
        return not (isinstance(saved, Tensor) and isinstance(fresh, Tensor) and saved.shape == fresh.shape
                    and bool((saved == fresh).all()))
    return bool(saved != fresh)


def check_settings_state(opt: torch.optim.Optimizer, sched: Any, state: dict, path: Path) -> None:
    """Before loading: the saved optimiser groups and schedule carry this run's settings (every key but the
    scheduled ``lr`` and the counters equals what the run builds), so no hostile value reaches a step."""
    fresh_groups, fresh_sched = opt.state_dict()["param_groups"], sched.state_dict()
    saved_groups, saved_sched = state["optimizer"]["param_groups"], state["scheduler"]
    bad = [] if len(saved_groups) == len(fresh_groups) else [f"{len(saved_groups)} parameter groups, this run "
                                                             f"has {len(fresh_groups)}"]
    for i, (g, f) in enumerate(zip(saved_groups, fresh_groups, strict=False)):
        bad += [f"optimizer.param_groups[{i}].{k}" for k in sorted(set(g) | set(f), key=str)
                if k not in ("lr", "params") and (k not in g or k not in f or _differs(g[k], f[k]))]
        if not isinstance(g.get("params"), list) or len(g["params"]) != len(f["params"]):
            bad.append(f"optimizer.param_groups[{i}].params")
    bad += [f"scheduler.{k}" for k in sorted(set(saved_sched) | set(fresh_sched), key=str)
            if k not in _SCHEDULE_COUNTERS and (k not in saved_sched or k not in fresh_sched
                                                or _differs(saved_sched[k], fresh_sched[k]))]
    if bad:
        raise CheckpointError(f"{path}: its optimiser / schedule settings differ from this run's "
                              f"({', '.join(bad[:4])}); {_FIX}")


def check_optimizer_state(opt: torch.optim.Optimizer, path: Path) -> None:
    """After ``load_state_dict``: every trainable parameter has the same state keys, each a tensor that is a
    scalar or of its parameter's shape (torch checks none of it; a wrong one fails inside the next step)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    keys = {frozenset(opt.state[p]) for p in params if opt.state.get(p)}  # none: a parameter never given a grad
    bad = [] if len(keys) <= 1 else [f"the parameters hold different state keys ({sorted(map(sorted, keys))})"]
    if isinstance(opt, torch.optim.Adam | torch.optim.AdamW):  # what build_optimizer makes: its keys are known
        want = [frozenset(ADAM_KEYS | ({"max_exp_avg_sq"} if g.get("amsgrad") else set())) for g in opt.param_groups]
        bad += [f"state keys {sorted(opt.state[p])}, AdamW needs {sorted(w)}"
                for g, w in zip(opt.param_groups, want, strict=True) for p in g["params"]
                if opt.state.get(p) and frozenset(opt.state[p]) != w][:1]
    bad += [f"{k} {tuple(v.shape)} for a parameter of shape {tuple(p.shape)}" if isinstance(v, Tensor)
            else f"{k} is a {type(v).__name__}"
            for p in params for k, v in opt.state.get(p, {}).items()
            if not isinstance(v, Tensor) or (v.dim() > 0 and v.shape != p.shape)]
    if bad:
        raise CheckpointError(f"{path}: its optimiser state does not fit this run ({'; '.join(bad[:3])}); {_FIX}")


def saved_config(path: Path) -> Any:
    """A run's ``config.yaml`` read back as a user's config is (``sumseg.config.load_config``: every key
    typed and range-checked, each problem led by the file); ConfigError naming it otherwise."""
    from sumseg.config import load_config

    try:
        return load_config(path)
    except ConfigError as e:
        text = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"  # a key the file left out: still it
        raise ConfigError(f"{text} (this is the run's saved config: restore it, or {_FIX}, or choose another "
                          "run.out)") from None


def kept_rows(path: Path, resumed_from: int) -> list[str]:
    """The lines of ``metrics.jsonl`` of steps before ``resumed_from``. A last line without its newline (an
    append that was killed) is dropped; any other line that is no row with an int ``step`` is a DataError."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    lines = lines[:-1]  # the text after the last newline: "" or a killed append's partial row
    keep = []
    for n, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}: line {n} is not a JSON row ({e}); delete that line to resume") from None
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise DataError(f"{path}: line {n} has no int 'step' (got {step!r}); delete that line to resume")
        if step < resumed_from:
            keep.append(line)
    return keep


def check_resumed_config(ckpt: Path, now: dict, section: str) -> None:
    """A rerun into a run folder whose ``last.ckpt`` exists must have the config that run was started with
    (``config_changes``: the RESUME_FREE keys may change): ConfigError naming ``ckpt`` otherwise, in the
    words of ``sumseg train``'s check (its saved ``config.yaml``). ``now``: ``{section: {...}}`` as saved."""
    from sumseg.config import config_changes
    from sumseg.models.checkpoint import read_meta

    meta = read_meta(ckpt)
    if meta is None:
        return  # no run yet (or not a sumseg checkpoint: the loop's resume names it)
    old = meta.config.get(section)
    changed = (config_changes(old, now[section]) if isinstance(old, dict)
               else [f"its checkpoint holds no {section!r} config"])
    if changed:
        raise ConfigError(f"{ckpt}: this run was started with another config ({'; '.join(changed[:4])}); rerun "
                          "with the same config to resume, or choose another run.out")
