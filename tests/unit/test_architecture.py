"""Architecture guards for app/: no import cycles, no import from a lower layer up, no module over 450 lines.

Imports are read from the source with `ast` (nothing is imported), so the test is fast and sees what runs:
module-level and function-level imports both count. Imports under `if TYPE_CHECKING:` are exempt: they never
run, and annotations may name a higher layer's types (e.g. the engine's parts naming each other's classes).
`import a.b.c` / `from a.b import c` count as an edge to the module named (`a.b.c`), not to the parent packages
Python initialises on the way (a package `__init__` re-exporting its submodules would otherwise put every
package in a cycle with its own children).

Layers, bottom-up (a module may import its own layer and the layers below it, never above):

0. `app` (the package: `__version__`), `app.settings`, `app.errors`: import nothing from app (others may import
   them).
1. the other top-level modules: `app.log`, `app.metrics`, `app.lifecycle`, and the protocol-neutral types and
   rules both the registry and the engine use (`app.params`, `app.param_rules`); a new top-level module lands here
   unless it is listed as a top layer below.
2. `app.registry`: names, aliases, catalogs, model facts, pull.
3. `app.hardware`: devices and memory estimates (estimates read the registry's model facts).
4. `app.engine`: the engine interface and the transformers engine (uses the registry and the hardware).
5. `app.remote`: engines that forward to upstream servers, behind the same interface.
6. `app.api`: the HTTP protocols (Ollama, OpenAI, management), over any engine.
7. `app.main`: the composition root (`create_app`).
8. `app.server`, `app.gunicorn_worker`: processes that run the app.
9. `app.cli`, `app.__main__`: the command line is a client of the API and can embed the server
   (cli.embedded calls `create_app`, `hugllama serve` runs app.server), so it sits above main; it imports
   nothing from app.api.

Known offenders being removed are in the allow-lists below. An allow-listed entry that no longer occurs fails
the test too, so the lists cannot go stale: delete the entry when its import goes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
MAX_LINES = 450

# (prefix, layer): the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "app": 1,
    "app.settings": 0,
    "app.errors": 0,
    "app.registry": 2,
    "app.hardware": 3,
    "app.engine": 4,
    "app.remote": 5,
    "app.api": 6,
    "app.main": 7,
    "app.server": 8,
    "app.gunicorn_worker": 8,
    "app.cli": 9,
    "app.__main__": 9,
}
PACKAGE_INIT_LAYER = 0  # `app/__init__.py` holds only `__version__`

# Known exceptions, each entry with why it is still there (empty: the engine.admin <-> engine.hf cycle went in
# 0bb7b46, registry.show -> engine.templates and registry.catalog -> engine.types in 4bf3dde).
# A cycle is one strongly connected component, written as its sorted module names.
ALLOWED_CYCLES: set[tuple[str, ...]] = set()
ALLOWED_UPWARD: set[tuple[str, str]] = set()  # (importer, imported)
ALLOWED_LONG: set[str] = set()


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(APP.rglob("*.py")):
        parts = path.relative_to(APP.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under node, at any depth, except those only under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _import_nodes(ast.Module(body=[stmt], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The app modules `module` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        names = [f"{source}.{alias.name}" for alias in node.names]
        submodules = [name for name in names if name in modules]
        # `from pkg import submodule` imports the submodule; `from module import name` imports the module.
        if submodules:
            found.update(submodules)
        if source in modules and len(submodules) < len(names):
            found.add(source)
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(module, path, modules) for module, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(tuple(sorted(component)))
    return found


def _layer(module: str) -> int:
    if module == "app":
        return PACKAGE_INIT_LAYER
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            if prefix == "app" and len(parts) > 2:
                raise AssertionError(f"{module}: a new package under app/; give it a layer in LAYERS")
            return LAYERS[prefix]
    raise AssertionError(f"{module} is outside app")


def _upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(src, dst) for src, targets in graph.items() for dst in targets if _layer(src) < _layer(dst)}


def test_the_reader_counts_function_level_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from app import errors\n"
        "from app.engine.types import Chunk\n"
        "if TYPE_CHECKING:\n"
        "    from app.api import deps\n"
        "def f() -> None:\n"
        "    import app.main\n"
        "    from ..remote import engine\n",
        encoding="utf-8",
    )
    modules = dict.fromkeys(
        ["app", "app.errors", "app.engine.types", "app.api.deps", "app.main", "app.remote.engine"], source
    )
    found = _imports("app.cli.mod", source, modules)
    assert found == {"app.errors", "app.engine.types", "app.main", "app.remote.engine"}


def test_cycles_and_upward_edges_are_found() -> None:
    graph = {"app.engine.a": {"app.engine.b"}, "app.engine.b": {"app.engine.a"}, "app.registry.c": {"app.engine.a"}}
    assert _cycles(graph) == {("app.engine.a", "app.engine.b")}
    assert _upward(graph) == {("app.registry.c", "app.engine.a")}
    with pytest.raises(AssertionError, match="gone now, delete from ALLOWED_UPWARD"):
        _check(set(), {("app.registry.c", "app.engine.a")}, "upward", "ALLOWED_UPWARD")
    with pytest.raises(AssertionError, match="upward"):
        _check({("app.registry.c", "app.engine.a")}, set(), "upward", "ALLOWED_UPWARD")


def _check(found: set[Any], allowed: set[Any], problem: str, allow_list: str) -> None:
    """Nothing found beyond the allow-list, and nothing on the allow-list that is no longer found."""
    assert not found - allowed, f"{problem}: {sorted(found - allowed)}"
    assert not allowed - found, f"gone now, delete from {allow_list}: {sorted(allowed - found)}"


def test_no_import_cycles() -> None:
    problem = "import cycles in app/ (make one side import a lower module)"
    _check(_cycles(_graph()), ALLOWED_CYCLES, problem, "ALLOWED_CYCLES")


def test_no_import_from_a_lower_layer_up() -> None:
    _check(_upward(_graph()), ALLOWED_UPWARD, "imports from a lower layer up (see the docstring)", "ALLOWED_UPWARD")


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_no_module_over_450_lines() -> None:
    lengths = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in _modules().items()}
    long = {module for module, lines in lengths.items() if lines > MAX_LINES}
    problem = f"modules over {MAX_LINES} lines (split them by responsibility): " + str(
        {module: lengths[module] for module in sorted(long)}
    )
    _check(long, ALLOWED_LONG, problem, "ALLOWED_LONG")
