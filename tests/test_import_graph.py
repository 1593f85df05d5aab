"""The project's own modules import one another without a circle (docs/ARCHITECTURE.md).

The graph is read with :mod:`ast` from every import statement of ``spectral_ray``, ``analysis``
and ``trainables``, at module level and inside functions alike: a function-level import only
postpones a circle to the first call, it does not remove the dependency. An edge goes to the
module named (``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``); the
parent packages Python imports on the way are not edges, since every submodule would otherwise
form a circle with a package ``__init__`` that re-exports it."""

import ast
import graphlib
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("spectral_ray", "analysis", "trainables")


def module_files() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts).removesuffix(".__init__")] = path
    return out


def imports_of(module: str, source: str, known: set[str], is_package: bool) -> set[str]:
    """The project modules ``source`` (of ``module``) imports anywhere in its body."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != module}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {m: imports_of(m, p.read_text(), known, p.name == "__init__.py") for m, p in files.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def test_the_reader_sees_function_level_and_relative_imports():
    known = {"p", "p.a", "p.b", "p.c"}
    src = "from . import a\nfrom p.b import thing\ndef f():\n    import p.c\n"
    assert imports_of("p.x", src, known, is_package=False) == {"p.a", "p.b", "p.c"}
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_packages_import_graph_has_no_circle():
    graph = import_graph()
    assert len(graph) > 60 and graph["spectral_ray.weights"] >= {"spectral_ray.models"}  # the reader found the code
    found = cycle(graph)
    assert found is None, "import circle: " + " -> ".join(found)
