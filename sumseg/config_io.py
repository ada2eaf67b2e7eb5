"""Reading a dataclass config tree: YAML file, then ``key=value`` overrides, through OmegaConf.

Used by ``sumseg train`` (:mod:`sumseg.config`) and any command with a config tree. Every error is
a :class:`~sumseg.errors.ConfigError` that names the key's full path (``data.labelled[0].task``)
and where the bad value came from (the YAML file or the override). The raw tree of each source is
checked against the schema's shape before OmegaConf sees it (unknown keys; a section or list
where a single value belongs, or the reverse), because OmegaConf raises bare ``ValueError`` /
``TypeError`` for some of those and accepts others (a list inside a ``list[int]``).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sumseg.errors import ConfigError

T = TypeVar("T")
_MERGE_ERRORS = (OmegaConfBaseException, ValueError, TypeError)


def _kind(value: Any) -> str:
    return "a section" if isinstance(value, Mapping) else "a list" if isinstance(value, list) else repr(value)


def _problems(raw: Any, cls: type, path: str) -> list[str]:
    """Shape problems of a plain tree against the dataclass ``cls`` (message per problem, key path first)."""
    if not isinstance(raw, Mapping):
        return [f"{path or 'the config'} must be a section of keys, got {_kind(raw)}"]
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    out = []
    for key, value in raw.items():
        sub = f"{path}.{key}" if path else str(key)
        out += _value_problems(value, hints[key], sub) if key in names else [f"unknown key {sub}"]
    return out


def _value_problems(value: Any, kind: Any, path: str) -> list[str]:
    if value == MISSING:  # "???": to be given later (an override); left for to_object to report if it never is
        return []
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(kind):
            return []
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    if dataclasses.is_dataclass(kind):
        return _problems(value, kind, path)  # type: ignore[arg-type]
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            return [f"{path} must be a list, got {_kind(value)}"]
        (item,) = typing.get_args(kind)
        return [p for i, v in enumerate(value) for p in _value_problems(v, item, f"{path}[{i}]")]
    if isinstance(value, Mapping | list):
        return [f"{path} must be a single value, got {_kind(value)}"]
    return []


def _item_key(raw: Any, cls: type, path: str) -> str | None:
    """Full path of the first bad value inside a list of sections (OmegaConf reports only its tail)."""
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        kind, sub = hints[key], f"{path}.{key}" if path else str(key)
        if dataclasses.is_dataclass(kind):
            found = _item_key(value, kind, sub)  # type: ignore[arg-type]
            if found:
                return found
        elif typing.get_origin(kind) is list and dataclasses.is_dataclass(typing.get_args(kind)[0]):
            for i, v in enumerate(value):
                try:
                    OmegaConf.merge(OmegaConf.structured(typing.get_args(kind)[0]), v)
                except _MERGE_ERRORS as e:
                    return f"{sub}[{i}].{getattr(e, 'full_key', '') or '?'}"
    return None


def _merge(base: Any, raw: Any, origin: str, schema: type, moved: Mapping[str, str]) -> Any:
    problems = [f"{p[len('unknown key '):]} is now {moved[p[len('unknown key '):]]}: rename it"
                if p.startswith("unknown key ") and p[len("unknown key "):] in moved else p
                for p in _problems(raw, schema, "")]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{origin}: {problems[0]}{more}")
    try:
        return OmegaConf.merge(base, raw)
    except _MERGE_ERRORS as e:
        key = _item_key(raw, schema, "") or getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{origin}: {key}: {str(e).splitlines()[0]}") from None


def _parse_override(text: str) -> dict[str, Any]:
    """``a.b=value`` → ``{"a": {"b": value}}``, the value parsed as YAML (``[1, 2]``, ``null``, ``1e-4``)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=1e-4")
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))
    except (*_MERGE_ERRORS, yaml.YAMLError) as e:
        raise ConfigError(f"override {text!r}: unreadable value: {str(e).splitlines()[0]}") from None
    assert isinstance(parsed, dict)
    tree: dict[str, Any] = {}
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = parsed["v"]
    return tree


