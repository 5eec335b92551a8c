"""The library stays readable: no function in mefn/ over 100 lines."""

from __future__ import annotations

import ast
from pathlib import Path

MEFN = Path(__file__).resolve().parents[1] / "mefn"
MAX_FUNCTION_LINES = 100


def test_no_function_in_the_library_is_over_100_lines() -> None:
    long = []
    for path in sorted(MEFN.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(
                        f"{path.relative_to(MEFN.parent)}:{node.lineno} {node.name} {lines}"
                    )
    assert not long, "functions over 100 lines: " + "; ".join(long)
