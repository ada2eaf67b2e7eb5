"""Every JSON text sumseg writes goes through one strict writer (issue 17, NaN/inf in JSON outputs):
``sumseg.atomic.json_text`` / ``write_json``. A non-finite value is a WriteError naming the file and
the key path of the value, raised before anything is written; an earlier version of the file stays."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from sumseg.atomic import json_text, write_json
from sumseg.errors import WriteError

PACKAGE = Path(__file__).resolve().parents[1] / "sumseg"


@pytest.mark.parametrize(("doc", "where", "value"), [
    ({"a": {"b": [1.0, 2.0, float("nan")]}}, "a.b[2]", "nan"),
    ({"GrabCut": {"clicks": {"noc85": float("inf")}}}, "GrabCut.clicks.noc85", "inf"),
    ([0, {"x": (1, -math.inf)}], "[1].x[1]", "-inf"),
    (float("nan"), "(the document)", "nan"),
])
def test_a_non_finite_value_names_the_file_and_its_key_and_writes_nothing(tmp_path: Path, doc: object,
                                                                       where: str, value: str) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"earlier": 1})
    with pytest.raises(WriteError) as e:
        write_json(target, doc, indent=1)
    assert str(e.value) == (f"{target}: cannot write it (it would hold a non-finite number (NaN or infinity), "
                            f"which JSON does not allow: {value} at {where!r})")
    assert json.loads(target.read_text()) == {"earlier": 1}  # the earlier version stays
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left
    with pytest.raises(WriteError, match=r"/new\.json: cannot write it"):
        write_json(tmp_path / "new.json", doc)
    assert not (tmp_path / "new.json").exists()


def test_finite_documents_are_written_exactly_as_json_dumps_would() -> None:
    doc = {"b": [1.5, None, True, "x"], "a": {"n": 3}}
    assert json_text(doc, "f.json", indent=1, sort_keys=True) == json.dumps(doc, indent=1, sort_keys=True)
    with pytest.raises(TypeError):  # not a NaN problem: unchanged
        json_text({"a": object()}, "f.json")


def test_a_checkpoint_whose_config_holds_nan_is_refused_by_name(tmp_path: Path) -> None:
    from sumseg.models.checkpoint import build_model, save_checkpoint

    path = tmp_path / "m.ckpt"
    with pytest.raises(WriteError, match=r"m\.ckpt: cannot write it \(.*: nan at 'meta\.config\.optim\.lr'\)"):
        save_checkpoint(path, build_model("tiny"), config={"optim": {"lr": float("nan")}})
    assert list(tmp_path.iterdir()) == []


def test_eval_results_with_an_infinite_value_are_refused_by_key(tmp_path: Path) -> None:
    from sumseg.evaluate.interactive import InstanceResult
    from sumseg.evaluate.report import write_report

    results = {"d": {"clicks": [InstanceResult("a", None, ious=[0.5, math.inf], bious=[0.5, 0.5])]}}
    with pytest.raises(WriteError, match=r"results\.json: cannot write it \(.*: inf at 'd\.clicks\.miou\[1\]'\)"):
        write_report(tmp_path, results, {}, "t")
    assert not (tmp_path / "results.json").exists()
    # a metric of an empty set is undefined and written as null on purpose (not an error)
    nan_biou = {"d": {"clicks": [InstanceResult("a", None, ious=[0.5, 0.9], bious=[math.nan, math.nan])]}}
    data = write_report(tmp_path, nan_biou, {}, "t")
    assert data["d"]["clicks"]["biou"] == [None, None]
    assert json.loads((tmp_path / "instances.json").read_text())["d"]["clicks"]["biou"] == [[None, None]]


def _json_calls(tree: ast.Module) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("dump", "dumps") and isinstance(n.func.value, ast.Name) and n.func.value.id == "json"]


def test_no_module_makes_json_text_but_the_one_writer() -> None:
    """``json.dump(s)`` only in sumseg/atomic.py; elsewhere only to quote a string (``json.dumps(str(p))``,
    a config override) or to round-trip a dict (``json.loads(json.dumps(...))``), which write no file."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "atomic.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text())
        round_trips = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                       and n.func.attr == "loads" for a in n.args}
        for call in _json_calls(tree):
            first = call.args[0] if call.args else None
            quotes = isinstance(first, ast.Call) and getattr(first.func, "id", "") == "str"
            if not quotes and id(call) not in round_trips:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{call.lineno}")
    assert found == [], f"JSON written without sumseg.atomic.json_text / write_json: {found}"
