"""The package's import rules (DESIGN.md's layers), checked on the source itself.

- `lint-imports` keeps pyproject.toml's layers contract: cli > explore > report | torch > study > core
  (a layer imports only layers below it; report and torch not each other), and breaks on a violating import.
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


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_subpackage_imports_another_ones_private_names():
    found = []
    for module, tree in _modules():
        for node, _ in _imports(tree):
            for target in _targets(node):
                if not _own(target) or _subpackage(target) in ("", _subpackage(module)):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
                private = [p for p in target.split(".") if _private(p)] + [n for n in names if _private(n)]
                if private and (module, target) not in PRIVATE_EXCEPTIONS:
                    found.append(f"{module}:{node.lineno} {target} {', '.join(private)}")
    assert not found, "private names imported across subpackages:\n" + "\n".join(found)


# None: the explorer's zip download writes a run folder with the report layer's write_run.
PRIVATE_EXCEPTIONS: set[tuple[str, str]] = set()


def test_the_private_check_sees_a_violation():
    """The AST walk reads imports inside functions too, and tells private names from dunders."""
    tree = ast.parse("def f():\n    from initscope.report._common import _x\n")
    (node, function), = list(_imports(tree))
    assert function == "f" and _targets(node) == ["initscope.report._common"]
    assert _private("_common") and _private("_x") and not _private("__version__")
    assert _subpackage("initscope.report._common") == "report" and _subpackage("initscope") == ""
