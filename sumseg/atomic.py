"""Atomic file writes: write a temporary file beside the target, fsync, then ``os.replace``.

A reader never sees a half-written file, and a crash leaves the previous version intact. A write
that fails (disk full, file too large, no permission, NaN in a JSON document) removes its temporary
file and raises :class:`sumseg.errors.WriteError` naming the target and the cause (:func:`writing`).

Every JSON text sumseg writes (files, and the JSON strings inside safetensors metadata) is made by
:func:`json_text` (:func:`write_json` for a whole file): strict JSON only; a NaN or infinity is a
WriteError naming the file and the key path of the value, raised before anything is written. A value
that can legitimately be undefined (a mean over no instances) is written as ``null`` by its caller.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sumseg.errors import WRITE_ERRNOS, SumsegError, WriteError, write_cause

LOW_SPACE = 1 << 20
"""Free bytes below which a failed write is blamed on a full disk."""
_LIBRARY_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter", "I/O error", "requested and")
"""Text of the write failures of libraries that lose the OS error (torch.save, safetensors, numpy)."""
_NON_FINITE = "it would hold a non-finite number (NaN or infinity), which JSON does not allow"


def _largest(partial: Path | None) -> int:
    """Size of the file ``partial`` or of the largest file under the folder ``partial`` (0: none)."""
    if partial is None:
        return 0
    files = [partial] if partial.is_file() else [f for f in partial.rglob("*") if f.is_file()]
    return max((f.stat().st_size for f in files), default=0)


def _cause(exc: BaseException, folder: Path, partial: Path | None) -> str | None:
    """Why a write failed, in words, or None when ``exc`` is no write failure."""
    if isinstance(exc, ValueError) and "JSON compliant" in str(exc):
        return _NON_FINITE
    cause = write_cause(exc)
    if cause is not None:
        return cause
    library = isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "SafetensorError"
    if not library or not any(t in str(exc) for t in _LIBRARY_WRITE_FAILURES):
        return None
    import re
    import resource

    code = re.search(r"os error (\d+)", str(exc))  # safetensors (Rust) keeps the OS error as text
    if code and int(code[1]) in WRITE_ERRNOS:
        return os.strerror(int(code[1]))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and _largest(partial) >= limit:
        return f"File too large: the process's file-size limit is {limit} bytes"
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < LOW_SPACE:
        return f"No space left on device: {st.f_bavail * st.f_frsize} bytes free"
    return f"write failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def write_failure(exc: BaseException, target: Path, partial: Path | None = None) -> WriteError | None:
    """A :class:`WriteError` naming ``target`` when ``exc`` is a failed write of it (``partial``: the file
    being written, if any), else None. Knows OS errors, the JSON encoder's NaN refusal and the write
    failures of torch.save, safetensors and numpy, which do not keep the OS error."""
    if isinstance(exc, SumsegError):
        return None
    cause = _cause(exc, target.parent, partial)
    return None if cause is None else WriteError(f"{target}: cannot write it ({cause})")


def _non_finite(obj: object, where: str = "") -> tuple[str, float] | None:
    """(key path, value) of the first NaN or infinity in a JSON-like ``obj`` (``a.b[3]``), None if none."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "(the document)", obj)
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None


def json_text(obj: object, target: str | os.PathLike, **dumps: object) -> str:
    """``json.dumps(obj, allow_nan=False, **dumps)``; a NaN or infinity raises :class:`WriteError`
    ``<target>: cannot write it (it would hold a non-finite number (NaN or infinity), which JSON does
    not allow: nan at 'a.b[3]')`` (``target``: the file the text goes into)."""
    try:
        return json.dumps(obj, allow_nan=False, **dumps)  # type: ignore[arg-type]
    except ValueError as e:
        if "JSON compliant" not in str(e):
            raise
        found = _non_finite(obj)  # walked only on failure: the documents can be large
        at = f": {found[1]} at {found[0]!r}" if found else ""
        raise WriteError(f"{target}: cannot write it ({_NON_FINITE}{at})") from None


def write_json(target: str | os.PathLike, obj: object, **dumps: object) -> None:
    """Write ``obj`` as strict JSON to ``target`` atomically (:func:`json_text`, then :func:`atomic_path`):
    on any failure nothing is written and an earlier version of ``target`` stays."""
    text = json_text(obj, target, **dumps)
    with atomic_path(target) as tmp:
        tmp.write_text(text)


@contextmanager
def writing(target: str | os.PathLike, partial: str | os.PathLike | None = None) -> Iterator[None]:
    """Translate a failed write of ``target`` inside the block into a :class:`WriteError` naming it."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only write failures are translated, the rest re-raised
        err = write_failure(e, Path(target), None if partial is None else Path(partial))
        if err is None:
            raise
        raise err from e


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target``.

    The caller writes the whole file to the yielded path (with any library's writer). On an
    exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(target, tmp_path):
            yield tmp_path
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp (and some writers) make 0600: use a plain open()'s mode
            os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` (a folder or nothing).

    The caller writes every file of the folder into the yielded one; each is fsynced, then the folder is
    renamed onto ``target`` (atomic when ``target`` is absent or empty; a non-empty ``target`` is first
    renamed aside and removed after, so a reader sees the old folder, the new one, or for an instant
    none, never a mix). On an exception the temporary folder is removed and ``target`` is left untouched.
    """
    import shutil

    target = Path(target)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = tmp.with_suffix(".old")
    try:
        with writing(target, tmp):
            yield tmp
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700: use a plain mkdir's mode
        moved = target.is_dir() and any(target.iterdir())
        if moved:
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if moved:  # put the old folder back
                os.replace(old, target)
            raise
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
