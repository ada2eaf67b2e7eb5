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
from sumseg.demo.claims import claims_table
from sumseg.demo.context import Ctx, check_settings
from sumseg.demo.intervals import Interval, bootstrap
from sumseg.demo.jobs import Job, run_jobs
from sumseg.demo.report import mean_over_runs, protocol_key
from sumseg.demo.settings import FOUNDATION, QUICK
from sumseg.demo.stats import _Tally, auroc, best_match
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
    keys = QUICK.protocol_keys
    assert keys == ["clicks", "box", "clicks_score", "box_score"]
    assert QUICK.test_sets == ("salient", "part", "general")
    for method, sets in report.items():
        assert list(sets) == list(QUICK.test_sets), method
        for test_set, by_key in sets.items():
            assert list(by_key) == keys, (method, test_set)
            for r in by_key.values():
                assert set(r) == {"miou", "biou", "noc85", "noc90", "n"}
                assert len(r["miou"]) == len(r["biou"]) == QUICK.rounds
                assert all(0 <= v <= 1 for v in r["miou"])
                assert r["noc85"] is None and r["noc90"] is None  # NoC is defined on 20-round runs only
                assert r["n"] == report[FOUNDATION][test_set]["clicks"]["n"] > 0
    assert report[FOUNDATION]["salient"]["clicks"]["n"] == QUICK.task_test  # one salient object per image
    assert report[FOUNDATION]["part"]["clicks"]["n"] > QUICK.task_test  # parts: several per image
    assert report[FOUNDATION]["general"]["clicks"]["n"] > QUICK.general_test  # entities and parts
    # the oracle keeps the best of the three round-1 outputs, so no rule beats it in round 1
    for sets in report.values():
        for by_key in sets.values():
            for proto in ("clicks", "box"):
                assert by_key[proto]["miou"][0] >= by_key[protocol_key(proto, "score")]["miou"][0] - 1e-9
    # the per-instance curves behind the means: report.json's mean is their mean
    curves = json.loads((out / "eval" / "sum-s0" / "oracle" / "instances.json").read_text())
    for test_set in QUICK.test_sets:
        iou = np.array(curves[test_set]["clicks"]["iou"])
        assert iou.shape == (report["sum"][test_set]["clicks"]["n"], QUICK.rounds)
        assert list(iou.mean(0)) == pytest.approx(report["sum"][test_set]["clicks"]["miou"], abs=1e-5)
    claims = json.loads((out / "claims.json").read_text())
    assert claims["protocol"] == "clicks" and len(claims["claims"]) == 2 * (4 + 3 + 5)  # 2 tasks; 5 baselines
    assert {c["verdict"] for c in claims["claims"]} <= {"holds", "fails", "unresolved"}
    assert all(c["low"] <= c["estimate"] <= c["high"] for c in claims["claims"])
    md = (out / "report.md").read_text()
    for needed in ["## The claims, measured", "## Main tables", "## Pseudo-labels", "## Stage times", "AUROC",
                   "--quick` leaves them out", "paired bootstrap", *(f"| {m} |" for m in report)]:
        assert needed in md, needed
    for link in [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]:
        assert (out / link.replace("%25", "%")).is_file(), link
    assert all(m in output for m in report) and "report:" in output
    for task in QUICK.tasks:  # every labelled task exported and verified
        assert (out / "export" / f"sum-s0_task{task}_stock.pth").is_file()


