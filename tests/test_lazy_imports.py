"""`import sumseg` and the data room import no torch: `sumseg --help` and data commands start fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sumseg
import sumseg.data

PROBE = """
import sys
import sumseg, sumseg.cli, sumseg.data
from sumseg.data.summary import inspect_dataset
from sumseg.data.synthetic_world import write_world
from sumseg.data.dataset import read_dataset
print(" ".join(m for m in ("torch", "segment_anything", "safetensors") if m in sys.modules))
"""


def test_package_and_data_room_import_no_torch() -> None:
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"imported eagerly: {res.stdout}"


@pytest.mark.parametrize("package", [sumseg, sumseg.data], ids=["sumseg", "sumseg.data"])
def test_every_public_name_resolves(package) -> None:  # noqa: ANN001 - a module
    for name in package.__all__:
        value = getattr(package, name)
        assert value is not None and name in dir(package)
        if hasattr(value, "__module__") and callable(value):
            assert getattr(sys.modules[value.__module__], name) is value
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.nope  # noqa: B018
