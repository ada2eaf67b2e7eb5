"""sumseg.outputs: output folders and files checked up front, one run per folder."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sumseg.outputs import LOCK_NAME, OutputError, check_output_dir, check_output_file, folder_lock, output_dir


def test_output_dir_creates_checks_and_locks(tmp_path: Path) -> None:
    with output_dir(tmp_path / "a" / "b", files=["r.json"], dirs=["plots"]) as out:
        assert out == (tmp_path / "a" / "b").resolve() and out.is_dir()
        assert (out / LOCK_NAME).is_file()
        with output_dir(out):  # the same thread re-enters (a command, then the library it calls)
            pass
        probe = "import sys; from sumseg.outputs import output_dir\nwith output_dir(sys.argv[1]): pass"
        other = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True)
        assert other.returncode == 1 and "another sumseg run is writing to this folder" in other.stderr
        errors: list[Exception] = []

        def in_thread() -> None:
            try:
                with output_dir(out):
                    pass
            except OutputError as e:
                errors.append(e)

        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        assert len(errors) == 1 and "is held" in str(errors[0])
    with output_dir(tmp_path / "a" / "b"):  # released
        pass


def test_outputs_of_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d" / "r.json").mkdir(parents=True)
    (tmp_path / "d" / "plots").write_text("x")
    with pytest.raises(OutputError, match=r"f: is a file, not a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputError, match=r"cannot create this folder \(a parent is a file"):
        check_output_dir(tmp_path / "f" / "sub")
    with pytest.raises(OutputError, match="r.json exists and is not a file"):
        check_output_dir(tmp_path / "d", files=["r.json"])
    with pytest.raises(OutputError, match="plots exists and is not a folder"):
        check_output_dir(tmp_path / "d", dirs=["plots"])
    with pytest.raises(OutputError, match=r"^--out .*d: is a folder; give a file name$"):
        check_output_file(tmp_path / "d", label="--out")
    assert check_output_file(tmp_path / "new" / "x.pth") == (tmp_path / "new" / "x.pth").resolve()


def test_an_output_never_overwrites_or_contains_an_input(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (tmp_path / "ckpt").write_text("weights")
    (tmp_path / "link").symlink_to(data)
    refused = [
        (lambda: check_output_dir(data, inputs=[data]), "would overwrite the input"),
        (lambda: check_output_dir(tmp_path / "link", inputs=[data]), "would overwrite the input"),
        (lambda: check_output_dir(data / "images" / "eval", inputs=[data]), "lies inside the input folder"),
        (lambda: check_output_dir(tmp_path, inputs=[tmp_path / "ckpt"], files=["ckpt"]), "would overwrite"),
        (lambda: check_output_dir(tmp_path, inputs=[data / "images"], dirs=["data"]), "would overwrite"),
        (lambda: check_output_file(tmp_path / "ckpt", inputs=[tmp_path / "ckpt"]), "would overwrite"),
        (lambda: check_output_file(data / "x.pth", inputs=[data]), "lies inside the input folder"),
    ]
    for call, problem in refused:
        with pytest.raises(OutputError, match=problem):
            call()
    assert not (data / "images" / "eval").exists()  # refused before anything was created
    check_output_dir(tmp_path / "out", inputs=[data, tmp_path / "ckpt", None])  # siblings are fine
    check_output_dir(tmp_path, inputs=[data], files=["results.json"])  # an input inside the output folder is too


def test_folder_lock_with_its_own_file_and_message(tmp_path: Path) -> None:
    probe = ("import sys; from sumseg.outputs import folder_lock\n"
             "with folder_lock(sys.argv[1], 'build.lock', label='cache', busy='someone builds it'): pass")
    with folder_lock(tmp_path, "build.lock"):
        res = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1
    assert f"OutputError: cache {tmp_path.resolve()}: someone builds it (lock" in res.stderr
    assert not (tmp_path / LOCK_NAME).exists()  # only the named lock file
