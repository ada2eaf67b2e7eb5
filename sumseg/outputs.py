"""Output locations, checked before the work starts: writable, not an input, one run at a time.

Every command that writes files calls one of these first, so a bad ``--out`` costs an
``error: …`` line at once instead of a traceback after the work:

- :func:`output_dir` (a context manager) prepares an output **folder** and holds its lock for
  the run: ``with output_dir(out, inputs=[data, ckpt], files=["results.json"], dirs=["overlays"]):``;
- :func:`check_output_dir` does the same checks without taking the lock (e.g. before loading a
  model, when the lock is taken later by the library call that writes);
- :func:`check_output_file` checks a single output **file** (written atomically, so no lock);
- :func:`folder_lock` is the lock itself, for folders with their own lock file (e.g. a cache).

Checks: the folder exists or is created (parents too) and a file can be created in it (a real
probe, so read-only mounts count, also for root); every named output file / subfolder is
absent or of the right kind; no input is the output, lies inside an output subfolder or is one
of the output files, and the output does not lie inside an input folder. Every problem raises
:class:`OutputError` naming the path.

The lock is an exclusive ``flock`` on ``<folder>/.sumseg.lock`` (the file stays; the OS drops
the lock when the process dies, so a killed run never leaves a stale lock). Another process or
thread that wants the folder gets :class:`OutputError` at once; nested ``output_dir`` calls on
one folder in the same thread re-enter (a command may lock ``--out`` and then call a library
function that locks it again).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sumseg.errors import SumsegError

LOCK_NAME = ".sumseg.lock"
BUSY = "another sumseg run is writing to this folder; wait for it to finish or choose another folder"

PathLike = str | os.PathLike


class OutputError(SumsegError):
    """An output location cannot be used: not writable, of the wrong kind, an input, or in use."""


_held: dict[Path, tuple[int, int]] = {}  # lock file → (thread id, depth) of locks this process holds
_held_guard = threading.Lock()


def _where(label: str, path: Path) -> str:
    return f"{label} {path}" if label else str(path)


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _probe_writable(folder: Path, label: str) -> None:
    """Create and remove a file in ``folder``: the only check that also holds for root and read-only mounts."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sumseg-probe-", dir=folder)
    except OSError as e:
        raise OutputError(f"{_where(label, folder)}: cannot write in this folder ({_reason(e)})") from e
    os.close(fd)
    os.unlink(tmp)


def _make_folder(folder: Path, label: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{_where(label, folder)}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        what = "a parent is a file, not a folder" if e.errno in (errno.ENOTDIR, errno.EEXIST) else _reason(e)
        raise OutputError(f"{_where(label, folder)}: cannot create this folder ({what})") from e


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_inputs(given_out: Path, inputs: Iterable[PathLike | None], files: Iterable[str], dirs: Iterable[str],
                  label: str) -> None:
    """Refuse an output that is, or would overwrite or delete, an input (symlinks resolved)."""
    out = given_out.resolve()
    written = [out / f for f in files]
    cleaned = [out / d for d in dirs]
    for given in inputs:
        if given is None:
            continue
        src = Path(given).resolve()
        if src == out or src in written or any(_inside(src, d) for d in cleaned):
            raise OutputError(f"{_where(label, given_out)}: would overwrite the input {given}; choose another output")
        if src.is_dir() and src in out.parents:
            raise OutputError(f"{_where(label, given_out)}: lies inside the input folder {given}; "
                              "choose another output")


def check_output_dir(path: PathLike, *, inputs: Iterable[PathLike | None] = (), files: Iterable[str] = (),
                     dirs: Iterable[str] = (), label: str = "output folder") -> Path:
    """Create ``path`` if needed and check it can take this run's outputs; return it resolved.

    ``files``/``dirs``: names (relative to ``path``) the run writes; each must be absent or a
    file / a folder. ``inputs``: paths the run reads (None entries are ignored). ``label``
    starts every message (the command-line option, e.g. ``"--out"``). Raises OutputError.
    """
    files, dirs = list(files), list(dirs)
    folder = Path(path)
    out = folder.resolve()
    _check_inputs(folder, inputs, files, dirs, label)  # before creating anything
    _make_folder(folder, label)
    for name in files:
        if (out / name).exists() and not (out / name).is_file():
            raise OutputError(f"{_where(label, folder)}: {name} exists and is not a file; remove it first")
    for name in dirs:
        if (out / name).exists() and not (out / name).is_dir():
            raise OutputError(f"{_where(label, folder)}: {name} exists and is not a folder; remove it first")
    _probe_writable(folder, label)
    return out


@contextmanager
def folder_lock(folder: PathLike, name: str = LOCK_NAME, label: str = "output folder",
                busy: str = BUSY) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/name`` for the block (the folder must exist).

    Re-entered by the thread that holds it; another thread or process gets OutputError
    ``"<label> <folder>: <busy> (lock <file> is held)"`` at once, without waiting.
    """
    lock_path = Path(folder).resolve() / name
    me = threading.get_ident()
    with _held_guard:
        owner, depth = _held.get(lock_path, (None, 0))
        if owner == me:
            _held[lock_path] = (me, depth + 1)
    if owner == me:
        try:
            yield
        finally:
            with _held_guard:
                _held[lock_path] = (me, depth)
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise OutputError(f"{_where(label, Path(folder))}: cannot create the lock file {lock_path} "
                          f"({_reason(e)})") from e
    try:  # flock locks belong to the open file: another thread's or process's open of the file conflicts
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise OutputError(f"{_where(label, Path(folder))}: {busy} (lock {lock_path} is held)") from e
        with _held_guard:
            _held[lock_path] = (me, 1)
        try:
            yield
        finally:
            with _held_guard:
                del _held[lock_path]
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def output_dir(path: PathLike, *, inputs: Iterable[PathLike | None] = (), files: Iterable[str] = (),
               dirs: Iterable[str] = (), label: str = "output folder") -> Iterator[Path]:
    """:func:`check_output_dir`, then hold the folder's lock for the block; yields the resolved folder."""
    out = check_output_dir(path, inputs=inputs, files=files, dirs=dirs, label=label)
    with folder_lock(path, label=label):
        yield out


def check_output_file(path: PathLike, *, inputs: Iterable[PathLike | None] = (), label: str = "output file") -> Path:
    """Check that ``path`` can be written (atomically) and is none of ``inputs``; return it resolved.

    Its folder is created if needed and must accept a new file; ``path`` itself must not be a
    folder. Raises OutputError.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{_where(label, target)}: is a folder; give a file name")
    _check_inputs(target, inputs, (), (), label)
    where = f"{_where(label, target)}: its folder"
    _make_folder(target.parent, where)
    _probe_writable(target.parent, where)
    return target.resolve()
