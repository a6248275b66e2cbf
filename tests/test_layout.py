"""The package's layout rules, checked on the installed ``svcjax`` (whatever ``import svcjax``
finds), by reading its source with :mod:`ast` (nothing is imported):

* no import cycle between svcjax modules, counting every import statement (module level and
  inside functions) and ``importlib.import_module("svcjax...")`` calls with a literal name;
  a lazy registry entry (a ``"module:Class"`` string resolved when used) is not an import;
* no module uses another module's private (``_name``) names, neither imported
  (``from svcjax.x import _name``) nor reached through an imported module (``x._name``);
* ``import svcjax`` (and ``import svcjax.cli``, what ``svcjax --help`` runs) imports none of
  the heavy libraries and takes well under a second.

The checkers are plain functions of a source folder, so they can be pointed at any tree:

    python -c "from tests.test_layout import *; print(import_cycles('PATH/svcjax'))"
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import svcjax

PACKAGE_DIR = Path(svcjax.__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# Reading the package
# ---------------------------------------------------------------------------------------------

def package_modules(root) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file under the package folder ``root``
    (``svcjax/train/loop.py`` -> ``svcjax.train.loop``; an ``__init__.py`` is its package)."""
    root = Path(root).resolve()
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    path = modules.get(name)
    return (path is not None and path.name == "__init__.py") or any(
        m.startswith(name + ".") for m in modules)


def _absolute(module: str, level: int, name: str | None, modules) -> str:
    """The absolute name of a (possibly relative) ``from`` import's module."""
    if not level:
        return name or ""
    base = module.split(".")
    if not _is_package(module, modules):
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(module: str, tree: ast.AST, modules: dict[str, Path], top: str):
    """Yield ``(line, target module, imported name or None)`` for each import of a module of
    the package ``top`` in ``tree``: every ``import`` / ``from`` statement wherever it is, and
    ``importlib.import_module("<literal>")``. ``from pkg import name`` targets ``pkg.name``
    when that is a module of the package, else ``pkg`` (with ``name`` as the imported name)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == top or alias.name.startswith(top + "."):
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.level, node.module, modules)
            if not (base == top or base.startswith(top + ".")):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    yield node.lineno, sub, None
                else:
                    yield node.lineno, base, alias.name
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if (name == "import_module" and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                target = node.args[0].value
                if target == top or target.startswith(top + "."):
                    yield node.lineno, target, None


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def import_graph(root) -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` for the package folder ``root``. An import
    of a module that does not exist (a typo) is an edge to that name, so it shows up too."""
    modules = package_modules(root)
    top = Path(root).resolve().name
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for line, target, _ in _imports(module, _parse(path), modules, top):
            if target != module:
                graph[module].setdefault(target, line)
    return graph


def _shortest_cycle(graph, start: str, members: set[str]) -> list[str]:
    """A shortest closed path ``[start, ..., start]`` inside ``members`` (breadth first)."""
    prev: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is on no cycle of {sorted(members)}")


