"""The one value checker of every command's settings: config trees (``sumseg train``, ``sumseg refiner
train``) and command-line flags (``sumseg pseudo-label``, ``sumseg uncertainty``, ``sumseg demo``).

Each problem is collected with its key (a config key's path such as ``optim.lr``, or a flag such as
``--points-per-side``) leading its message; :meth:`Checker.raise_if_any` reports them all in one
:class:`~sumseg.errors.ConfigError`. Plain Python: no room of the package is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sumseg.config_io import load_with_flags
from sumseg.errors import ConfigError

T = TypeVar("T")


class Checker:
    """Value checks of a config tree or a command's flags: every problem is collected, its key (path or
    flag) leading its message, and reported at once by :meth:`raise_if_any`."""

    def __init__(self) -> None:
        self.errors: list[tuple[tuple[str, ...], str]] = []  # (keys involved, the first one's; message)

    def number(self, key: str, value: float, lo: float, hi: float, lo_open: bool = False,
               hi_open: bool = False) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            self.errors.append(((key,), f"{key} must be a finite number, got {value}"))
            return
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            self.errors.append(((key,), f"{key} must lie in {span}, got {value}"))

    def at_most(self, key: str, value: float, lo: float, bound_key: str, bound: float) -> None:
        """``lo <= value <= bound``, where ``bound`` is the value of another key (the message names both)."""
        if not lo <= value <= bound:
            self.errors.append(((key, bound_key), f"{key} must lie in [{lo:g}, {bound_key}], got {value} "
                                                  f"with {bound_key} = {bound}"))

    def require(self, key: str, ok: bool, message: str) -> None:
        if not ok:
            self.errors.append(((key,), f"{key} {message}"))

    def add(self, problems: Sequence[tuple[str, str]]) -> None:
        """Problems found elsewhere, as (key, message) pairs."""
        self.errors += [((key,), message) for key, message in problems]

    def raise_if_any(self, origin: Callable[[str], str | None] = lambda key: None) -> None:
        """One ConfigError listing every problem, each led by the file or override that set its key;
        a problem between two keys set in different places names both places."""
        if self.errors:
            raise ConfigError("; ".join(_placed(keys, m, origin) for keys, m in self.errors))


def _placed(keys: tuple[str, ...], message: str, origin: Callable[[str], str | None]) -> str:
    """``"<source>: <message>"`` when one source set every key involved (or none did: the defaults);
    else ``"<message> (<key> from <source>, ...)"`` naming each key's source."""
    sources = [origin(k) for k in keys]
    if len(set(sources)) == 1:
        return f"{sources[0]}: {message}" if sources[0] else message
    where = [f"{k} from {s or 'the defaults'}" for k, s in zip(keys, sources, strict=True)]
    return f"{message} ({', '.join(where)})"


def refuse_bad(check: Callable[[Checker], None]) -> None:
    """Run ``check`` on a fresh :class:`Checker` and raise its one ConfigError if it found anything
    (how a command's flags and a library entry point's arguments are checked before any work)."""
    c = Checker()
    check(c)
    c.raise_if_any()


def load_checked(schema: type[T], check: Callable[[T, Any, Callable[[str], str]], None], path: str | Path | None,
                 flags: Mapping[str, tuple[str, Any]]) -> T:
    """:func:`~sumseg.config_io.load_with_flags`, then ``check(section, checker, name)`` with one
    :class:`Checker`: one ConfigError lists every problem, each led by its flag, or by
    its key and the file that set it."""
    cfg, name, origin = load_with_flags(schema, path, flags)
    c = Checker()
    check(cfg, c, name)
    c.raise_if_any(origin)
    return cfg
