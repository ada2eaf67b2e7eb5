"""Bad stores, data and run folders give errors that name the file or key; the `sumseg train` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sumseg.cli import app
from sumseg.config import load_config
from sumseg.errors import ConfigError, DataError
from sumseg.outputs import OutputError
from sumseg.pipeline.store import UNCERTAINTY_FORMAT
from sumseg.tensor_files import read_tensors, save_tensors
from sumseg.train.distributed import Replica
from sumseg.train.loop import run_lock
from sumseg.train.train_run import build_training, train
from tests.train_fixtures import overrides, world_and_store, write_store

CPU = Replica(0, 1, 0, torch.device("cpu"))
FAST = ("optim.steps=1", "rounds.corrections=0", "rounds.final_round=false")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("errors")
    world, store = world_and_store(root)
    return world, store, root


def config(data: tuple[Path, Path, Path], out: str, *extra: str, store: Path | None = None):  # noqa: ANN201
    world, default_store, root = data
    return load_config(None, overrides(world, store or default_store, root / out, *FAST, *extra))


def copy_store(data: tuple[Path, Path, Path], name: str) -> Path:
    _, store, root = data
    return Path(shutil.copytree(store, root / name))


def test_missing_or_foreign_store_names_meta_json(data: tuple[Path, Path, Path]) -> None:
    _, _, root = data
    with pytest.raises(DataError, match=r"nowhere/meta.json: not found"):
        build_training(config(data, "r", store=root / "nowhere"), CPU)
    foreign = copy_store(data, "foreign")
    (foreign / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match=r"foreign/meta.json: not a sumseg pseudo-label store"):
        build_training(config(data, "r", store=foreign), CPU)
    other_size = copy_store(data, "other_size")
    meta = json.loads((other_size / "meta.json").read_text())
    (other_size / "meta.json").write_text(json.dumps(meta | {"image_size": 1024, "lowres_size": 256}))
    with pytest.raises(ConfigError, match=r"other_size/meta.json: pseudo-labels made for 1024-px"):
        build_training(config(data, "r", store=other_size), CPU)


def test_missing_u_maps_name_the_file_only_when_the_method_needs_them(data: tuple[Path, Path, Path]) -> None:
    world, _, root = data
    bare = write_store(world / "pretrain", root / "bare", uncertainty=False)
    with pytest.raises(DataError, match=r"bare/labels/.*\.uncertainty\.safetensors: U map missing .*uncertainty"):
        build_training(config(data, "r", store=bare), CPU)
    build_training(config(data, "r", "method=self_training", store=bare), CPU)  # c ≡ 1: no U maps needed


def test_damaged_or_stale_u_maps_name_the_file(data: tuple[Path, Path, Path]) -> None:
    damaged = copy_store(data, "damaged")
    for f in (damaged / "labels").glob("*.uncertainty.safetensors"):
        f.write_bytes(f.read_bytes()[:40])
    setup = build_training(config(data, "r", store=damaged), CPU)
    with pytest.raises(DataError, match=r"damaged/labels/.*\.uncertainty\.safetensors: unreadable"):
        setup.inputs(0, CPU)  # 1:1 mixing: the first image of a step is pseudo-labelled
    stale = copy_store(data, "stale")
    for f in (stale / "labels").glob("*.uncertainty.safetensors"):  # U maps of other pseudo-labels
        tensors, meta = read_tensors(f, UNCERTAINTY_FORMAT)
        save_tensors(f, tensors, meta | {"labels_digest": "0" * 32})
    setup = build_training(config(data, "r", store=stale), CPU)
    with pytest.raises(DataError, match=r"stale/labels/.*: made for other pseudo-labels"):
        setup.inputs(0, CPU)


def test_bad_labelled_sets_name_the_set(data: tuple[Path, Path, Path]) -> None:
    world, _, root = data
    with pytest.raises(DataError, match=r"missing_set: no such file or folder"):
        build_training(config(data, "r", f"data.labelled=[{{path: {root / 'missing_set'}}}]"), CPU)
    with pytest.raises(ConfigError, match=r"data.labelled\[1\].task: task id\(s\) \[3\] unknown to the model"):
        build_training(config(data, "r", "model.tasks=[0, 1]"), CPU)
    with pytest.raises(ConfigError, match=r"model.tasks: pseudo-labels carry task 0"):
        build_training(config(data, "r", "model.tasks=[1, 3]"), CPU)
    empty = root / "empty_set"
    shutil.copytree(world / "task1_train", empty)
    doc = json.loads((empty / "annotations.json").read_text())
    (empty / "annotations.json").write_text(json.dumps(doc | {"annotations": []}))
    with pytest.raises(DataError, match=r"empty_set: no masks to train on \(data.labelled\[0\]"):
        build_training(config(data, "r", f"data.labelled=[{{path: {empty}, task: 1}}]"), CPU)


def test_run_folder_checks(data: tuple[Path, Path, Path]) -> None:
    _, store, root = data
    (root / "a_file").write_text("x")
    with pytest.raises(OutputError, match=r"run.out .*a_file: is a file"):
        train(config(data, "a_file"))
    with pytest.raises(OutputError, match=r"run.out"):
        train(config(data, "pl"))  # the run folder would be the pseudo-label store
    cfg = config(data, "busy")
    with run_lock(root / "busy"), pytest.raises(ConfigError, match=r"busy is in use by another training run"):
        train(cfg)
    train(cfg)
    with pytest.raises(ConfigError, match=r"busy/config.yaml: this run was started with another config "
                                          r"\(optim.lr: 0.001 -> 0.002\)"):
        train(config(data, "busy", "optim.lr=2e-3"))
    saved = load_config(root / "busy" / "config.yaml")
    assert saved == cfg  # the resolved config, as YAML, loads back to the same tree


def test_cli_train(data: tuple[Path, Path, Path]) -> None:
    world, store, root = data
    cfg_file = root / "cli.yaml"
    cfg_file.write_text(f"model: {{name: tiny}}\ndata:\n  labelled: [{{path: {world / 'task1_train'}, task: 1}}]\n"
                        f"  pseudo_labels: {store}\n  images_per_step: 2\n  masks_per_image: 2\n")
    args = ["train", "--config", str(cfg_file), *FAST, f"run.out={root / 'cli_run'}", "run.device=cpu"]
    bad = CliRunner().invoke(app, [*args, "optim.lr=-1"])
    assert bad.exit_code == 1 and "optim.lr must lie in (0, 1], got -1.0" in bad.output
    unknown = CliRunner().invoke(app, [*args, "optim.learning_rate=1"])
    assert unknown.exit_code == 1 and "unknown key optim.learning_rate" in unknown.output
    ok = CliRunner().invoke(app, [*args, "run.progress=false"])
    assert ok.exit_code == 0, ok.output
    assert f"trained to {root / 'cli_run' / 'last.ckpt'}: 1 of 1 steps done" in ok.output  # steps as a user counts
    assert (root / "cli_run" / "config.yaml").is_file()
    again = CliRunner().invoke(app, [*args, "run.progress=false"])
    assert again.exit_code == 0 and "last.ckpt is already trained: 1 of 1 steps; nothing to do" in again.output