def import_cycles(root) -> list[list[str]]:
    """The import cycles of the package folder ``root`` as closed paths ``[a, b, ..., a]``:
    for each strongly connected group of modules, shortest cycles until every module of the
    group is on one (empty: no cycle)."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)

    cycles = []
    for group in groups:  # shortest cycles through the group until each member is on one
        covered: set[str] = set()
        for start in group:
            if start not in covered:
                cycle = _shortest_cycle(graph, start, set(group))
                covered.update(cycle)
                cycles.append(cycle)
    return cycles


def private_uses(root) -> list[str]:
    """``"file:line: module uses other._name"`` for each use of another module's private name
    in the package folder ``root``: ``from svcjax.x import _name``, and ``x._name`` where ``x``
    is bound to a package module by an import. Dunder names (``__version__``) are public."""
    modules = package_modules(root)
    top = Path(root).resolve().name
    found = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for module, path in modules.items():
        tree = _parse(path)
        rel = path.relative_to(Path(root).resolve().parent)
        aliases: dict[str, str] = {}   # local name -> package module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(top + ".") or a.name == top:
                        if a.asname:
                            aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node.level, node.module, modules)
                if not (base == top or base.startswith(top + ".")):
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in modules:
                        aliases[a.asname or a.name] = sub
                    if base != module and private(a.name):
                        found.append(f"{rel}:{node.lineno}: {module} imports {base}.{a.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and private(node.attr)
                    and aliases[node.value.id] != module):
                found.append(f"{rel}:{node.lineno}: {module} uses "
                             f"{aliases[node.value.id]}.{node.attr}")
    return sorted(set(found))


# ---------------------------------------------------------------------------------------------
# The rules, on the installed package
# ---------------------------------------------------------------------------------------------

def test_package_has_no_import_cycle():
    cycles = import_cycles(PACKAGE_DIR)
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_no_module_uses_another_modules_private_names():
    uses = private_uses(PACKAGE_DIR)
    assert not uses, ("private names used across modules (give them a public name in the "
                      "module where they belong):\n" + "\n".join(uses))


def test_every_package_import_names_an_existing_module():
    """Each ``svcjax.*`` import resolves to a module of the package (the graph's edges are
    real, so a cycle cannot hide behind a misspelt or stale name)."""
    modules = package_modules(PACKAGE_DIR)
    missing = sorted({f"{m} imports {t}" for m, edges in import_graph(PACKAGE_DIR).items()
                      for t in edges if t not in modules and not _is_package(t, modules)})
    assert not missing, "\n".join(missing)


# Libraries that take seconds to import (or pull in an accelerator runtime): `import svcjax`
# and `svcjax --help` must not load them.
HEAVY = ("jax", "jaxlib", "flax", "numpy", "scipy", "optax", "orbax", "grain", "librosa",
         "soundfile", "tensorflow", "tensorflow_datasets", "torch", "ml_collections", "chex",
         "yaml", "tensorboardX")


@pytest.mark.parametrize("statement", ["import svcjax", "import svcjax.cli"])
def test_import_is_light(statement):
    code = textwrap.dedent(f"""
        import json, sys, time
        before = set(sys.modules)
        t0 = time.perf_counter()
        {statement}
        dt = time.perf_counter() - t0
        print(json.dumps({{"seconds": dt, "new": sorted(set(sys.modules) - before)}}))
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR.parent)]
                                        + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = sorted({m for m in got["new"] if m.split(".")[0] in HEAVY})
    assert not heavy, f"`{statement}` imports {', '.join(heavy)}"
    # Only the standard library and svcjax's own light modules; numpy alone takes ~0.1 s and
    # jax ~1 s, so 0.5 s on a busy 2-core machine still separates light from heavy.
    assert got["seconds"] < 0.5, f"`{statement}` took {got['seconds']:.2f} s"


# ---------------------------------------------------------------------------------------------
# The checkers themselves catch what they are for (a tiny package written here)
# ---------------------------------------------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_checkers_find_cycles_and_private_uses(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a/__init__.py": "",
        # a -> b at module level, b -> c inside a function, c -> a through import_module
        "pkg/a/loop.py": "from pkg.a import task\n",
        "pkg/a/task.py": "def f():\n    from . import sovits\n    return sovits\n",
        "pkg/a/sovits.py": ("import importlib\n"
                            "def g():\n    return importlib.import_module('pkg.a.loop')\n"),
        # no cycle: a registry string is not an import
        "pkg/b.py": "TASKS = {'x': 'pkg.a.loop:Task'}\nfrom pkg import c\n",
        "pkg/c.py": ("import pkg.d as dd\nfrom pkg.d import _hidden, public\n"
                     "def h():\n    return dd._other(), dd.__name__\n"),
        "pkg/d.py": "def _hidden(): pass\ndef _other(): pass\ndef public(): _hidden()\n",
    })
    assert import_cycles(pkg) == [["pkg.a.loop", "pkg.a.task", "pkg.a.sovits", "pkg.a.loop"]]
    assert private_uses(pkg) == ["pkg/c.py:2: pkg.c imports pkg.d._hidden",
                                 "pkg/c.py:4: pkg.c uses pkg.d._other"]
