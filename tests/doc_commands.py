"""The commands and Python examples of the README and docs/: extraction, static checks, chaining.

Used by tests/test_readme.py (which also runs the README's quickstart) and tests/test_docs.py.
A documented command is checked against the real CLI: every ``--flag`` must be an option of that
command (its ``--help`` lists it), every ``key=value`` override of ``train`` / ``refiner train``
must be a key of that command's config tree, and a config file the command names, with the
overrides, must load and pass its checks. ``chain_problems`` checks that each step reads what an
earlier step wrote.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDERS = {"...", "key=value"}  # "[key=value ...]": the documented way of saying "overrides here"


def section(text: str, heading: str) -> str:
    """The text of the ``## `` section whose heading starts with ``heading`` (to the next ``## ``)."""
    m = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"no section '## {heading}...'"
    return m.group(1)


def fenced(text: str, langs: tuple[str, ...] = ("bash", "")) -> list[str]:
    """Bodies of the fenced code blocks whose language is one of ``langs`` (``""``: none given)."""
    return [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M) if lang in langs]


def shell_lines(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment-only and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def inline_commands(text: str) -> list[str]:
    """``sumseg ...`` commands written inline in prose (single backticks)."""
    return re.findall(r"(?<!`)`(sumseg [^`]+)`(?!`)", text)


def doc_commands(text: str) -> list[str]:
    """Every ``sumseg`` command of a page: its shell blocks' lines and its inline commands."""
    lines = [ln for block in fenced(text) for ln in shell_lines(block)]
    return [ln for ln in lines if sumseg_args(ln) is not None] + inline_commands(text)


def sumseg_args(line: str) -> list[str] | None:
    """The arguments after ``sumseg`` (plain, ``.venv/bin/sumseg``, ``python -m sumseg`` or under
    ``torchrun ... -m sumseg``) with leading ``VAR=value`` assignments dropped; None if not sumseg."""
    tokens = shlex.split(line, comments=True)
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
        tokens = tokens[1:]
    if tokens and tokens[0] == "$":
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] == "sumseg" or tokens[0].endswith("/sumseg"):
        return tokens[1:]
    if "-m" in tokens and tokens[tokens.index("-m") + 1 : tokens.index("-m") + 2] == ["sumseg"]:
        return tokens[tokens.index("-m") + 2 :]
    return None


@dataclass
class Command:
    """One documented ``sumseg`` command, parsed against the real CLI."""

    line: str
    path: tuple[str, ...]  # ("refiner", "train")
    options: dict[str, str | bool] = field(default_factory=dict)  # "--out" -> "runs/x"; flags -> True
    args: list[str] = field(default_factory=list)  # positionals (train: key=value overrides)

    def opt(self, name: str) -> str | None:
        value = self.options.get(name)
        return value if isinstance(value, str) else None


def _cli() -> Any:
    import typer.main

    from sumseg.cli import app

    return typer.main.get_command(app)


def _unbracket(tokens: list[str]) -> list[str]:
    """Drop the brackets of optional parts (``[--show 20]``, ``[key=value ...]``), not of values (``[a, b]``)."""
    out, inside = [], False
    for t in tokens:
        if t.startswith("[") and (t[1:].startswith("-") or t[1:].rstrip("]") in PLACEHOLDERS):
            t, inside = t[1:], True
        if inside and t.endswith("]"):
            t, inside = t[:-1], False
        out.append(t)
    return out


def parse(line: str) -> Command:
    """``line`` as a :class:`Command`; AssertionError naming the line when the CLI has no such
    command or option. Optional parts written ``[--flag value]`` are checked as if given."""
    tokens = sumseg_args(line)
    assert tokens is not None, f"not a sumseg command: {line}"
    tokens = [t for t in _unbracket(tokens) if t not in PLACEHOLDERS]
    cmd, path = _cli(), []
    while tokens and tokens[0] in getattr(cmd, "commands", {}):
        cmd = cmd.commands[tokens[0]]
        path.append(tokens.pop(0))
    assert not hasattr(cmd, "commands"), f"{line}: `sumseg {' '.join(path)}` needs a subcommand"
    out = Command(line, tuple(path))
    known = {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help": None}
    while tokens:
        tok = tokens.pop(0)
        if not tok.startswith("--"):
            out.args.append(tok)
            continue
        name, eq, value = tok.partition("=")
        assert name in known, f"{line}: `sumseg {' '.join(path)}` has no option {name} (see its --help)"
        param = known[name]
        if param is None or getattr(param, "is_flag", False):
            out.options[name] = name not in getattr(param, "secondary_opts", ())
        else:
            assert eq or tokens, f"{line}: {name} needs a value"
            out.options[name] = value if eq else tokens.pop(0)
    return out


def _schema(path: tuple[str, ...]) -> type | None:
    if path == ("train",):
        from sumseg.config import TrainConfig

        return TrainConfig
    if path == ("refiner", "train"):
        from sumseg.config import RefinerConfig

        return RefinerConfig
    return None


def is_config_key(schema: type, key: str) -> bool:
    """``key`` (``optim.lr``, ``data.labelled``) names a field of the dataclass tree ``schema``."""
    node: Any = schema
    for part in key.split("."):
        if not (dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}):
            return False
        node = typing.get_type_hints(node)[part]
        if typing.get_origin(node) in (typing.Union, types.UnionType):
            node = next(a for a in typing.get_args(node) if a is not type(None))
    return True


