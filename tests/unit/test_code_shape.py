"""The code's shape: no function of the product is over 80 lines, so each reads on one screen
(issue 30: ``ml.train._train`` had grown to 207)."""

from __future__ import annotations

import ast
from pathlib import Path

from testkit.paths import ROOT

PACKAGES = ("ml", "core", "dashboard", "worker", "launcher")
MAX_LINES = 80


def long_functions(source: str, name: str, limit: int = MAX_LINES) -> list[str]:
    """``name:line function (N lines)`` for each function or method in ``source`` longer than
    ``limit`` lines, nested ones included (from its ``def`` to its last line)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_of_the_product_is_over_80_lines():
    offenders = [hit for pkg in PACKAGES for path in sorted(Path(ROOT, pkg).rglob("*.py"))
                 for hit in long_functions(path.read_text(), str(path.relative_to(ROOT)))]
    assert offenders == [], f"over {MAX_LINES} lines, split them: " + "; ".join(offenders)


def test_the_check_catches_a_function_of_81_lines():
    def source(body_lines: int, header: str) -> str:
        return header + "".join(f"    x{i} = {i}\n" for i in range(body_lines))

    # The def line and 80 more: one line over, whether a function, a coroutine or a method.
    assert long_functions(source(80, "def long():\n"), "m.py") == ["m.py:1 long (81 lines)"]
    assert long_functions(source(80, "async def run():\n"), "m.py") == ["m.py:1 run (81 lines)"]
    method = source(80, "class A:\n    def go(self):\n").replace("\n    x", "\n        x")
    assert long_functions(method, "m.py") == ["m.py:2 go (81 lines)"]
    assert long_functions(source(79, "def fits():\n"), "m.py") == []  # exactly 80 is fine
