"""Exception types. Every error names the file (or object) and what is wrong with it."""

from __future__ import annotations

import errno
import os


class SumsegError(Exception):
    """Base class of every error sumseg raises on purpose."""


class CheckpointError(SumsegError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


class DataError(SumsegError):
    """An input file (image, mask, annotation JSON) is unreadable or malformed."""


class ConfigError(SumsegError):
    """A configuration value or command-line argument is invalid."""


class TrainingError(SumsegError):
    """Training cannot go on (non-finite loss, a run folder that cannot be resumed)."""


class WriteError(SumsegError):
    """An output file cannot be written (disk full, file too large, no permission, read-only file system)."""


WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EFBIG", "EDQUOT", "EACCES", "EPERM", "EROFS", "EIO")
                         if hasattr(errno, n))
"""The OS errors of writing (and of creating a file or folder) that :func:`os_error` translates."""


def write_cause(exc: BaseException) -> str | None:
    """The system's words for an OS write error (``File too large``), None for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS:
        return None
    return exc.strerror or os.strerror(exc.errno or 0)


def os_error(exc: BaseException, path: object = None) -> WriteError | None:
    """A :class:`WriteError` for an OS write error (:data:`WRITE_ERRNOS`), naming ``path`` (else the
    error's own file name) and the cause, e.g. ``out/meta.json: cannot write it (File too large)``;
    None for any other exception. The one translation of write errors: the atomic writers and the
    CLI's command runner both use it."""
    cause = write_cause(exc)
    if cause is None:
        return None
    where = path if path is not None else getattr(exc, "filename", None)
    if where is None:
        return WriteError(f"cannot write a file ({cause}); the file was not named by the system")
    return WriteError(f"{where}: cannot write it ({cause})")


def cli_error(exc: BaseException) -> SumsegError | None:
    """What the CLI reports as one ``error:`` line: a :class:`SumsegError`, or a translated OS write error."""
    return exc if isinstance(exc, SumsegError) else os_error(exc)
