"""`sumseg demo`: the quick run end to end (report.json's every method × set × protocol × round,
report.md, figures, resume), the job graph in worker processes, and the report's arithmetic."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sumseg.cli import app
from sumseg.demo.context import Ctx, check_settings
from sumseg.demo.jobs import Job, run_jobs
from sumseg.demo.report import PROTOCOL_KEYS, mean_over_runs, protocol_key
from sumseg.demo.report_md import claim_general, claim_task
from sumseg.demo.settings import FOUNDATION, QUICK, TEST_SETS
from sumseg.demo.stats import _match
from sumseg.errors import ConfigError


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One `sumseg demo --quick` in this process (the shipped tiny_foundation, no real benchmarks)."""
    out = tmp_path_factory.mktemp("demo")
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--workers", "0"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_quick_demo_reports_every_method_set_protocol_and_round(quick_run: tuple[Path, str]) -> None:
    out, output = quick_run
    report = json.loads((out / "report.json").read_text())
    assert list(report) == [FOUNDATION, *QUICK.methods]
    assert PROTOCOL_KEYS == ["clicks", "box", "clicks_score", "box_score"]
    for method, sets in report.items():
        assert list(sets) == list(TEST_SETS), method
        for test_set, by_key in sets.items():
            assert list(by_key) == PROTOCOL_KEYS, (method, test_set)
            for r in by_key.values():
                assert set(r) == {"miou", "biou", "noc85", "noc90", "n"}
                assert len(r["miou"]) == len(r["biou"]) == QUICK.rounds
                assert all(0 <= v <= 1 for v in r["miou"])
                assert r["noc85"] is None and r["noc90"] is None  # NoC is defined on 20-round runs only
                assert r["n"] == report[FOUNDATION][test_set]["clicks"]["n"] > 0
    assert report[FOUNDATION]["salient"]["clicks"]["n"] == QUICK.task_test  # one salient object per image
    assert report[FOUNDATION]["general"]["clicks"]["n"] > QUICK.general_test  # entities and parts
    # the oracle keeps the best of the three round-1 outputs, so no rule beats it in round 1
    for sets in report.values():
        for by_key in sets.values():
            for proto in ("clicks", "box"):
                assert by_key[proto]["miou"][0] >= by_key[protocol_key(proto, "score")]["miou"][0] - 1e-9
    md = (out / "report.md").read_text()
    for needed in ["## The claims, measured", "## Main tables", "## Pseudo-labels", "## Stage times",
                   "--quick` leaves them out", *(f"| {m} |" for m in report)]:
        assert needed in md, needed
    for link in [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]:
        assert (out / link.replace("%25", "%")).is_file(), link
    assert all(m in output for m in report) and "report:" in output


def test_quick_demo_stats_match_the_store(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    stats = json.loads((out / "stats.json").read_text())
    assert sum(stats["kinds"].values()) == stats["masks"] > 0
    assert stats["wrong_fraction"] == pytest.approx(stats["kinds"]["wrong"] / stats["masks"])
    assert 0 <= stats["mean_u_right"] <= 1 and 0 <= stats["mean_u_wrong"] <= 1


def test_quick_demo_resumes_without_recomputing(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    before = (out / "report.json").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("results.json")}
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "already trained" in res.output
    assert (out / "report.json").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no model evaluated again
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--workers", "0"])  # the full settings
    assert res.exit_code == 1 and "made with another settings" in res.output


def test_demo_refuses_a_bad_out_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "file")])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"error: --out {tmp_path / 'file'}: is a file, not a folder"], res.output


