"""The package's layout rules (docs/architecture.md): imports run one way through the rooms, no
module over 400 lines, no function over 60 lines, the config tree imports no room.

Read from the source with ``ast`` (imports inside functions count too), so the rules hold for
every import, not only for the ones a test happens to execute.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sumseg"

# The flow, earliest first. A module may import its own room and any room of an EARLIER tier; the base
# modules (tier 0) may import each other, and so may the entry points (last tier).
TIERS: tuple[tuple[str, ...], ...] = (
    ("errors", "lazy", "tasks", "atomic", "checks", "outputs", "tensor_files", "version", "model_names",
     "config_io", "config"),
    ("data",),
    ("metrics",),
    ("prompts",),
    ("models",),
    ("losses",),
    ("pipeline",),
    ("train",),
    ("evaluate",),
    ("demo",),
    ("cli", "cli_pipeline", "__main__", "__init__"),
)
BASE = TIERS[0]
ENTRY = TIERS[-1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _room(module: str) -> str:
    """``sumseg.train.loop`` → ``train``; ``sumseg.errors`` → ``errors``; ``sumseg`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _tier(room: str) -> int:
    return next(i for i, rooms in enumerate(TIERS) if room in rooms)


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(module: str, tree: ast.Module, is_package: bool) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sumseg")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                name = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("sumseg"):
                found.add(name)
    return found


def import_violations() -> list[str]:
    """Every import against the flow, as ``"a imports b (room x after room y)"``."""
    bad = []
    for module, tree in _modules().items():
        is_package = (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()
        src = _room(module)
        for target in sorted(_imports(module, tree, is_package)):
            dst = _room(target)
            if dst == src or (src in BASE and dst in BASE) or (src in ENTRY and dst in ENTRY):
                continue
            if _tier(dst) >= _tier(src):
                bad.append(f"{module} imports {target} (room {dst} is not before room {src})")
    return bad


def test_the_tier_table_names_every_room() -> None:
    rooms = {_room(m) for m in _modules()}
    assert rooms <= {r for tier in TIERS for r in tier}, rooms - {r for tier in TIERS for r in tier}


def test_imports_run_one_way_through_the_rooms() -> None:
    assert import_violations() == []


def test_the_checker_sees_an_import_against_the_flow(tmp_path: Path) -> None:
    tree = ast.parse("def f():\n    from sumseg.train.loop import run_loop\n")
    assert _imports("sumseg.models.x", tree, False) == {"sumseg.train.loop"}
    assert _tier(_room("sumseg.train.loop")) > _tier(_room("sumseg.models.x"))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path}: {len(text.splitlines())} lines"
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno is not None
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"{path}: functions over {MAX_FUNCTION_LINES} lines: {long}"
