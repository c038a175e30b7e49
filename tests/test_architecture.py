"""The package's import rules (DESIGN.md's layers), checked on the source itself.

- `lint-imports` keeps pyproject.toml's layers contract: cli > explore > report | torch > study > core
  (a layer imports only layers below it; report and torch not each other), and breaks on a violating import.
- Own-package imports are absolute and at module top. Only the lazy imports listed in `LAZY`,
  each with its reason, sit inside functions: the public API's PEP 562 names, the CLI's start-up
  (`initscope --help` loads no study, core or report module; a command module also loads for its
  own help and option completion, so it keeps pandas out until it runs), and modules that import an
  optional extra (torch, starlette) at their top. Third-party heavy libraries (plotly, matplotlib,
  torch, dask, sklearn, pyarrow) load inside the functions that need them; that is not checked here.
- No subpackage imports another's private (underscore) modules or names.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "initscope"
CONTRACT = "initscope layers: cli > explore > report | torch > study > core"

_HELP = "loaded by `initscope --help`, which imports no study, core or report module (tests/test_cli_app.py)"
_PANDAS = "pulls pandas (~0.75 s): the command module also loads for its own help and option completion"
_STARLETTE = "the server imports starlette and uvicorn (the optional 'explore' extra) at its top"
# (importing module, imported module or a package above it) -> why it is imported inside a function.
LAZY = {
    ("initscope.cli.app", "initscope.study.plugins"): _HELP,
    ("initscope.cli.common", "initscope.report"): _HELP,
    ("initscope.cli.common", "initscope.study"): _HELP,
    ("initscope.cli.certify", "initscope.core.certify"): _PANDAS,
    ("initscope.cli.certify", "initscope.study.model"): _PANDAS,
    ("initscope.cli.phase", "initscope.report.phase_page"): _PANDAS,
    ("initscope.cli.run", "initscope.cli.summary"): _PANDAS,
    ("initscope.cli.run", "initscope.report"): _PANDAS,
    ("initscope.cli.run", "initscope.study.runner"): _PANDAS,
    ("initscope.cli.sweep", "initscope.report"): _PANDAS,
    ("initscope.cli.sweep", "initscope.study.executors"): _PANDAS,
    ("initscope.cli.sweep", "initscope.study.store"): _PANDAS,
    ("initscope.cli.inspect", "initscope.torch"): "initscope.torch imports torch (the optional 'torch' extra)",
    ("initscope.cli.explore", "initscope.explore.server"): _STARLETTE,
    ("initscope.explore", "initscope.explore.server"): _STARLETTE,
}

def _lint_imports(src: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on pyproject.toml's contracts, finding the package under `src` first."""
    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*command, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_contract_is_kept():
    done = _lint_imports(SRC)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{CONTRACT} KEPT" in done.stdout


@pytest.mark.parametrize(("module", "statement", "edge"), [
    ("core/data.py", "import initscope.report", "initscope.core.data -> initscope.report"),
    ("study/store.py", "from initscope.cli import app", "initscope.study.store -> initscope.cli"),
    ("report/tables.py", "import initscope.torch.diagnosis", "initscope.report.tables -> initscope.torch.diagnosis"),
])
def test_the_contract_breaks_on_a_violating_import(tmp_path, module, statement, edge):
    """A copy of the package with one import that goes up (or across) a layer: lint-imports fails, naming it."""
    copy = tmp_path / "src" / "initscope"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{statement}  # violates the layers\n")
    done = _lint_imports(tmp_path / "src")
    assert done.returncode != 0, done.stdout
    assert f"{CONTRACT} BROKEN" in done.stdout
    assert edge in done.stdout


def _modules():
    """(dotted module name, parsed tree) for every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, ast.parse(path.read_text(), filename=str(path))


def _imports(tree: ast.AST):
    """(import node, enclosing function name or None) for every import statement of a module."""
    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, function
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            yield from visit(child, inner)

    yield from visit(tree, None)


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return ["." * node.level + (node.module or "")]


def _own(target: str) -> bool:
    return target == "initscope" or target.startswith("initscope.")


def _submodule(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _lazy_targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import loads: `from initscope import report` loads initscope.report."""
    targets = _targets(node)
    if isinstance(node, ast.ImportFrom) and node.level == 0 and _own(targets[0]):
        subs = [f"{targets[0]}.{a.name}" for a in node.names if _submodule(f"{targets[0]}.{a.name}")]
        return subs or targets
    return targets


def _allowed(module: str, target: str) -> bool:
    return any(module == m and (target == t or target.startswith(t + ".")) for m, t in LAZY)


@pytest.mark.slow
def test_own_package_imports_are_absolute_and_at_module_top():
    relative, lazy = [], []
    for module, tree in _modules():
        for node, function in _imports(tree):
            for target in _lazy_targets(node):
                where = f"{module}:{node.lineno} {target}" + (f" (in {function})" if function else "")
                if target.startswith("."):
                    relative.append(where)
                elif function and _own(target) and not _allowed(module, target):
                    lazy.append(where)
    assert not relative, "relative imports (own-package imports are absolute):\n" + "\n".join(relative)
    assert not lazy, ("own-package imports inside functions (move them to the module top, or add an entry "
                      "with its reason to LAZY):\n" + "\n".join(lazy))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.slow
def test_no_subpackage_imports_another_ones_private_names():
    found = []
    for module, tree in _modules():
        for node, _ in _imports(tree):
            for target in _targets(node):
                if not _own(target) or _subpackage(target) in ("", _subpackage(module)):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
                private = [p for p in target.split(".") if _private(p)] + [n for n in names if _private(n)]
                if private:
                    found.append(f"{module}:{node.lineno} {target} {', '.join(private)}")
    assert not found, "private names imported across subpackages:\n" + "\n".join(found)


def test_the_checks_see_a_violation():
    """The AST walk reads imports inside functions too, tells private names from dunders, and reads LAZY."""
    tree = ast.parse("def f():\n    from initscope.report._common import _x\n")
    (node, function), = list(_imports(tree))
    assert function == "f" and _targets(node) == ["initscope.report._common"]
    (node, _), = list(_imports(ast.parse("def f():\n    from initscope import report, __version__\n")))
    assert _lazy_targets(node) == ["initscope.report"]
    assert not _allowed("initscope.study.store", "initscope.report._common")
    assert _allowed("initscope.cli.inspect", "initscope.torch.loading")
    assert _private("_common") and _private("_x") and not _private("__version__")
    assert _subpackage("initscope.report._common") == "report" and _subpackage("initscope") == ""
