"""An import-linter layers contract that also sees imports made by name at run time.

`importlib.import_module("initscope.report.page")` (or `__import__("...")`)
loads a module as surely as an import statement, but grimp builds its graph
from import statements only, so a plain `layers` contract never sees such a
call reach up a layer. This contract adds an edge for every such call whose
first argument is a string literal naming a module of the root package, then
checks the layers as import-linter's own `layers` contract does.

pyproject.toml registers it (`contract_types`); `lint-imports`, run from the
repository root, finds it there (import-linter puts the working folder on
sys.path). `importlib_imports` is what tests/test_architecture.py reads too.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from importlinter.contracts.layers import LayersContract

__all__ = ["ImportlibLayersContract", "importlib_imports"]

_LOADERS = ("import_module", "__import__")


def importlib_imports(tree: ast.AST, root: str) -> Iterator[tuple[ast.Call, str, str | None]]:
    """(call, imported module, enclosing function or None) for each `import_module("root...")` or
    `__import__("root...")` call of a parsed module whose first argument is a string literal."""
    def visit(node: ast.AST, function: str | None):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and _loader(child.func) and child.args:
                first = child.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and \
                        (first.value == root or first.value.startswith(root + ".")):
                    yield child, first.value, function
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            yield from visit(child, inner)

    yield from visit(tree, None)


def _loader(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in _LOADERS


def _source(module: str) -> Path | None:
    """The .py file of a module, found from its top-level package's folder (importing nothing)."""
    root, *parts = module.split(".")
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


class ImportlibLayersContract(LayersContract):
    """import-linter's `layers` contract over the import graph plus the modules imported by name."""

    def check(self, graph, verbose: bool):
        # The root package itself is left out: its PEP 562 API loads a name when the name is first
        # read, never when a module imports the package (`from initscope import __version__`).
        for module in sorted(m for m in graph.modules if "." in m):
            path = _source(module)
            if path is None:
                continue
            source = path.read_text(encoding="utf-8")
            lines = source.splitlines()
            for call, imported, _ in importlib_imports(ast.parse(source), module.split(".")[0]):
                graph.add_import(importer=module, imported=imported, line_number=call.lineno,
                                 line_contents=lines[call.lineno - 1].strip())
        return super().check(graph, verbose)
