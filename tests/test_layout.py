"""The package is laid out in the order data flows: a stage folder never imports a later stage's
folder, shared engines import no stage, and no module grows past about 500 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "datagen"
#: Stage folders in flow order; `cli` sits on top of everything.
STAGES = [
    "seeds",
    "generate",
    "filters",
    "check",
    "review",
    "preference",
    "finetune",
    "publish",
    "run",
    "cli",
]
#: Modules over the limit, each with the reason it may stay so for now (empty it as you split them).
LONG_OK: dict[str, str] = {
    "formats/moss.py": "its owner splits render from parse",
    "formats/reader.py": "its owner splits format detection from the streaming readers",
    "review/index.py": "its owner splits building the index from querying it",
    "teacher/engine.py": "its owner moves the run_requests glue out",
    # under 520 lines until `ruff format` wrapped their long calls one argument a line: split next
    "model/loading.py": "split source resolution (paths, aliases, GGUF) from loading",
    "publish/build.py": "split the shard writer and build.json from the folder build",
    "publish/card.py": "split the sections (sampling, stats, limitations) from the assembly",
    "teacher/batch.py": "split the round driver's polling from the engine interface",
    "teacher/journal.py": "split the batch tables and schema upgrades from the calls table",
}
#: Known arrows against the flow, each with the package that removes it (empty at the end).
ALLOWED: dict[tuple[str, str], str] = {}
MAX_LINES = 520
_DOTTED = re.compile(r"^datagen(\.[a-z_][a-z0-9_]*)+$")


def _layer(module: str) -> int:
    """-1 for shared code (errors, record, io, stage, funnel, text, formats, teacher, tools, model),
    else the stage's position in the flow."""
    parts = module.split(".")
    if parts[-1] == "__main__":  # `python -m datagen[.review]`: entry points sit with the CLI
        return STAGES.index("cli")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else -1


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            if node.module and node.module.startswith("datagen"):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("datagen")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.match(node.value):
            out.append((node.lineno, node.value))  # importlib.import_module("datagen.x"), registries
    return out


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_of_a_later_stage(path):
    module = ".".join(("datagen", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    mine = _layer(module)
    for line, imported in _imports(path):
        theirs = _layer(imported)
        if (module, imported) in ALLOWED:
            continue
        if mine == -1:
            assert theirs == -1, f"{path}:{line}: shared code imports the stage module {imported}"
        else:
            assert theirs <= mine, f"{path}:{line}: {module} imports {imported}, a later stage"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path):
    rel = str(path.relative_to(ROOT))
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES or rel in LONG_OK, f"{rel}: {n} lines; split it (see ARCHITECTURE.md)"
