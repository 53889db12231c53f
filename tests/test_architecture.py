"""docs/architecture.md held against the code: its layer table is the check.

Every module of src/xlpo sits in exactly one layer of the table; no import (lazy ones inside
functions included) points to a higher layer; there is no import cycle; and an import inside a
function outside cli/ is one of the third-party modules the doc's rule names.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
SRC = REPO / "src" / "xlpo"


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    assert f"## {title}" in text, f"{DOC}: no section '## {title}'"
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def layer_table() -> list[tuple[str, list[str]]]:
    """(layer, entries) bottom up: each entry a path under src/xlpo/, a folder when it ends in '/'."""
    rows = [line for line in _section("Layers, bottom up").splitlines()
            if line.startswith("|") and not set(line) <= set("|-: ")]
    table = []
    for row in rows[1:]:  # rows[0] is the header
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        table.append((cells[0], [e for e in re.findall(r"`([^`]+)`", cells[1]) if e.endswith((".py", "/"))]))
    return table


def lazy_allowed() -> tuple[set[str], set[tuple[str, str]]]:
    """The third-party modules the doc's rule lets a function import: anywhere (a backticked name), or in one
    file only (`path.py: name`)."""
    rule = [line for line in _section("Rules that keep it this way").split("\n- ") if line.startswith("Imports inside")]
    assert len(rule) == 1, "docs/architecture.md: expected one rule starting 'Imports inside functions'"
    anywhere = set(re.findall(r"`([A-Za-z_][\w.]*)`", rule[0])) - {"cli/"}
    in_file = set(re.findall(r"`([\w/]+\.py): ([A-Za-z_][\w.]*)`", rule[0]))
    return anywhere - {name for _, name in in_file}, in_file


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]):
    """(module imported, line, inside a function) for every import of `path`; xlpo modules resolved to a
    known module (`from xlpo.bench import lc_winrate` is xlpo.bench.lc_winrate), others as written."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target == "xlpo" or target.startswith("xlpo."):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
            yield target, node.lineno, id(node) in nested


def layer_of(path: Path, table) -> tuple[int, str] | None:
    rel = path.relative_to(SRC).as_posix()
    found = [(len(entry), i) for i, (_, entries) in enumerate(table) for entry in entries
             if rel == entry or (entry.endswith("/") and rel.startswith(entry))]
    return None if not found else (max(found)[1], table[max(found)[1]][0])


def test_every_module_sits_in_one_layer_and_every_named_file_exists():
    table = layer_table()
    assert len(table) >= 10, f"{DOC}: the layer table was not found whole ({[name for name, _ in table]})"
    entries = [entry for _, row in table for entry in row]
    assert len(entries) == len(set(entries)), f"named in two layers: {sorted({e for e in entries if entries.count(e) > 1})}"
    missing = [e for e in entries if e.endswith(".py") and not (SRC / e).is_file()]
    assert missing == [], f"{DOC} names files that do not exist (moved? update the table): {missing}"
    unplaced = sorted(str(p.relative_to(SRC)) for p in modules().values() if layer_of(p, table) is None)
    assert unplaced == [], f"modules in no layer of {DOC} (add them to the table): {unplaced}"


def test_no_import_points_up():
    table, known = layer_table(), modules()
    upward = []
    for name, path in known.items():
        mine = layer_of(path, table)
        for target, line, _ in imports(name, path, known):
            theirs = layer_of(known[target], table) if target in known else None
            if mine and theirs and theirs[0] > mine[0]:
                upward.append(f"{path.relative_to(SRC)}:{line} ({mine[1]}) imports {target} ({theirs[1]})")
    assert upward == [], "imports that point up the layers of docs/architecture.md:\n" + "\n".join(upward)


def test_no_import_cycle():
    known = modules()
    graph = {name: {t for t, _, _ in imports(name, path, known) if t in known and t != name}
             for name, path in known.items()}
    # A package's own __init__ is imported by every submodule: only a package importing its own submodules
    # at the top would close a loop, which the walk below finds like any other.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_imports_inside_functions_follow_the_documented_rule():
    """Lazy imports live in cli/ or are of a third-party module the rule names (optional, or seconds to import)."""
    (anywhere, in_file), known = lazy_allowed(), modules()
    stdlib = set(sys.stdlib_module_names)
    found = []
    for name, path in known.items():
        if name.startswith("xlpo.cli"):
            continue
        rel = path.relative_to(SRC).as_posix()
        for target, line, inside in imports(name, path, known):
            root = target.split(".")[0]
            if inside and root not in ("xlpo", *stdlib) and root not in anywhere and (rel, root) not in in_file:
                found.append(f"{path.relative_to(SRC)}:{line}: {target}")
    assert found == [], ("imports inside functions of modules the rule in docs/architecture.md does not name "
                         "(import them at the top, or name them in the rule with the reason):\n" + "\n".join(found))
