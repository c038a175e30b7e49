"""The size guide (STYLE.md): no module over 500 lines, no function over 60 lines unless a comment says why.

A long function is allowed when a `# long: <reason>` comment sits on its def
line or on the comment lines just above it (above its decorators, too).
A module that passes 500 lines is split: it is probably two concepts.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "initscope"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
LONG = re.compile(r"#\s*long:\s*\S.{8,}")  # a reason of a few words, not a bare marker


def _has_reason(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A `# long: <reason>` comment on the def line (or the decorators) or in the comments just above."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    if any(LONG.search(lines[i - 1]) for i in range(first, node.lineno + 1)):
        return True
    i = first - 1
    while i >= 1 and lines[i - 1].lstrip().startswith("#"):
        if LONG.search(lines[i - 1]):
            return True
        i -= 1
    return False


def long_functions(source: str, name: str = "<source>") -> list[str]:
    """'module:line function (n lines)' for each function over the limit without a stated reason."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_FUNCTION_LINES and not _has_reason(lines, node):
                found.append(f"{name}:{node.lineno} {node.name} ({size} lines)")
    return found


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text()


def test_no_module_passes_500_lines():
    big = [f"{name} ({len(text.splitlines())} lines)" for name, text in _sources()
           if len(text.splitlines()) > MAX_MODULE_LINES]
    assert not big, "modules over 500 lines (split them):\n" + "\n".join(big)


@pytest.mark.slow
def test_no_function_passes_60_lines_without_a_reason():
    found = [f for name, text in _sources() for f in long_functions(text, name)]
    assert not found, ("functions over 60 lines (split them, or say why in a `# long: <reason>` comment on "
                       "the def line or just above):\n" + "\n".join(found))


def test_the_function_check_counts_and_reads_reasons():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    plain = f"def f():\n{body}"
    assert long_functions(plain) == [f"<source>:1 f ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_functions(f"def f():\n{body[: -len('    x59 = 59') - 1]}") == []  # exactly 60 lines
    assert long_functions(f"# long: one recursion whose parts share six arrays\ndef f():\n{body}") == []
    assert long_functions(f"def f():  # long: the table's columns, one per line\n{body}") == []
    assert long_functions(f"# long: the reason\n@decorator\ndef f():\n{body}") == []
    assert long_functions(f"# long:\ndef f():\n{body}") != []  # a marker without a reason is no reason
    assert long_functions(f"# long: far above\nx = 1\ndef f():\n{body}") != []
