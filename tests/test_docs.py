"""The docs' commands exist as written: every ``sumseg`` command a page shows (in a shell block or
inline) parses against the real CLI — its subcommand, every ``--flag`` (as its ``--help`` lists
them) — every ``key=value`` override is a key of that command's config, and a config file it
names loads with those overrides; a page's table of flags lists real flags; a sequence of commands
on real paths chains (each step reads what the one before wrote). The commands themselves run in
tests/test_readme.py (the README's quickstart is the same workflow on the tiny model).
"""

from __future__ import annotations

import re

import pytest

from tests.doc_commands import (
    REPO,
    chain_problems,
    doc_commands,
    fenced,
    is_config_key,
    load_command_config,
    parse,
    shell_lines,
)

DOCS = REPO / "docs"
PAGES = ["pseudo-labels.md", "refiner.md", "training.md", "eval.md", "export.md", "data.md", "tiny-foundation.md",
         "models.md", "synthetic-world.md", "outputs.md"]
FLAG_PAGES = {  # pages that document a command's flags: every `--flag` they name is one of these commands'
    "pseudo-labels.md": [("pseudo-label",), ("uncertainty",), ("refiner", "train")],
    "eval.md": [("eval",)],
    "export.md": [("export",), ("eval",)],
    "data.md": [("data", "inspect"), ("data", "synth")],
}


def _options(path: tuple[str, ...]) -> set[str]:
    import typer.main

    from sumseg.cli import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


@pytest.mark.parametrize("page", PAGES)
def test_every_command_a_page_shows_exists(page: str) -> None:
    text = (DOCS / page).read_text()
    commands = doc_commands(text)
    for line in commands:
        load_command_config(parse(line))  # AssertionError naming the line and what is wrong


@pytest.mark.parametrize("page", ["training.md", "refiner.md"])
def test_every_override_a_page_shows_is_a_config_key(page: str) -> None:
    from sumseg.config import RefinerConfig, TrainConfig

    schema = TrainConfig if page == "training.md" else RefinerConfig
    text = (DOCS / page).read_text()
    spans = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text)
    keys = [m.group(1) for span in spans for m in re.finditer(r"(?:^|\s)([a-z_]+(?:\.[a-z_]+)+)=", span)]
    assert keys, "the page shows overrides"
    assert [k for k in keys if k != "section.key" and not is_config_key(schema, k)] == []


@pytest.mark.parametrize("page", sorted(FLAG_PAGES))
def test_every_flag_a_page_names_exists(page: str) -> None:
    text = (DOCS / page).read_text()
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
    known = set().union(*(_options(p) for p in FLAG_PAGES[page]))
    assert named and sorted(named - known) == []


def test_pseudo_labels_page_chains_into_the_store_train_reads() -> None:
    """pseudo-label's --out is what uncertainty reads and what configs/tiny_sum.yaml trains on."""
    (block, *_) = fenced((DOCS / "pseudo-labels.md").read_text())
    commands = [parse(ln) for ln in shell_lines(block)]
    assert [c.path for c in commands] == [("pseudo-label",), ("uncertainty",)]
    assert chain_problems(commands, {"runs/world/unlabeled", "runs/refiner_tiny/last.ckpt"}) == []
    train = parse("sumseg train --config configs/tiny_sum.yaml")
    assert chain_problems([*commands, train], {"runs/world/unlabeled", "runs/refiner_tiny/last.ckpt",
                                               "runs/world/task1_train"}) == []


def test_the_chain_check_finds_the_old_readmes_gaps() -> None:
    """The check itself: the README before issue 18 wrote pl/ and runs/refiner_vit_b, then read others."""
    old = ["sumseg pseudo-label --model vit_b --checkpoint sam_vit_b.pth --images unlabeled/ --out pl/",
           "sumseg refiner train --config configs/refiner_vit_b.yaml model.checkpoint=sam_vit_b.pth "
           "data.labelled=[data/salient/train]",
           "sumseg uncertainty --pseudo-labels pl/ --refiner runs/refiner/last.ckpt",
           "sumseg train --config configs/sum_ft_small.yaml",
           "sumseg export --checkpoint runs/sum/last.ckpt --task 1 --out sam_vit_b_salient.pth"]
    problems = chain_problems([parse(ln) for ln in old], {"sam_vit_b.pth", "unlabeled", "data/salient/train",
                                                          "checkpoints/sam_vit_b_01ec64.pth"})
    assert [p.split(": reads ")[1].split(",")[0] for p in problems] == [
        "runs/refiner/last.ckpt", "data/pseudo_labels#U", "runs/sum/last.ckpt"]
    with pytest.raises(AssertionError, match="has no option --points-per-si"):
        parse("sumseg pseudo-label --points-per-si 8 --images a --out b")
    with pytest.raises(AssertionError, match="'optim.step=10' is not a key=value of a real config key"):
        load_command_config(parse("sumseg train --config configs/tiny_sum.yaml optim.step=10"))
    with pytest.raises(AssertionError, match="the config does not load: .*optim.warmup must lie in"):
        load_command_config(parse("sumseg train --config configs/tiny_sum.yaml optim.steps=5"))


def test_python_examples_of_the_model_pages_run() -> None:
    for page in ("tiny-foundation.md", "models.md"):
        blocks = fenced((DOCS / page).read_text(), ("python",))
        assert blocks, page
        for block in blocks:
            scope: dict = {}
            exec(compile(block, page, "exec"), scope)  # noqa: S102 - the page's own example
            assert scope["model"].name == "tiny", page