def test_quick_demo_stats_match_the_store(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    stats = json.loads((out / "stats.json").read_text())
    assert sum(stats["kinds"].values()) == stats["masks"] > 0
    assert stats["wrong_fraction"] == pytest.approx(stats["kinds"]["wrong"] / stats["masks"])
    assert 0 <= stats["mean_u_right"] <= 1 and 0 <= stats["mean_u_wrong"] <= 1
    assert sum(k["masks"] for k in stats["by_kind"].values()) == stats["masks"]
    assert sum(k["wrong_pixels"] for k in stats["by_kind"].values()) == stats["wrong_pixels"]
    assert stats["auroc"] is None or 0 <= stats["auroc"] <= 1
    px = stats["wrong_pixels"] + stats["right_pixels"]  # the weight U takes = its mean over all pixels
    taken = stats["mean_u_wrong"] * stats["wrong_pixels"] + stats["mean_u_right"] * stats["right_pixels"]
    assert stats["u_weight"] == pytest.approx(taken / px) and stats["wrong_share"] == stats["wrong_pixels"] / px


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


def test_demo_refuses_an_absurd_shift_before_writing_anything(tmp_path: Path) -> None:
    from sumseg.data.synthetic import AppearanceShift
    from sumseg.demo.pipeline import run_demo

    for shift, named in ((AppearanceShift(0.0, 6.0), "shift.contrast"), (AppearanceShift(0.5, float("nan")),
                                                                          "shift.noise")):
        with pytest.raises(ConfigError, match=named):
            run_demo(tmp_path / "out", replace(QUICK, shift=shift), workers=0)
        assert not (tmp_path / "out").exists()  # not even settings.json


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


def _stamp(name: str, folder: str, partner: str = "") -> str:
    """Mark the start; wait (up to 60 s) until ``partner`` has started too, so two jobs finish only when
    they ran at the same time, however slowly their processes start; sleep 1 s; write start and end."""
    start = time.time()
    (Path(folder) / f"{name}.started").touch()
    while partner and not (Path(folder) / f"{partner}.started").exists() and time.time() - start < 60:
        time.sleep(0.01)
    time.sleep(1.0)
    (Path(folder) / name).write_text(f"{start} {time.time()}")
    return f"{name} done"


def _fail() -> str:
    raise ConfigError("job failed on purpose")


def test_job_graph_runs_in_parallel_after_dependencies(tmp_path: Path) -> None:
    jobs = [Job("a", _stamp, ("a", str(tmp_path), "b")), Job("b", _stamp, ("b", str(tmp_path), "a")),
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


def test_bootstrap_interval_pairs_instances_and_draws_seeds() -> None:
    rng = np.random.default_rng(5)
    base = rng.random((1, 200, 3))  # one "foundation" run: 200 instances, 3 rounds
    # model b = a + 0.02 on every instance: paired, the difference has no spread over instances
    curves = {"a": {"t": base}, "b": {"t": base + 0.02}}
    iv = bootstrap(curves, {"b": 1.0, "a": -1.0}, ["t"], 1)
    assert iv.estimate == pytest.approx(0.02) and iv.low == pytest.approx(0.02) and iv.high == pytest.approx(0.02)
    assert iv.verdict() == "holds" and iv.verdict(0.03) == "fails"
    assert Interval(0.0, -0.1, 0.1).verdict() == "unresolved"
    assert Interval(0.0, 0.02, 0.05).margin() == pytest.approx(0.02)  # clears 0 by its low end
    assert Interval(0.0, -0.05, -0.03).margin(0.01) == pytest.approx(0.04)  # below the bound by 4 points
    assert Interval(0.0, -0.1, 0.1).margin() == 0.0
    # unpaired noise of sd 0.1 per instance: the interval of the mean difference has half-width ≈ 1.96 · 0.1/√200
    noisy = {"a": {"t": base}, "b": {"t": base + 0.02 + rng.normal(0, 0.1, base.shape)}}
    iv = bootstrap(noisy, {"b": 1.0, "a": -1.0}, ["t"], 1)
    assert iv.high - iv.low == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(200), rel=0.25)
    # seeds: three runs of b that differ by a constant each; the interval widens to cover the seed spread
    seeds = np.concatenate([base + d for d in (0.0, 0.05, 0.10)])
    iv = bootstrap({"a": {"t": base}, "b": {"t": seeds}}, {"b": 1.0, "a": -1.0}, ["t"], 1)
    assert iv.estimate == pytest.approx(0.05) and iv.low < 0.03 and iv.high > 0.07
    # the mean over sets counts each set once, whatever its size
    two = {"a": {"t": base, "u": np.zeros((1, 10, 3))}, "b": {"t": base + 0.1, "u": np.zeros((1, 10, 3))}}
    assert bootstrap(two, {"b": 1.0, "a": -1.0}, ["t", "u"], 2).estimate == pytest.approx(0.05)
    with pytest.raises(ValueError, match="instances"):
        bootstrap({"a": {"t": base}, "b": {"t": base[:, :10]}}, {"b": 1.0, "a": -1.0}, ["t"], 1)


def test_claims_are_judged_on_their_intervals() -> None:
    n = 300
    rng = np.random.default_rng(0)

    def model(task: float, part: float, general: float) -> dict[str, np.ndarray]:
        noise = lambda: rng.normal(0, 0.02, (1, n, 3))  # noqa: E731
        return {"salient": task + noise(), "part": part + noise(), "general": general + noise()}

    curves = {FOUNDATION: model(0.90, 0.40, 0.60), "vanilla": model(0.95, 0.60, 0.40),
              "self_training": model(0.94, 0.58, 0.55), "sum": model(0.95, 0.595, 0.55)}
    rows = claims_table(curves, ["vanilla", "self_training", "sum"], ("salient", "part"),
                        ("salient", "part", "general"))
    got = {(r["claim"], r["clicks"]): r for r in rows}
    verdict = {claim: r["verdict"] for (claim, k), r in got.items() if k == 1}
    assert verdict["fine-tuning lifts the part task above the foundation (vanilla − foundation)"] == "holds"
    assert verdict["SUM keeps vanilla's task gain: SUM − vanilla > −1 point on the labelled tasks"] == "holds"
    assert verdict["vanilla forgets the general set (foundation − vanilla)"] == "holds"
    # SUM loses 5 points where vanilla loses 20: at most half
    half = got[("SUM loses at most half of vanilla's loss on the general set ((SUM − F) − ½ (vanilla − F))", 1)]
    assert half["verdict"] == "holds" and half["estimate"] == pytest.approx(-5 + 10, abs=0.5)
    assert verdict["SUM beats vanilla on the mean over all test sets"] == "holds"  # +4.8 on the mean
    # SUM vs self-training: +1 point on salient, +1.5 on part, 0 on general
    st = got[("SUM beats self-training on the mean over all test sets", 1)]
    assert st["estimate"] == pytest.approx(100 * (0.01 + 0.015) / 3, abs=0.3)
    assert not any("SUM without task prompts" in c for c in verdict)  # a method that did not run is left out
    assert all(r["low"] <= r["estimate"] <= r["high"] for r in rows)
    # one seed: a verdict within SEED_MARGIN (2 points) of its bound (or unresolved) needs --seeds 3; a wide one not
    part_gain = got[("fine-tuning lifts the part task above the foundation (vanilla − foundation)", 1)]
    assert part_gain["low"] > 1.0 and part_gain["needs_seeds"] is False  # +20 points: clear of its bound
    assert st["needs_seeds"] is True
    three = {m: {s: np.repeat(c, 3, axis=0) for s, c in sets.items()} for m, sets in curves.items()}
    rows3 = claims_table(three, ["vanilla", "self_training", "sum"], ("salient", "part"),
                         ("salient", "part", "general"))
    assert not any(r["needs_seeds"] for r in rows3)  # several seeds: the interval covers the seed spread


def test_auroc_from_histograms() -> None:
    assert auroc(np.array([0, 0, 2]), np.array([3, 0, 0])) == 1.0  # every wrong pixel above every right one
    assert auroc(np.array([2, 0, 0]), np.array([0, 0, 3])) == 0.0
    assert auroc(np.array([1, 1]), np.array([1, 1])) == 0.5  # same distribution: ties count half
    assert auroc(np.array([0, 1]), np.array([0, 0])) is None


def test_weight_u_takes_and_from_which_pixels() -> None:
    t = _Tally()
    u = np.array([[0.5, 0.0], [1.0, 0.25]])
    wrong = np.array([[True, False], [True, False]])
    t.add(u, wrong, theta=0.6)  # c = [[0.5, 1], [0, 0.75]]: no wrong pixel has c > 0.6
    s = t.summary()
    assert s["wrong_share"] == 0.5 and s["u_weight"] == pytest.approx(1.75 / 4)
    assert s["u_weight_on_wrong"] == pytest.approx(1.5 / 1.75) and s["wrong_pixels_passing_theta"] == 0.0
    t.add(np.zeros((2, 2)), np.zeros((2, 2), bool), theta=0.6)  # a right mask U trusts fully: takes nothing
    assert t.summary()["u_weight"] == pytest.approx(1.75 / 8) and t.summary()["wrong_share"] == 0.25


def test_pseudo_labels_match_their_best_true_mask() -> None:
    truth = np.zeros((2, 4, 4), bool)
    truth[0, :2], truth[1, 2:, 2:] = True, True  # 8 and 4 pixels
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :3] = True  # 6 pixels inside truth 0 → IoU 6/8
    masks[1, 3, :] = True  # 2 of 4 in truth 1 → IoU 2/6
    best, iou = best_match(masks, truth)
    assert best.tolist() == [0, 1] and np.allclose(iou, [6 / 8, 2 / 6])