def test_demo_names_a_missing_foundation(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--foundation", str(tmp_path / "none.ckpt")])
    assert res.exit_code == 1 and f"{tmp_path / 'none.ckpt'}: foundation checkpoint not found" in res.output


def test_settings_check_allows_other_seeds_and_methods_but_not_other_settings(tmp_path: Path) -> None:
    foundation = tmp_path / "f.ckpt"
    foundation.write_bytes(b"weights")
    check_settings(Ctx(tmp_path, foundation, QUICK))
    check_settings(Ctx(tmp_path, foundation, replace(QUICK, seeds=3, methods=("sum", "sum_no_task"))))
    with pytest.raises(ConfigError, match="another settings"):
        check_settings(Ctx(tmp_path, foundation, replace(QUICK, rounds=4)))
    foundation.write_bytes(b"other weights")
    with pytest.raises(ConfigError, match="another foundation"):
        check_settings(Ctx(tmp_path, foundation, QUICK))


def _stamp(name: str, folder: str) -> str:
    """Sleep 1 s; write the start and end times."""
    start = time.time()
    time.sleep(1.0)
    (Path(folder) / name).write_text(f"{start} {time.time()}")
    return f"{name} done"


def _fail() -> str:
    raise ConfigError("job failed on purpose")


def test_job_graph_runs_in_parallel_after_dependencies(tmp_path: Path) -> None:
    jobs = [Job("a", _stamp, ("a", str(tmp_path))), Job("b", _stamp, ("b", str(tmp_path))),
            Job("c", _stamp, ("c", str(tmp_path)), ("a", "b"))]
    seen: list[tuple[str, int, int]] = []
    timings = run_jobs(jobs, 2, lambda d, k, n: seen.append((d.name, k, n)))
    assert {s[0] for s in seen[:2]} == {"a", "b"} and [s[1:] for s in seen] == [(1, 3), (2, 3), (3, 3)]
    assert seen[2][0] == "c" and timings.done[2].summary == "c done" and all(d.wall >= 1 for d in timings.done)
    (a0, a1), (b0, b1), (c0, _) = ([float(x) for x in (tmp_path / n).read_text().split()] for n in "abc")
    assert b0 < a1 and a0 < b1  # two workers: a and b overlapped
    assert c0 >= max(a1, b1)  # c waited for both
    with pytest.raises(ConfigError, match="on purpose"):
        run_jobs([Job("x", _fail)], 1, lambda d, k, n: None)
    with pytest.raises(ConfigError, match="'c': needs"):
        run_jobs(jobs[2:], 0, lambda d, k, n: None)


def _summary(miou: list[float], noc: float = 2.0) -> dict:
    return {"miou": miou, "biou": [v / 2 for v in miou], "noc85": noc, "noc90": noc + 1, "n": 7}


def test_mean_over_seeds_per_round() -> None:
    runs = [{"salient": {"clicks": _summary([0.5, 0.7, 0.9], 2.0)}},
            {"salient": {"clicks": _summary([0.7, 0.7, 1.0], 4.0)}}]
    got = mean_over_runs(runs)["salient"]["clicks"]
    assert got["miou"] == [0.6, 0.7, 0.95] and got["biou"] == [0.3, 0.35, 0.475]
    assert (got["noc85"], got["noc90"], got["n"]) == (3.0, 4.0, 7)


def _report(task: dict[str, float], general: dict[str, float]) -> dict:
    return {m: {"salient": {k: _summary([task[m]] * 3) for k in PROTOCOL_KEYS},
                "general": {k: _summary([general[m]] * 3) for k in PROTOCOL_KEYS}} for m in task}


def test_claims_are_judged_on_the_numbers() -> None:
    report = _report({"foundation": 0.5, "vanilla": 0.90, "self_training": 0.80, "sum": 0.91},
                     {"foundation": 0.60, "vanilla": 0.40, "self_training": 0.55, "sum": 0.52})
    lines, held, made = claim_task(report, {}, PROTOCOL_KEYS)
    assert (held, made) == (8, 8) and "| clicks | 1 | 91.0 | 90.0 | 80.0 | yes (+1.0) |" in lines
    lines, held, made = claim_general(report, PROTOCOL_KEYS)  # SUM loses 8 points, vanilla 20: at most half
    assert (held, made) == (8, 8) and "| clicks | 3 | 60.0 | -20.0 | -8.0 | yes |" in lines
    report["sum"]["general"]["box"]["miou"] = [0.45] * 3  # loses 15 of vanilla's 20: less, not much less
    report["sum"]["salient"]["box_score"]["miou"] = [0.85] * 3
    _, held, _ = claim_task(report, {}, PROTOCOL_KEYS)
    lines, held_g, _ = claim_general(report, PROTOCOL_KEYS)
    assert held == 6 and held_g == 6 and "| box | 1 | 60.0 | -20.0 | -15.0 | less, not much less |" in lines


def test_pseudo_labels_match_their_best_true_mask() -> None:
    truth = np.zeros((2, 4, 4), bool)
    truth[0, :2], truth[1, 2:, 2:] = True, True  # 8 and 4 pixels
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :3] = True  # 6 pixels inside truth 0 → IoU 6/8
    masks[1, 3, :] = True  # 2 of 4 in truth 1 → IoU 2/6
    best, iou = _match(masks, truth)
    assert best.tolist() == [0, 1] and np.allclose(iou, [6 / 8, 2 / 6])
