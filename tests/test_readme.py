"""The README works as written: its quickstart runs, top to bottom, on the tiny model and a small
synthetic world (every command, then both Python examples), and its full-size recipe uses only
flags and config keys that exist, on paths that chain from step to step.

The quickstart runs in a fresh folder beside which ``configs/`` is linked (the README says to run
from the repository root, where ``configs/`` is); nothing in a command is substituted. Each
command runs in this process through the CLI (as ``sumseg <args>``; starting a process per command
would add ~2 s of imports each).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sumseg.cli import app
from tests.doc_commands import REPO, chain_problems, fenced, parse, section, shell_lines, sumseg_args

README = (REPO / "README.md").read_text()
QUICKSTART = section(README, "Quickstart")
FULL_SIZE = section(README, "The same workflow on full-size SAM")
FULL_SIZE_INPUTS = {"checkpoints/sam_vit_b_01ec64.pth", "data/unlabeled", "data/salient/train"}
"""What the full-size recipe says the user brings (the paths configs/sum_ft_small.yaml reads)."""


def _commands(text: str) -> list[str]:
    lines = [ln for block in fenced(text, ("bash",)) for ln in shell_lines(block)]
    assert lines and all(sumseg_args(ln) is not None for ln in lines), lines  # nothing else to skip
    return lines


def test_readme_opens_with_make_demo_and_make_test() -> None:
    first = fenced(README, ("bash", ""))[0]
    assert first.split() == ["make", "demo", "make", "test"]
    assert README.index("make demo") < README.index("## ")


@pytest.mark.parametrize(("text", "external"), [(QUICKSTART, set()), (FULL_SIZE, FULL_SIZE_INPUTS)],
                         ids=["tiny", "full-size"])
def test_every_step_reads_what_an_earlier_step_wrote(text: str, external: set[str]) -> None:
    """Flags exist, override keys exist, configs load with their overrides, and the paths chain."""
    commands = [parse(ln) for ln in _commands(text)]
    steps = [" ".join(c.path) for c in commands]
    assert [s for s in steps if s != "data synth"] == [
        "pseudo-label", "refiner train", "uncertainty", "train", "eval", "export"], steps
    assert chain_problems(commands, external) == []
    assert all(c.opt("--out") for c in commands if c.path == ("eval",)), "eval needs --out"


def test_full_size_python_example_is_python() -> None:
    (block,) = fenced(FULL_SIZE, ("python",))
    compile(block, "README.md", "exec")
    assert 'sam_model_registry["vit_b"](checkpoint="sam_vit_b_salient.pth")' in block


def test_quickstart_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    times = []
    for line in _commands(QUICKSTART):
        tic = time.perf_counter()
        res = runner.invoke(app, sumseg_args(line))
        times.append((line.split(" --")[0], round(time.perf_counter() - tic, 1)))
        assert res.exit_code == 0, f"{line}\n{res.output}"
        assert "warning:" not in res.output, f"{line}\n{res.output}"  # e.g. pseudo-labels that keep nothing
    print("quickstart steps (s):", times)
    assert Path("runs/tiny_eval/results.md").is_file() and Path("runs/tiny_sum_salient.pth").is_file()

    blocks = fenced(QUICKSTART, ("python",))
    assert len(blocks) == 2
    scope: dict = {}
    exec(compile(blocks[0], "README.md: SumPredictor", "exec"), scope)  # noqa: S102 - the README's own example
    image, masks, scores, low_res = (scope[k] for k in ("image", "masks", "scores", "low_res"))
    assert image.dtype == np.uint8 and masks.shape == (3, *image.shape[:2]) and scores.shape == (3,)
    exec(compile(blocks[1], "README.md: stock SamPredictor", "exec"), scope)  # noqa: S102
    assert scope["masks"].shape == masks.shape
    # the stock model with task 1 folded in predicts what SumPredictor(task=1) does (docs/export.md)
    np.testing.assert_allclose(scope["low_res"], low_res, atol=1e-4)
