"""`sumseg eval` end to end on the real benchmarks (a subset) and on an exported stock file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sumseg import build_model, save_checkpoint
from sumseg.cli import app
from sumseg.models.export import export_checkpoint
from tests.conftest import randomise_task_prompts

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
needs_benchmarks = pytest.mark.skipif(
    not (BENCHMARKS / "GrabCut").is_dir() or not (BENCHMARKS / "Berkeley").is_dir(),
    reason=f"real benchmarks not found at {BENCHMARKS} (../shared/benchmarks beside the repository)",
)
runner = CliRunner()


def _eval(*args: str) -> object:
    return runner.invoke(app, ["eval", "--benchmarks-dir", str(BENCHMARKS), "--no-progress", *args])


@needs_benchmarks
def test_eval_grabcut_and_berkeley_subset(tmp_path: Path) -> None:
    res = _eval("--model", "tiny", "--datasets", "GrabCut,Berkeley", "--protocol", "clicks,box",
                "--rounds", "3", "--limit", "2", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data) == {"GrabCut", "Berkeley"}
    for ds in data.values():
        assert set(ds) == {"clicks", "box"}
        for r in ds.values():
            assert set(r) == {"miou", "biou", "noc85", "noc90", "n"}
            assert r["n"] == 2 and len(r["miou"]) == len(r["biou"]) == 3
            assert all(0.0 <= v <= 1.0 for v in r["miou"])
    # the CLI's numbers are the harness's: rerun the first two GrabCut instances directly
    from sumseg.data.dataset import read_dataset
    from sumseg.evaluate.interactive import run_instance
    from sumseg.evaluate.run import iter_instances
    from sumseg.models.predictor import SumPredictor

    predictor = SumPredictor(build_model("tiny"))
    curves = []
    for inst in iter_instances(read_dataset(BENCHMARKS / "GrabCut"), None, 2):
        predictor.set_image(inst.image)
        curves.append(run_instance(predictor, inst, "clicks", rounds=3).ious)
    assert data["GrabCut"]["clicks"]["miou"] == pytest.approx(list(np.mean(curves, axis=0)), abs=1e-6)
    md = (tmp_path / "results.md").read_text()
    assert "| GrabCut | clicks | all | 2 |" in md and "| Berkeley | box | all | 2 |" in md
    assert (tmp_path / "iou_vs_clicks.png").stat().st_size > 1000
    overlays = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert overlays and all(p.endswith(".png") for p in overlays)
    assert any(p.startswith("GrabCut_clicks_") for p in overlays)


def _export_vs_checkpoint(tmp_path: Path, datasets: list[str], rounds: int, limit: int) -> dict[str, list]:
    """Per-round mIoU and boundary IoU of a whole ``sumseg eval`` (clicks and box protocols) of a checkpoint
    with random non-zero task prompts (task 1 in every round / round 1 only / none) and of its stock export."""
    ckpt = save_checkpoint(tmp_path / "sum.ckpt", randomise_task_prompts(build_model("tiny")))
    export_checkpoint(ckpt, 1, tmp_path / "stock.pth")
    common = ["--datasets", ",".join(datasets), "--rounds", str(rounds), "--limit", str(limit),
              "--protocol", "clicks,box"]
    runs = {
        "every": ["--checkpoint", str(ckpt), "--task", "1"],
        "first": ["--checkpoint", str(ckpt), "--task", "1", "--task-prompt", "first"],
        "stock": ["--model", "tiny", "--checkpoint", str(tmp_path / "stock.pth")],
        "plain": ["--checkpoint", str(ckpt)],
    }
    out = {}
    for name, args in runs.items():
        res = _eval(*args, "--out", str(tmp_path / name), *common)
        assert res.exit_code == 0, res.output
        data = json.loads((tmp_path / name / "results.json").read_text())
        out[name] = [(r["miou"], r["biou"]) for ds in data.values() for r in ds.values()]
    return out


def test_exported_stock_file_scores_like_the_task_checkpoint_in_every_round(tmp_path: Path) -> None:
    # a whole eval (points, box, mask prompts fed back over 4 rounds) of the checkpoint with its task prompt
    # in every round equals the eval of its export; with the prompt in round 1 only it equals it in round 1
    from sumseg.data.synthetic_world import SPLITS, write_world

    write_world(tmp_path / "world", seed=3, sizes={s: 2 if s == "task1_test" else 0 for s in SPLITS},
                        image_size=96, workers=1, progress=False)
    got = _export_vs_checkpoint(tmp_path, [str(tmp_path / "world" / "task1_test")], rounds=4, limit=4)
    for (every, first, stock, plain) in zip(got["every"], got["first"], got["stock"], got["plain"], strict=True):
        for k in range(2):  # mIoU, boundary IoU
            assert every[k] == pytest.approx(stock[k], abs=1e-4)
            assert first[k][0] == pytest.approx(stock[k][0], abs=1e-4)
        assert every[0] != plain[0]  # the task prompt changes the results
    assert any(f[0][1:] != s[0][1:] for f, s in zip(got["first"], got["stock"], strict=True))  # later rounds differ


def test_eval_errors_are_clear(tmp_path: Path) -> None:
    res = _eval("--model", "tiny", "--datasets", "NoSuchSet", "--out", str(tmp_path))
    assert res.exit_code == 1 and "dataset 'NoSuchSet': neither a path nor a folder" in res.output
    res = _eval("--model", "tiny", "--datasets", str(tmp_path), "--protocol", "scribbles", "--out", str(tmp_path))
    assert res.exit_code == 1 and "unknown protocol 'scribbles'" in res.output
    res = _eval("--model", "tiny", "--datasets", str(tmp_path), "--task", "salient", "--out", str(tmp_path))
    assert res.exit_code == 1 and "--task must be a task id" in res.output


def test_skip_bad_counts_and_lists_a_corrupt_image(tmp_path: Path) -> None:
    from sumseg.data.synthetic_world import SPLITS, write_world

    write_world(tmp_path / "w", sizes={s: 3 if s == "task1_test" else 0 for s in SPLITS}, workers=1, progress=False)
    split = tmp_path / "w" / "task1_test"
    bad = sorted(split.rglob("*.png"))[1]
    bad.write_bytes(b"not a png at all")
    strict = _eval("--model", "tiny", "--datasets", str(split), "--rounds", "1", "--out", str(tmp_path / "a"))
    assert strict.exit_code == 1 and str(bad) in strict.output
    lenient = _eval("--model", "tiny", "--datasets", str(split), "--rounds", "1", "--skip-bad",
                    "--out", str(tmp_path / "b"))
    assert lenient.exit_code == 0, lenient.output
    assert "task1_test: skipped 1 item(s)" in lenient.output
    assert json.loads((tmp_path / "b" / "results.json").read_text())["task1_test"]["clicks"]["n"] == 2
    md = (tmp_path / "b" / "results.md").read_text()
    assert "## Skipped items" in md and bad.name in md


def test_dataset_without_instances_is_a_clear_error(tmp_path: Path) -> None:
    from sumseg.data.synthetic_world import SPLITS, write_world

    write_world(tmp_path / "w", sizes={s: 2 if s == "unlabeled" else 0 for s in SPLITS}, workers=1, progress=False)
    res = _eval("--model", "tiny", "--datasets", str(tmp_path / "w" / "unlabeled"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and "unlabeled: no instances to evaluate" in res.output


def test_datasets_with_the_same_name_are_refused(tmp_path: Path) -> None:
    for parent in ("a", "b"):
        (tmp_path / parent / "test").mkdir(parents=True)
    res = _eval("--model", "tiny", "--datasets", f"{tmp_path / 'a' / 'test'},{tmp_path / 'b' / 'test'}",
                "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and "would both be reported as 'test'" in res.output


@needs_benchmarks
def test_equal_pixels_share_one_encoder_pass_and_overlay_count(tmp_path: Path, monkeypatch) -> None:
    from sumseg.data.dataset import read_dataset
    from sumseg.evaluate.run import EvalSettings, evaluate, iter_instances
    from sumseg.models.predictor import SumPredictor

    berkeley = read_dataset(BENCHMARKS / "Berkeley")
    keys = {i.name: i.image_key for i in iter_instances(berkeley, None, None)}
    assert keys["189011a"] == keys["189011b"] and keys["189011a"] != keys["239007a"]
    calls = []
    original = SumPredictor.set_image
    monkeypatch.setattr(SumPredictor, "set_image", lambda self, img: (calls.append(1), original(self, img)))
    settings = EvalSettings(protocols=("clicks", "box"), rounds=1, overlays=3, limit=5)
    evaluate(build_model("tiny"), {"GrabCut": BENCHMARKS / "GrabCut"}, settings, tmp_path, progress=False)
    assert len(calls) == 5  # one encoder pass per image (one instance each) for both protocols
    assert len(list((tmp_path / "overlays").iterdir())) == 3 * 2


def _split(root: Path, name: str = "task1_test", n: int = 2) -> Path:
    from sumseg.data.synthetic_world import SPLITS, write_world

    write_world(root, sizes={s: n if s == name else 0 for s in SPLITS}, workers=1, progress=False)
    return root / name


def _error_line(res) -> str:  # noqa: ANN001 - click's Result
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Path:
    """An existing folder this process cannot create files in (root ignores modes: use /sys/kernel)."""
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
        return tmp_path / "ro"
    if _cannot_create_in(Path("/sys/kernel")):
        return Path("/sys/kernel")
    pytest.skip("no folder that root cannot write in")


def _cannot_create_in(folder: Path) -> bool:
    try:
        (folder / ".sumseg-probe").touch()
    except OSError:
        return True
    (folder / ".sumseg-probe").unlink()
    return False


def test_bad_out_is_one_error_line_before_any_work(tmp_path: Path, unwritable_dir: Path) -> None:
    split = _split(tmp_path / "w")
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "results.json").mkdir()
    cases = [
        (tmp_path / "file", "is a file, not a folder"),
        (tmp_path / "file" / "sub", "cannot create this folder (a parent is a file"),
        (unwritable_dir, "cannot write in this folder"),
        (tmp_path / "taken", "results.json exists and is not a file"),
        (split, "would overwrite the input"),
        (split / "images" / "eval", "lies inside the input folder"),
    ]
    for out, problem in cases:
        res = _eval("--model", "tiny", "--datasets", str(split), "--rounds", "1", "--out", str(out))
        line = _error_line(res)
        assert line.startswith(f"error: --out {out}: ") and problem in line, line
    assert not list((split / "images").glob("eval*"))


def test_a_second_run_on_the_same_out_is_refused(tmp_path: Path) -> None:
    split = _split(tmp_path / "w")
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen(  # another run holds the folder's lock
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); sys.stdin.read()", str(out / ".sumseg.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        res = _eval("--model", "tiny", "--datasets", str(split), "--rounds", "1", "--out", str(out))
        assert "another sumseg run is writing to this folder" in _error_line(res)
    finally:
        holder.communicate("")
    assert not (out / "results.json").exists()
    res = _eval("--model", "tiny", "--datasets", str(split), "--rounds", "1", "--out", str(out))
    assert res.exit_code == 0, res.output


def test_stale_overlays_of_an_earlier_run_are_removed(tmp_path: Path) -> None:
    first, second = _split(tmp_path / "a", "task1_test"), _split(tmp_path / "b", "task3_test")
    out = tmp_path / "o"
    for split in (first, second):
        res = _eval("--model", "tiny", "--datasets", str(split), "--rounds", "1", "--out", str(out))
        assert res.exit_code == 0, res.output
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays and all(name.startswith("task3_test_") for name in overlays), overlays
    assert set(json.loads((out / "results.json").read_text())) == {"task3_test"}


def test_empty_dataset_list_is_a_usage_error(tmp_path: Path) -> None:
    for spec in (",", "", " , "):
        res = _eval("--model", "tiny", "--datasets", spec, "--out", str(tmp_path / "o"))
        assert res.exit_code == 2 and "--datasets" in res.output and "no dataset" in res.output, res.output
    assert not (tmp_path / "o").exists()


def _square_ann(ann_id: int, x: int, y: int, side: int, crowd: int = 0) -> dict:
    polygon = [x, y, x + side, y, x + side, y + side, x, y + side]
    return {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": crowd, "segmentation": [polygon],
            "bbox": [x, y, side, side], "area": side * side}


def test_gt_wholly_inside_a_crowd_region_is_reported_not_scored(tmp_path: Path) -> None:
    from tests.test_data_readers import save_rgb

    save_rgb(tmp_path / "d" / "images" / "a.png", 64, 64)
    anns = [_square_ann(1, 0, 0, 40, crowd=1), _square_ann(2, 10, 10, 12), _square_ann(3, 44, 44, 14)]
    doc = {"images": [{"id": 1, "file_name": "images/a.png", "height": 64, "width": 64}], "annotations": anns,
           "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "d" / "annotations.json").write_text(json.dumps(doc))
    res = _eval("--model", "tiny", "--datasets", str(tmp_path / "d"), "--rounds", "1", "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    assert "d: skipped 1 item(s)" in res.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["d"]["clicks"]["n"] == 1
    md = (tmp_path / "o" / "results.md").read_text()
    assert "instance 2: ground-truth mask lies wholly inside the ignore region" in md