def _placeholders(tree: Any, path: str = "") -> list[str]:
    """Key paths whose value is ``???`` in a plain tree."""
    if not isinstance(tree, Mapping):
        return []
    out = []
    for key, value in tree.items():
        sub = f"{path}.{key}" if path else str(key)
        out += [sub] if value == MISSING else _placeholders(value, sub)
    return out


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not readable YAML: {e}") from None
    return {} if raw is None else raw


@dataclasses.dataclass
class Sources:
    """Which source (file or override) set which keys: ``origin(key)`` names the last one."""

    trees: list[tuple[str, Any]] = dataclasses.field(default_factory=list)

    def origin(self, key: str) -> str | None:
        """The last source whose tree holds ``key`` (``optim.lr``, ``data.labelled[0].task``), or None."""
        steps = [int(t[1:-1]) if t.startswith("[") else t for t in re.findall(r"\[\d+\]|[^.\[\]]+", key)]
        for name, tree in reversed(self.trees):
            node = tree
            for step in steps:
                held = step in node if isinstance(node, Mapping) else (
                    isinstance(node, list) and isinstance(step, int) and step < len(node))
                if not held:
                    break
                node = node[step]
            else:
                return name
        return None


def load_structured(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                    moved: Mapping[str, str] | None = None,
                    trees: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> tuple[T, Sources]:
    """An instance of the dataclass ``schema``: its defaults, then the YAML ``path`` (if any), then the
    ``key=value`` overrides in order, then the plain ``trees`` (``(source name, tree)``: a command's
    flags); and the :class:`Sources` of its keys. Shapes and types are checked (ConfigError naming
    the key and the source; a key of ``moved`` names its new key); value ranges are the caller's."""
    cfg = OmegaConf.structured(schema)
    sources = Sources()
    named = [(str(path), _read_yaml(Path(path)))] if path is not None else []
    named += [(f"override {t!r}", _parse_override(t)) for t in overrides]
    named += [(name, dict(tree)) for name, tree in trees]
    for name, tree in named:
        cfg = _merge(cfg, tree, name, schema, moved or {})
        sources.trees.append((name, tree))
    # "???" marks a value the user must give; OmegaConf's merge would keep the default instead (None)
    unset = [(name, key) for name, tree in named for key in _placeholders(tree) if sources.origin(key) == name]
    if unset:
        raise ConfigError("; ".join(f"{name}: {key} is ??? (a value to give): set it there or add {key}=..."
                                    for name, key in unset))
    try:
        out = OmegaConf.to_object(cfg)
    except _MERGE_ERRORS as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{key}: {str(e).splitlines()[0]} (set it in the config file or as {key}=...)") from None
    assert isinstance(out, schema)
    return out, sources


def load_with_flags(schema: type[T], path: str | Path | None, flags: Mapping[str, tuple[str, Any]]
                    ) -> tuple[T, Callable[[str], str], Callable[[str], str | None]]:
    """A command's section: the YAML ``path`` (if any), then the flags given on the command line
    (``flags``: key path → (flag, value)), each flag a source of its own. Returns the section,
    ``name(key)`` (the flag that set the key, else the key: what a problem is named by) and
    ``origin(key)`` (the file that set a key; None for a flag, whose name already says where)."""
    trees = []
    for key, (flag, value) in flags.items():
        *parents, last = key.split(".")
        tree: dict[str, Any] = {last: value}
        for p in reversed(parents):
            tree = {p: tree}
        trees.append((flag, tree))
    cfg, sources = load_structured(schema, path, trees=trees)
    flag_of = {key: flag for key, (flag, _) in flags.items()}
    return cfg, lambda key: flag_of.get(key, key), lambda key: None if key.startswith("--") else sources.origin(key)


def through_schema(cfg: T) -> T:
    """A config dataclass built in Python, typed as a loaded one is: its values through the same
    OmegaConf schema (a wrong type refused naming the key; an int in a float field made a float), so
    that it equals the tree :func:`load_structured` makes from the same values as overrides."""
    try:
        out = OmegaConf.to_object(OmegaConf.structured(cfg))
    except _MERGE_ERRORS as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None
    assert isinstance(out, type(cfg))
    return out


def to_plain(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain data (enums as their values)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Enum):
            return v.value
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, list | tuple) else v

    return plain(dataclasses.asdict(cfg))

