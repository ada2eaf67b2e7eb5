"""Format detection never falls back silently to a weaker format: a broken or unknown JSON is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sumseg.data.dataset import detect_format, read_dataset
from sumseg.data.summary import inspect_dataset
from sumseg.errors import DataError
from tests.test_data_readers import coco_doc, sa1b_folder, save_rgb, write_json


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


def test_sa1b_folder_with_a_truncated_first_json(tmp_path: Path) -> None:
    root = sa1b_folder(tmp_path / "sa")
    _truncate(root / "sa_0.json")
    assert detect_format(root) == "sa1b"  # decided by the next readable JSON, not "images"
    with pytest.raises(DataError, match=r"sa_0\.json: malformed JSON"):
        read_dataset(root)
    summary = inspect_dataset(root)  # skip_bad: the broken file is a problem, the rest is read
    assert summary.format == "sa1b" and sum(summary.images.values()) == 1
    assert [p.name for p, _ in summary.problems] == ["sa_0.json"]


def test_every_json_broken_names_the_first(tmp_path: Path) -> None:
    root = sa1b_folder(tmp_path / "sa")
    _truncate(root / "sa_0.json")
    _truncate(root / "sa_1.json")
    for call in (detect_format, read_dataset, inspect_dataset):
        with pytest.raises(DataError, match=r"sa_0\.json: malformed JSON"):
            call(root)


def test_coco_json_under_another_name(tmp_path: Path) -> None:
    write_json(tmp_path / "instances_val.json", coco_doc(tmp_path))
    assert detect_format(tmp_path) == "coco"
    ds = read_dataset(tmp_path)
    assert ds.format == "coco" and len(ds) == 2 and ds.num_masks == 3
    _truncate(tmp_path / "instances_val.json")
    with pytest.raises(DataError, match=r"instances_val\.json: malformed JSON"):
        inspect_dataset(tmp_path)


def test_several_coco_files_or_an_unknown_json_are_named(tmp_path: Path) -> None:
    write_json(tmp_path / "c" / "instances_train.json", coco_doc(tmp_path / "c"))
    write_json(tmp_path / "c" / "instances_val.json", coco_doc(tmp_path / "c"))
    with pytest.raises(DataError, match=r"c: holds the COCO file instances_train\.json and other JSON files "):
        detect_format(tmp_path / "c")
    save_rgb(tmp_path / "u" / "a.png")
    write_json(tmp_path / "u" / "meta.json", {"annotation": []})
    with pytest.raises(DataError, match=r"u/meta\.json: neither a COCO instance file .* nor an SA-1B"):
        read_dataset(tmp_path / "u", skip_bad=True)
