"""Property-based bad input for YAML configs: random bytes and mutated valid configs through
``load_config``. Each case ends in a ConfigError naming the file, or in a checked config that
survives the round trip through the YAML a run folder stores."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sumseg.config import load_config, to_dict, to_yaml
from sumseg.errors import ConfigError
from tests.test_hostile_data import mutate, mutate_doc, suite


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("hostile_configs")


@pytest.fixture(scope="module")
def default_tree() -> dict:
    """A valid config's plain tree: the defaults plus what has no default."""
    overrides = ["model.name=tiny", "data.labelled=[{path: data/duts, task: 1}]", "data.pseudo_labels=pl"]
    return to_dict(load_config(None, overrides))


def _sets(path: Path, key: str) -> bool:
    """Whether the YAML file ``path`` sets ``key`` (``a.b[0].c``), as far as it parses."""
    try:
        node = yaml.safe_load(path.read_bytes())
    except (yaml.YAMLError, ValueError):
        return True
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        index = int(part[1:-1]) if part.startswith("[") else None
        if index is None and isinstance(node, dict) and part in node:
            node = node[part]
        elif index is not None and isinstance(node, list) and index < len(node):
            node = node[index]
        else:
            return False
    return True


def _load(path: Path) -> None:
    try:
        cfg = load_config(path)
    except ConfigError as e:  # every problem with a key the file set names the file
        for problem in str(e).split("; "):
            key = problem.split(" ")[0].rstrip(":")
            assert str(path) in problem or not _sets(path, key), problem
        return
    again = path.with_suffix(".again.yaml")
    again.write_text(to_yaml(cfg))
    assert load_config(again) == cfg


@suite(50)
@given(data=st.binary(max_size=400))
def test_random_bytes_as_config(work: Path, data: bytes) -> None:
    path = work / "random.yaml"
    path.write_bytes(data)
    _load(path)


@suite(80)
@given(st.data())
def test_mutated_configs(work: Path, default_tree: dict, data: st.DataObject) -> None:
    path = work / "mutated.yaml"
    if data.draw(st.booleans()):
        path.write_text(yaml.safe_dump(mutate_doc(default_tree, data.draw), sort_keys=False))
    else:
        path.write_bytes(mutate(yaml.safe_dump(default_tree, sort_keys=False).encode(), data.draw))
    _load(path)
