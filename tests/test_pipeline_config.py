"""``sumseg pseudo-label`` and ``sumseg uncertainty`` read their section of the config tree from
``--config FILE.yaml`` and their flags: the same settings give the same section either way, the flags
given go over the file, and a bad value in the file is refused naming its key and the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import sumseg.cli_pipeline
import sumseg.models.checkpoint
import sumseg.pipeline.pseudo_label_run
import sumseg.pipeline.uncertainty
from sumseg.cli import app
from sumseg.config import (
    PseudoLabelConfig,
    PseudoLabelSettings,
    UncertaintyConfig,
    load_pseudo_label_config,
    load_uncertainty_config,
)
from sumseg.errors import ConfigError

PL_FLAGS = ["--images", "imgs", "--out", "store", "--model", "tiny", "--points-per-side", "8", "--points-per-batch",
            "16", "--iou-thresh", "q0.6", "--stability-thresh", "0.5", "--stability-offset", "2.0", "--nms-thresh",
            "0.6", "--max-area-ratio", "2", "--min-area-ratio", "0", "--max-per-image", "6", "--calibration-images",
            "8", "--shard", "1/2", "--cache", "emb", "--device", "cpu", "--no-progress"]
PL_YAML = {"images": "imgs", "out": "store", "model": "tiny", "shard": "1/2", "cache": "emb", "device": "cpu",
           "progress": False,
           "amg": {"points_per_side": 8, "points_per_batch": 16, "pred_iou_thresh": "q0.6",
                   "stability_score_thresh": 0.5, "stability_score_offset": 2.0, "box_nms_thresh": 0.6,
                   "max_area_ratio": 2, "min_area_ratio": 0,
                   "max_per_image": 6, "calibration_images": 8}}
UN_FLAGS = ["--pseudo-labels", "store", "--refiner", "ref.ckpt", "--show", "3", "--shard", "0/3", "--cache", "emb",
            "--device", "cpu", "--no-progress"]
UN_YAML = {"pseudo_labels": "store", "refiner": "ref.ckpt", "show": 3, "shard": "0/3", "cache": "emb", "device": "cpu",
           "progress": False}


class _Stop(ConfigError):
    """Raised by the patched runner once it has seen the section (the command then exits 1)."""


class _Net:
    def to(self, device: Any) -> _Net:
        return self

    def cache_encoder(self) -> None:
        return None


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The section each command hands its runner (no model is built, nothing is read)."""
    got: dict[str, Any] = {}

    def run(net: Any, cfg: Any, cache: Any = None) -> None:
        got["cfg"] = cfg
        raise _Stop("stopped")

    monkeypatch.setattr(sumseg.cli_pipeline, "_foundation", lambda model, checkpoint: _Net())
    monkeypatch.setattr(sumseg.models.checkpoint, "build_model", lambda model, checkpoint: _Net())
    monkeypatch.setattr(sumseg.pipeline.pseudo_label_run, "run_pseudo_labels", run)
    monkeypatch.setattr(sumseg.pipeline.uncertainty, "run_uncertainty", run)
    monkeypatch.setattr("sumseg.data.embedding_cache.EmbeddingCache", lambda folder, encoder: folder)
    return got


