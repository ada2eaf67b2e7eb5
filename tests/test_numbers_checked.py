"""Issue 17, class 3: every command's numbers go through the one checker (sumseg.config.Checker).

The flags of ``sumseg pseudo-label``, ``uncertainty``, ``demo``, ``eval``, ``data synth``, ``export``
(``--tolerance``) and ``pretrain`` and the arguments of their library entry points (``run_pseudo_labels``,
``run_uncertainty``, ``run_demo``, ``EvalSettings``, ``write_world``, ``export_checkpoint``): a non-finite or
out-of-range value is refused before any work or output starts, in one ConfigError that names every
bad flag (or argument) in the train checker's wording; valid values pass.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sumseg.cli import app
from sumseg.config import (
    MAX_SHOWN,
    PSEUDO_LABEL_FLAGS,
    Checker,
    PseudoLabelConfig,
    PseudoLabelSettings,
    UncertaintyConfig,
    check_pseudo_label_settings,
    check_uncertainty_options,
)
from sumseg.config.pseudo_label import MAX_GRID_SIDE
from sumseg.demo.pipeline import run_demo
from sumseg.demo.settings import DEMO_FLAGS, MAX_SEEDS, MAX_WORKERS, check_demo_options, preset
from sumseg.errors import ConfigError
from sumseg.pipeline.pseudo_label_run import run_pseudo_labels
from sumseg.pipeline.uncertainty import run_uncertainty

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def _outside(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> st.SearchStrategy[float]:
    """Finite floats outside [lo, hi] (open ends included as bad), up to 1e12 and beyond."""
    below = st.floats(max_value=lo, exclude_max=not lo_open, allow_nan=False, allow_infinity=False)
    above = st.floats(min_value=hi, exclude_min=not hi_open, allow_nan=False, allow_infinity=False)
    return st.one_of(below, above, st.sampled_from([1e12, -1e12]))


def _ints_outside(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(max_value=lo - 1, min_value=lo - 10**15), st.integers(min_value=hi + 1,
                                                                                        max_value=hi + 10**15))


def _inside(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, exclude_min=lo_open, exclude_max=hi_open)


# field: (bad values, valid values); floats get non-finite values too
FLOAT_FIELDS: dict[str, tuple[st.SearchStrategy[float], st.SearchStrategy[float]]] = {
    "pred_iou_thresh": (_outside(-1, 1), _inside(-1, 1)),
    "stability_score_thresh": (_outside(-1, 1), _inside(-1, 1)),
    "stability_score_offset": (_outside(0, 100), _inside(0, 100)),
    "box_nms_thresh": (_outside(0, 1), _inside(0, 1)),
    "max_area_ratio": (_outside(0, 1000, lo_open=True), _inside(0, 1000, lo_open=True)),
    "min_area_ratio": (_outside(0, 1, hi_open=True), _inside(0, 1, hi_open=True)),
}
INT_FIELDS: dict[str, tuple[st.SearchStrategy[int], st.SearchStrategy[int]]] = {
    "points_per_side": (_ints_outside(1, MAX_GRID_SIDE), st.integers(1, MAX_GRID_SIDE)),
    "points_per_batch": (_ints_outside(1, 65536), st.integers(1, 65536)),
    "max_per_image": (_ints_outside(1, 1_000_000), st.integers(1, 1_000_000)),
    "calibration_images": (_ints_outside(0, 10_000_000), st.integers(0, 10_000_000)),
}


def _bad_value(draw: Any, field: str) -> float | int:
    if field in FLOAT_FIELDS:
        return draw(st.one_of(NON_FINITE, FLOAT_FIELDS[field][0]))
    return draw(INT_FIELDS[field][0])


@st.composite
def bad_settings(draw: Any) -> tuple[dict[str, Any], list[str]]:
    """Settings with one or more bad fields, and those fields."""
    fields = draw(st.lists(st.sampled_from(sorted([*FLOAT_FIELDS, *INT_FIELDS])), min_size=1, max_size=4,
                           unique=True))
    return {f: _bad_value(draw, f) for f in fields}, fields


def _problems(message: str) -> list[str]:
    return message.split("; ")


@FAST
@given(bad_settings())
def test_every_bad_setting_is_named_once(case: tuple[dict[str, Any], list[str]]) -> None:
    values, fields = case
    c = Checker()
    check_pseudo_label_settings(PseudoLabelSettings(**values), c, PSEUDO_LABEL_FLAGS)
    with pytest.raises(ConfigError) as err:
        c.raise_if_any()
    problems = _problems(str(err.value))
    assert sorted(p.split(" ")[0] for p in problems) == sorted(PSEUDO_LABEL_FLAGS[f] for f in fields)
    assert all(re.search(r" must (lie in [\[(]|be a finite number, got )", p) for p in problems), problems


@FAST
@given(st.fixed_dictionaries({}, optional={f: good for f, (_, good) in (FLOAT_FIELDS | INT_FIELDS).items()}),
       st.sampled_from(["q0", "q0.5", "q1", 0, 1, "0.3", "-0.2"]))
def test_valid_settings_pass(values: dict[str, Any], threshold: Any) -> None:
    c = Checker()
    check_pseudo_label_settings(PseudoLabelSettings(**{"pred_iou_thresh": threshold, **values}), c)
    assert c.errors == []


def test_thresholds_that_do_not_parse_are_listed_with_the_rest() -> None:
    c = Checker()
    check_pseudo_label_settings(PseudoLabelSettings(pred_iou_thresh="q2", stability_score_thresh="abc",
                                                    points_per_side=0), c, PSEUDO_LABEL_FLAGS)
    assert [m for _, m in c.errors] == [
        "--points-per-side must lie in [1, 128], got 0",
        "--iou-thresh must be a number or a quantile q<0..1> (e.g. q0.7), got 'q2'",
        "--stability-thresh must be a number or a quantile q<0..1> (e.g. q0.7), got 'abc'",
    ]


def _flag_args(values: dict[str, Any]) -> list[str]:
    inverse = {"pred_iou_thresh": "--iou-thresh", "stability_score_thresh": "--stability-thresh"}
    return [a for f, v in values.items() for a in (inverse.get(f, PSEUDO_LABEL_FLAGS[f]), repr(v) if
                                                   isinstance(v, float) else str(v))]


@FAST
@given(bad_settings())
def test_pseudo_label_cli_refuses_before_any_work(tmp_path: Path, case: tuple[dict[str, Any], list[str]]) -> None:
    values, fields = case
    out = tmp_path / "store"
    res = CliRunner().invoke(app, ["pseudo-label", "--images", str(tmp_path / "no-images"), "--out", str(out),
                                   "--model", "tiny", *_flag_args(values)])
    assert res.exit_code == 1, res.output
    line = res.output.strip().removeprefix("error: ")
    assert sorted(p.split(" ")[0] for p in _problems(line)) == sorted(PSEUDO_LABEL_FLAGS[f] for f in fields)
    assert not out.exists()  # nothing written, the images not even looked at (they do not exist)


def test_library_entry_points_refuse_with_the_argument_named(tmp_path: Path) -> None:
    out = tmp_path / "store"
    bad = PseudoLabelSettings(points_per_side=10**6, box_nms_thresh=math.nan)
    with pytest.raises(ConfigError, match=r"^points_per_side must lie in \[1, 128\], got 1000000; "
                                          r"box_nms_thresh must be a finite number, got nan$"):
        run_pseudo_labels(None, PseudoLabelConfig(str(tmp_path / "no-images"), str(out), amg=bad))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^show must lie in \[0, 10000\], got -1$"):
        run_uncertainty(None, UncertaintyConfig(str(tmp_path / "no-store"), show=-1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^seeds must lie in \[1, 100\], got 1000000; "
                                          r"workers must lie in \[0, 256\], got 10000$"):
        run_demo(tmp_path / "demo", preset(True, seeds=10**6), workers=10_000)
    assert not out.exists() and not (tmp_path / "demo").exists()


@FAST
@given(st.one_of(_ints_outside(0, MAX_SHOWN)))
def test_uncertainty_show_is_bounded(tmp_path: Path, show: int) -> None:
    res = CliRunner().invoke(app, ["uncertainty", "--pseudo-labels", str(tmp_path / "none"), "--refiner",
                                   str(tmp_path / "none.ckpt"), "--show", str(show)])
    assert res.exit_code == 1 and f"--show must lie in [0, {MAX_SHOWN}], got {show}" in res.output, res.output
    c = Checker()
    check_uncertainty_options(MAX_SHOWN, c)
    assert c.errors == []


@FAST
@given(st.one_of(st.none(), _ints_outside(1, MAX_SEEDS)), st.one_of(st.none(), _ints_outside(0, MAX_WORKERS)),
       st.one_of(st.none(), _ints_outside(0, 2**32 - 1)))
def test_demo_flags_are_refused_before_the_world_is_written(tmp_path: Path, seeds: int | None, workers: int | None,
                                                            world_seed: int | None) -> None:
    bad = {"--seeds": seeds, "--workers": workers, "--world-seed": world_seed}
    args = [a for flag, v in bad.items() if v is not None for a in (flag, str(v))]
    named = [flag for flag, v in bad.items() if v is not None]
    if not named:
        return  # all valid: a whole demo, not run here (tests/test_demo.py runs it)
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), *args])
    assert res.exit_code == 1, res.output
    line = res.output.strip().removeprefix("error: ")
    assert [p.split(" ")[0] for p in _problems(line)] == named
    assert not out.exists()


def test_valid_demo_options_pass() -> None:
    for seeds, workers, world_seed in [(1, 0, 0), (MAX_SEEDS, MAX_WORKERS, 2**32 - 1), (3, 2, 1)]:
        c = Checker()
        check_demo_options(c, seeds, workers, world_seed, DEMO_FLAGS)
        assert c.errors == []


# --- sumseg eval, data synth, export, pretrain (issue 17, class 3 continued) ---

EVAL_BAD = {"--rounds": _ints_outside(1, 1000), "--limit": _ints_outside(1, 10**12), "--task": _ints_outside(0, 1023)}
SYNTH_BAD = {"--seed": _ints_outside(0, 2**32 - 1), "--pretrain": _ints_outside(0, 10**7),
             "--unlabeled": _ints_outside(0, 10**7), "--task-train": _ints_outside(0, 10**7),
             "--test": _ints_outside(0, 10**7), "--image-size": _ints_outside(64, 4096),
             "--workers": _ints_outside(0, 256)}


@st.composite
def bad_flags(draw: Any, table: dict[str, st.SearchStrategy[int]]) -> dict[str, int]:
    flags = draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=3, unique=True))
    return {f: draw(table[f]) for f in flags}


def _named(res: Any) -> list[str]:
    assert res.exit_code == 1, res.output
    return [p.split(" ")[0] for p in _problems(res.output.strip().removeprefix("error: "))]


@FAST
@given(bad_flags(EVAL_BAD))
def test_eval_flags_are_refused_before_any_work(tmp_path: Path, bad: dict[str, int]) -> None:
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", "--datasets", str(tmp_path / "none"), "--out", str(out), "--model", "tiny",
                                   *[a for f, v in bad.items() for a in (f, str(v))]])
    assert sorted(_named(res)) == sorted(bad), res.output  # before: typer's min=1 one at a time; no bound above
    assert not out.exists()  # the dataset (absent) was not even looked up


@FAST
@given(bad_flags(SYNTH_BAD))
def test_synth_flags_are_refused_before_any_work(tmp_path: Path, bad: dict[str, int]) -> None:
    out = tmp_path / "world"
    res = CliRunner().invoke(app, ["data", "synth", "--out", str(out), *[a for f, v in bad.items()
                                                                         for a in (f, str(v))]])
    assert sorted(_named(res)) == sorted(bad), res.output  # before: --seed -1 a numpy ValueError traceback
    assert not out.exists()


@FAST
@given(st.one_of(NON_FINITE, _outside(0, 1000)))
def test_export_tolerance_is_finite_and_bounded(tmp_path: Path, tolerance: float) -> None:
    res = CliRunner().invoke(app, ["export", "--model", "tiny_foundation", "--task", "1", "--out",
                                   str(tmp_path / "x.pth"), "--tolerance", repr(tolerance)])
    assert _named(res) == ["--tolerance"], res.output  # before: NaN passed typer's min=0.0 (every export failed)
    assert not (tmp_path / "x.pth").exists()


@FAST
@given(st.one_of(_ints_outside(1, 10**8)), st.one_of(st.none(), _ints_outside(0, 2**63 - 1)))
def test_pretrain_flags_are_refused_before_any_work(tmp_path: Path, steps: int, seed: int | None) -> None:
    args = ["--steps", str(steps), *([] if seed is None else ["--seed", str(seed)])]
    res = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path / "p"), *args])
    assert _named(res) == ["--steps", *([] if seed is None else ["--seed"])], res.output
    assert not (tmp_path / "p").exists()


def test_eval_synth_and_export_library_entry_points_name_their_arguments(tmp_path: Path) -> None:
    from sumseg.data.synthetic_world import write_world
    from sumseg.evaluate.run import EvalSettings
    from sumseg.models.export import export_checkpoint

    with pytest.raises(ConfigError, match=r"^rounds must lie in \[1, 1000\], got 0; limit must lie in \[1, 1e\+12\], "
                                          r"got 0; task must lie in \[0, 1023\], got 5000$"):
        EvalSettings(rounds=0, limit=0, task=5000)
    with pytest.raises(ConfigError, match=r"^seed must lie in \[0, 4\.29497e\+09\], got -1; sizes\['pretrain'\] "
                                          r"must lie in \[0, 1e\+07\], got -3; image_size must lie in \[64, 4096\], "
                                          r"got 10$"):
        write_world(tmp_path / "w", seed=-1, sizes={"pretrain": -3}, image_size=10, progress=False)
    with pytest.raises(ConfigError, match=r"^tolerance must be a finite number, got nan$"):
        export_checkpoint(None, 1, tmp_path / "x.pth", tolerance=math.nan, model="tiny_foundation")
    assert list(tmp_path.iterdir()) == []
    c = Checker()  # the edges pass
    from sumseg.data.synthetic_world import check_world_options
    from sumseg.evaluate.run import check_eval_options

    check_eval_options(c, 1000, 10**12, 1023, 10_000)
    check_world_options(c, 2**32 - 1, {"pretrain": 0, "test": 10**7}, 4096, 256)
    assert c.errors == []
