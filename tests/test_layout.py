"""The package's shape: rooms by role, imports in one direction, no import circles.

Every import statement of every module under trainrepro/ is read with ``ast`` (inside
functions and ``if TYPE_CHECKING:`` blocks too: a lazy import is still a dependency), so a
new module that closes a circle or reaches upwards fails here, naming the modules.
README.md, section Layout, draws the same map.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trainrepro"

# Lowest first. A module may import modules of its own room or of a lower layer, never of a
# higher one or of another room in its layer. ``engine.run`` (the Run type and the callback and
# update-rule seams) sits below optim so that optimizers and instruments can name it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("trainrepro", "errors"),
    ("config",),
    ("data", "norms", "schedules"),
    ("models",),
    ("engine.run",),
    ("optim",),
    ("engine",),
    ("instruments",),
    ("bench", "analysis"),
    ("reproduce",),
    ("help",),
    ("cli",),
    ("__main__",),
)
TOP_LEVEL_MODULES = {"__init__", "__main__", "cli", "config", "errors", "help"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("trainrepro", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from x import y`` counts x.y when it is
    a module, else x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def room(module: str) -> str:
    """The room (entry of LAYERS) a module belongs to: the longest matching prefix."""
    rel = module.removeprefix("trainrepro.") if module != "trainrepro" else "trainrepro"
    rooms = [r for layer in LAYERS for r in layer]
    matches = [r for r in rooms if rel == r or rel.startswith(r + ".")]
    assert matches, f"{module} is in no room of LAYERS: give it one (and a line in the README)"
    return max(matches, key=len)


def rank(room_name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if room_name in layer)


def test_the_import_graph_is_read():
    """Guards the guard: the parser finds known edges, so an empty graph cannot pass."""
    graph = import_graph()
    assert "trainrepro.engine.run" in graph["trainrepro.engine.build"]
    assert "trainrepro.errors" in graph["trainrepro.config"]
    assert len(graph) > 40


def test_find_cycles_names_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in sorted(import_graph().items()):
        mine = room(module)
        for target in sorted(targets):
            theirs = room(target)
            if theirs != mine and rank(theirs) >= rank(mine):
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_engine_reaches_instruments_only_through_configs():
    graph = import_graph()
    wrong = [
        f"{m} imports {t}"
        for m, targets in graph.items()
        if room(m) in ("engine", "engine.run", "optim")
        for t in targets
        if room(t) == "instruments"
    ]
    assert not wrong


def test_every_module_has_a_room():
    stray = sorted(
        p.name for p in PACKAGE.glob("*.py") if p.stem not in TOP_LEVEL_MODULES
    )
    assert not stray, (
        f"modules directly in trainrepro/: {', '.join(stray)}; a new module goes into the "
        "package of its role (engine, optim, norms, instruments, bench, analysis, ...)"
    )
    for name in module_names():
        room(name)


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_each_package_says_what_lives_there(package):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc and "import" in doc.lower(), (
        f"trainrepro/{package}/__init__.py: its docstring says what lives there and what it imports"
    )