def _yaml(tmp_path: Path, tree: dict[str, Any], name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def _section(seen: dict[str, Any], args: list[str]) -> Any:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "stopped" in res.output, res.output
    return seen.pop("cfg")


def test_pseudo_label_yaml_and_flags_give_the_same_section(tmp_path: Path, seen: dict[str, Any]) -> None:
    by_flags = _section(seen, ["pseudo-label", *PL_FLAGS])
    by_file = _section(seen, ["pseudo-label", "--config", str(_yaml(tmp_path, PL_YAML))])
    assert by_flags == by_file == load_pseudo_label_config(_yaml(tmp_path, PL_YAML))
    assert by_file.amg == PseudoLabelSettings(8, 16, "q0.6", 0.5, 2.0, 0.6, 2.0, 0.0, 6, 8)
    assert isinstance(by_file.amg.stability_score_thresh, float)  # "0.5" from a flag and 0.5 from YAML alike


def test_uncertainty_yaml_and_flags_give_the_same_section(tmp_path: Path, seen: dict[str, Any]) -> None:
    by_flags = _section(seen, ["uncertainty", *UN_FLAGS])
    by_file = _section(seen, ["uncertainty", "--config", str(_yaml(tmp_path, UN_YAML))])
    assert by_flags == by_file == UncertaintyConfig("store", "ref.ckpt", 3, "0/3", "emb", "cpu", False)


def test_defaults_are_the_sections(seen: dict[str, Any]) -> None:
    """A flag left out takes the section's default (written once, in sumseg/config)."""
    cfg = _section(seen, ["pseudo-label", "--images", "imgs", "--out", "store"])
    assert cfg == PseudoLabelConfig(images="imgs", out="store")
    assert cfg.amg == PseudoLabelSettings() and cfg.amg.pred_iou_thresh == 0.88 and cfg.device == "cpu"
    assert _section(seen, ["uncertainty", "--pseudo-labels", "s", "--refiner", "r"]) == UncertaintyConfig("s", "r")


def test_flags_given_go_over_the_file(tmp_path: Path, seen: dict[str, Any]) -> None:
    path = _yaml(tmp_path, PL_YAML)
    cfg = _section(seen, ["pseudo-label", "--config", str(path), "--points-per-side", "4", "--out", "other"])
    assert (cfg.amg.points_per_side, cfg.out, cfg.amg.points_per_batch, cfg.images) == (4, "other", 16, "imgs")
    cfg = _section(seen, ["uncertainty", "--config", str(_yaml(tmp_path, UN_YAML)), "--show", "0", "--progress"])
    assert (cfg.show, cfg.progress, cfg.refiner) == (0, True, "ref.ckpt")


@pytest.mark.parametrize(("command", "tree", "message"), [
    ("pseudo-label", {"amg": {"points_per_side": 0}}, "cfg.yaml: amg.points_per_side must lie in [1, 128], got 0"),
    ("pseudo-label", {"amg": {"pred_iou_thresh": "q2"}},
     "cfg.yaml: amg.pred_iou_thresh must be a number or a quantile q<0..1> (e.g. q0.7), got 'q2'"),
    ("pseudo-label", {"amg": {"box_nms_thresh": ".nan"}}, "cfg.yaml: amg.box_nms_thresh must be a finite number"),
    ("pseudo-label", {"amg": {"points_per_sid": 8}}, "cfg.yaml: unknown key amg.points_per_sid"),
    ("pseudo-label", {"amg": {"points_per_side": "many"}}, "cfg.yaml: amg.points_per_side: Value 'many'"),
    ("pseudo-label", {"amg": {"max_per_image": [1, 2]}}, "cfg.yaml: amg.max_per_image must be a single value"),
    ("uncertainty", {"show": -1}, "cfg.yaml: show must lie in [0, 10000], got -1"),
    ("uncertainty", {"refiner": {"path": "x"}}, "cfg.yaml: refiner must be a single value, got a section"),
])
def test_a_bad_value_in_the_file_is_refused_naming_its_key(tmp_path: Path, seen: dict[str, Any], command: str,
                                                         tree: dict[str, Any], message: str) -> None:
    base = dict(PL_YAML if command == "pseudo-label" else UN_YAML)
    text = yaml.safe_dump({**base, **{k: ({**base[k], **v} if isinstance(base.get(k), dict) else v)
                                      for k, v in tree.items()}}).replace("'.nan'", ".nan")
    (tmp_path / "cfg.yaml").write_text(text)
    res = CliRunner().invoke(app, [command, "--config", str(tmp_path / "cfg.yaml")])
    assert res.exit_code == 1 and message in res.output and "stopped" not in res.output, res.output
    assert "cfg" not in seen  # refused before the runner (or a model) is reached


def test_a_bad_flag_over_a_good_file_is_named_by_the_flag(tmp_path: Path, seen: dict[str, Any]) -> None:
    res = CliRunner().invoke(app, ["pseudo-label", "--config", str(_yaml(tmp_path, PL_YAML)), "--points-per-side", "0"])
    assert res.exit_code == 1 and "error: --points-per-side must lie in [1, 128], got 0" in res.output, res.output


def test_the_needed_paths(tmp_path: Path, seen: dict[str, Any]) -> None:
    """Without --config a left-out --images / --refiner is the usage error it was; a file must name them."""
    res = CliRunner().invoke(app, ["pseudo-label", "--out", "store"])
    assert res.exit_code == 2 and "Missing option '--images'" in res.output, res.output
    res = CliRunner().invoke(app, ["uncertainty", "--pseudo-labels", "store"])
    assert res.exit_code == 2 and "Missing option '--refiner'" in res.output, res.output
    res = CliRunner().invoke(app, ["pseudo-label", "--config", str(_yaml(tmp_path, {"out": "store"}))])
    assert res.exit_code == 1 and "images is needed" in res.output, res.output
    with pytest.raises(ConfigError, match=r"^refiner is needed"):
        load_uncertainty_config(_yaml(tmp_path, {"pseudo_labels": "store"}))
