"""House rules that keep the code readable, checked on the source text (fast, no imports)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spectral_ray", "analysis", "trainables", "bench")
MAX_FUNCTION_LINES = 80


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_80_lines():
    """Long functions are broken into named steps (docs/ARCHITECTURE.md); this keeps it so."""
    long = [f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)"
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            for name, line, n in _functions(path) if n > MAX_FUNCTION_LINES]
    assert not long, "functions over 80 lines: " + "; ".join(long)


def test_the_check_sees_a_long_function(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n" + "    x = 1\n" * 90)
    assert [n for _, _, n in _functions(src)] == [91]