def load_command_config(cmd: Command, root: Path = REPO) -> Any:
    """The config of a ``train`` / ``refiner train`` command, loaded and checked as the command would
    (its ``--config`` file relative to ``root``, then its overrides); None when it names no file that
    exists (then only the override keys are checked). AssertionError naming the line otherwise."""
    schema = _schema(cmd.path)
    if schema is None:
        return None
    for arg in cmd.args:
        key, eq, _ = arg.partition("=")
        assert eq and is_config_key(schema, key), f"{cmd.line}: {arg!r} is not a key=value of a real config key"
    config = cmd.opt("--config")
    if config is None or not (root / config).is_file():
        return None
    from sumseg.config import load_config, load_refiner_config
    from sumseg.errors import ConfigError

    load = load_config if cmd.path == ("train",) else load_refiner_config
    try:
        return load(root / config, cmd.args)
    except ConfigError as e:
        raise AssertionError(f"{cmd.line}: the config does not load: {e}") from None


def _norm(p: str) -> str:
    return os.path.normpath(p)


def reads_writes(cmd: Command, root: Path = REPO) -> tuple[list[str], list[str]]:
    """The paths a command reads and writes (store annotations as ``<store>#U``)."""
    o = cmd.opt
    if cmd.path == ("data", "synth"):
        return [], [o("--out") or ""]
    if cmd.path == ("pseudo-label",):
        return [o("--images") or ""] + ([o("--checkpoint") or ""] if o("--checkpoint") else []), [o("--out") or ""]
    if cmd.path == ("uncertainty",):
        store = o("--pseudo-labels") or ""
        return [store, o("--refiner") or ""], [f"{_norm(store)}#U"]
    if cmd.path in (("train",), ("refiner", "train")):
        cfg = load_command_config(cmd, root)
        assert cfg is not None, f"{cmd.line}: its config file is not in the repository"
        labelled = [s if isinstance(s, str) else s.path for s in cfg.data.labelled]
        reads = labelled + ([cfg.model.checkpoint] if cfg.model.checkpoint else [])
        if cmd.path == ("train",) and cfg.data.pseudo_labels and cfg.data.ratio[1] > 0:
            needs_u = cfg.method.value in ("sum", "sum_no_task")
            reads.append(f"{_norm(cfg.data.pseudo_labels)}#U" if needs_u else cfg.data.pseudo_labels)
        if cmd.path == ("train",) and cfg.method.value == "refined_labels":
            reads.append(cfg.data.refiner)
        return reads, [str(Path(cfg.run.out) / "last.ckpt")]
    if cmd.path in (("eval",), ("export",)):
        reads = [o("--checkpoint") or ""]
        if cmd.path == ("eval",):
            reads += [d for d in (o("--datasets") or "").split(",") if "/" in d]  # names: --benchmarks-dir
        return reads, [o("--out") or ""]
    return [], []


def chain_problems(commands: list[Command], external: set[str] = frozenset(), root: Path = REPO) -> list[str]:
    """Each path a command reads must be written by an earlier command (or lie inside what one
    wrote), or be one of the ``external`` inputs (the user's own files). One message per gap."""
    written: list[str] = []
    problems = []
    ext = {_norm(e) for e in external}
    for cmd in commands:
        reads, writes = reads_writes(cmd, root)
        for r in map(_norm, reads):
            inside = any(r == w or r.startswith(w.rstrip("/") + "/") for w in written)
            if not inside and r not in ext:
                problems.append(f"{cmd.line}: reads {r}, which no earlier step writes")
        written += [_norm(w) for w in writes]
    return problems
