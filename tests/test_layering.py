"""Dependencies point one way (docs/ARCHITECTURE.md): ``spectral_ray`` outside ``cli/`` never
imports Ray, ``trainables`` or ``analysis``; ``spectral_ray/cli`` imports them only inside the
command that needs them. Checked twice: statically (every import statement, also those inside
functions) and by importing every library module in a fresh interpreter."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "spectral_ray"
FORBIDDEN = ("ray", "trainables", "analysis")


def imported_modules(source: str, *, top_level_only: bool = False) -> list[str]:
    """Absolute module names imported by ``source`` (relative imports are inside the package)."""
    tree = ast.parse(source)
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def forbidden(names: list[str]) -> list[str]:
    return sorted({n for n in names if n.split(".")[0] in FORBIDDEN})


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts)


def test_the_checker_sees_every_kind_of_import():
    src = "import os\nimport ray.tune as t\nfrom analysis import report\ndef f():\n    from trainables.launcher import x\n"
    assert forbidden(imported_modules(src)) == ["analysis", "ray.tune", "trainables.launcher"]
    assert forbidden(imported_modules(src, top_level_only=True)) == ["analysis", "ray.tune"]
    assert forbidden(imported_modules("from . import ray\nimport rayon\n")) == []  # relative, other package


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_library_module_imports_no_ray_trainables_or_analysis(path):
    assert forbidden(imported_modules(path.read_text())) == [], f"{path.relative_to(REPO)} imports them"


def test_cli_imports_them_only_inside_commands():
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        assert forbidden(imported_modules(path.read_text(), top_level_only=True)) == [], path.name


def test_importing_every_library_module_loads_none_of_them():
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in library_files()]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(modules) > 20  # the walk found the package
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
