"""Every command validates the same thing the same way (issue 17, class 6): model names, the HQ refiner,
step / lr / seed bounds. Each test gives every command that takes the value the same bad value and
asserts the same message (up to the key's own spelling: ``model.name`` in a YAML, ``--model`` on the
command line)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sumseg.cli import app
from sumseg.config import PseudoLabelConfig, PseudoLabelSettings, load_config, load_refiner_config
from sumseg.data.synthetic_world import SPLITS, write_world
from sumseg.errors import ConfigError
from sumseg.models.checkpoint import build_model, save_checkpoint
from sumseg.pipeline.pseudo_label_run import run_pseudo_labels

REPO = Path(__file__).resolve().parents[1]
TRAIN_YAML, REFINER_YAML = REPO / "configs" / "tiny_sum.yaml", REPO / "configs" / "refiner_tiny.yaml"
KEYS = {"model.name": "MODEL", "--model": "MODEL", "model.checkpoint": "CKPT", "--checkpoint": "CKPT",
        "null": "omitted"}


def _core(message: str) -> str:
    """The message without its lead (the file or override that set the key) and with the key spelt neutrally."""
    message = re.sub(r"^(override '[^']*'|[^ ]+\.yaml): ", "", message.strip().removeprefix("error: "))
    return re.sub(r"--model|--checkpoint|model\.name|model\.checkpoint|\bnull\b", lambda m: KEYS[m[0]], message)


def _cli(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    return res.output.strip().splitlines()[-1]


def _config_error(load) -> str:  # noqa: ANN001 - a loader
    with pytest.raises(ConfigError) as e:
        load()
    return str(e.value)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rules")
    write_world(root / "w", sizes={s: 2 if s in ("task2_train", "unlabeled") else 0 for s in SPLITS}, workers=1,
                progress=False)
    store = root / "pl"
    amg = PseudoLabelSettings(points_per_side=4, pred_iou_thresh="q0.5", stability_score_thresh="q0.5")
    run_pseudo_labels(build_model("tiny"), PseudoLabelConfig(str(root / "w" / "unlabeled"), str(store), amg=amg,
                                                             progress=False))
    return {"labelled": root / "w" / "task2_train", "store": store, "root": root,
            "ckpt": save_checkpoint(root / "c.ckpt", build_model("tiny")),
            "hq": save_checkpoint(root / "hq.ckpt", build_model("hq_tiny"))}


def _by_command(files: dict[str, Path], name: str, checkpoint: Path | None) -> dict[str, str]:
    """The message of each command given model name ``name`` (and ``checkpoint``)."""
    ck = "null" if checkpoint is None else str(checkpoint)
    flags = [] if checkpoint is None else ["--checkpoint", str(checkpoint)]
    out = files["root"] / f"out-{name}"
    return {
        "train": _config_error(lambda: load_config(TRAIN_YAML, [f"model.name={name}", f"model.checkpoint={ck}"])),
        "refiner train": _config_error(lambda: load_refiner_config(REFINER_YAML, [f"model.name={name}",
                                                                                 f"model.checkpoint={ck}"])),
        "pseudo-label": _cli(["pseudo-label", "--images", str(files["labelled"]), "--out", str(out / "pl"),
                              "--model", name, *flags]),
        "eval": _cli(["eval", "--datasets", str(files["labelled"]), "--out", str(out / "eval"), "--model", name,
                      *flags]),
        "export": _cli(["export", "--task", "1", "--out", str(out / "x.pth"), "--no-verify", "--model", name,
                        *flags]),
    }


def test_an_unknown_model_name_is_refused_alike_by_every_command(files: dict[str, Path]) -> None:
    got = _by_command(files, "vit_x", files["ckpt"])
    cores = {cmd: _core(m) for cmd, m in got.items()}
    assert set(cores.values()) == {"MODEL must be one of vit_h, vit_l, vit_b, tiny, hq_vit_h, hq_vit_l, hq_vit_b, "
                                   "hq_tiny, sam2.1_hiera_t, sam2.1_hiera_s, sam2.1_hiera_b+, sam2.1_hiera_l, "
                                   "sam2_tiny, tiny_foundation, got 'vit_x'"}, got
    assert not (files["root"] / "out-vit_x").exists()  # refused before any output was made


def test_the_shipped_name_with_a_checkpoint_is_refused_alike_by_every_command(files: dict[str, Path]) -> None:
    got = _by_command(files, "tiny_foundation", files["ckpt"])  # export said "checkpoint holds a 'tiny' model"
    cores = {cmd: _core(m) for cmd, m in got.items()}
    assert set(cores.values()) == {"CKPT must be omitted with MODEL tiny_foundation (that name loads the weights "
                                   "shipped with sumseg); for weights of your own give MODEL tiny or leave it out"}, got


def test_the_shipped_name_is_accepted_by_every_command(files: dict[str, Path], tmp_path: Path) -> None:
    load_config(TRAIN_YAML, ["model.name=tiny_foundation", "model.checkpoint=null"])
    load_refiner_config(REFINER_YAML, ["model.name=tiny_foundation"])
    res = CliRunner().invoke(app, ["export", "--task", "1", "--out", str(tmp_path / "x.pth"), "--no-verify",
                                   "--model", "tiny_foundation"])  # before: --checkpoint was required
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["eval", "--datasets", str(files["labelled"]), "--out", str(tmp_path / "e"),
                                   "--model", "tiny_foundation", "--limit", "1", "--rounds", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    line = _cli(["pseudo-label", "--images", str(tmp_path / "none"), "--out", str(tmp_path / "pl"),
                 "--model", "tiny_foundation"])
    assert line == f"error: {tmp_path / 'none'}: no such file or folder"  # past the model


def test_an_hq_refiner_is_refused_alike_by_every_command(files: dict[str, Path], tmp_path: Path) -> None:
    """Before: ``refiner train`` trained an HQ refiner, ``uncertainty`` refused it with a size message and
    ``train method=refined_labels`` ended in ``AttributeError: 'NoneType' object has no attribute 'permute'``."""
    lab = files["labelled"]
    got = {
        "refiner train (model.name)": _config_error(lambda: load_refiner_config(REFINER_YAML, ["model.name=hq_tiny"])),
        "refiner train (checkpoint)": _cli(["refiner", "train", "--config", str(REFINER_YAML), "model.name=null",
                                            f"model.checkpoint={files['hq']}", f"data.labelled=[{lab}]",
                                            "data.embedding_cache=null", f"run.out={tmp_path / 'r'}"]),
        "uncertainty": _cli(["uncertainty", "--pseudo-labels", str(files["store"]), "--refiner", str(files["hq"])]),
        "train": _cli(["train", "--config", str(TRAIN_YAML), "model.name=tiny", "model.checkpoint=null",
                       "method=refined_labels", f"data.refiner={files['hq']}", f"data.pseudo_labels={files['store']}",
                       f"data.labelled=[{{path: {lab}, task: 2}}]", f"run.out={tmp_path / 't'}", "optim.steps=1",
                       "optim.warmup=0"]),
    }
    leads = {cmd: m.split(": a refiner must", 1)[0].removeprefix("error: ") for cmd, m in got.items()}
    assert {m.split(": a refiner must", 1)[-1] for m in got.values()} == {
        " be a plain SAM model, got the HQ-SAM model hq_tiny (U maps and refined labels are SAM's mask-decoder "
        "logits); train the refiner from tiny"}, got
    assert leads == {"refiner train (model.name)": "override 'model.name=hq_tiny': model.name",
                     "refiner train (checkpoint)": f"model.checkpoint {files['hq']}", "uncertainty": "--refiner",
                     "train": f"data.refiner {files['hq']}"}
    assert not (tmp_path / "r" / "last.ckpt").exists() and not (tmp_path / "t" / "last.ckpt").exists()


@pytest.mark.parametrize(("train_key", "flag", "value", "message"), [
    ("optim.steps", "--steps", "0", "must lie in [1, 1e+08], got 0"),
    ("optim.steps", "--steps", "1000000000", "must lie in [1, 1e+08], got 1000000000"),
    ("run.seed", "--seed", "-1", "must lie in [0, 9.22337e+18], got -1"),
])
def test_step_and_seed_bounds_read_alike_in_every_command(tmp_path: Path, train_key: str, flag: str, value: str,
                                                          message: str) -> None:
    """``train`` and ``refiner train`` (YAML keys) and ``pretrain`` (flags): one Checker, one wording."""
    extra = ["optim.warmup=0"] if train_key == "optim.steps" else []
    train = _config_error(lambda: load_config(TRAIN_YAML, [f"{train_key}={value}", *extra]))
    refiner = _config_error(lambda: load_refiner_config(REFINER_YAML, [f"{train_key}={value}", *extra]))
    pretrain = _cli(["pretrain", "--out", str(tmp_path / "p"), flag, value])  # before: a usage error (min=1) or none
    assert f"{train_key} {message}" in train and f"{train_key} {message}" in refiner
    assert pretrain == f"error: {flag} {message}"
    assert not (tmp_path / "p").exists()


def test_lr_bounds_read_alike(tmp_path: Path) -> None:
    for value, message in (("nan", "must be a finite number, got nan"), ("0", "must lie in (0, 1], got 0.0")):
        a = _config_error(lambda: load_config(TRAIN_YAML, [f"optim.lr={value}"]))  # noqa: B023
        b = _config_error(lambda: load_refiner_config(REFINER_YAML, [f"optim.lr={value}"]))  # noqa: B023
        assert _core(a) == _core(b) == f"optim.lr {message}"
