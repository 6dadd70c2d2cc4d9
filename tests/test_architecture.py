"""The layout docs/architecture.md describes: runner/ is subpackages with one home per concern,
no import cycles, few top-level modules, files of a few hundred lines."""
from __future__ import annotations

import ast
import subprocess
import sys

from tests.helpers import ROOT

RUNNER = ROOT / "runner"
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "errors.py", "registry.py", "atomic.py", "nested.py"}


def module_name(path) -> str:
    """runner/engine/loop.py -> compare.engine.loop (pyproject.toml maps runner/ to `compare`)."""
    parts = ("compare", *path.relative_to(RUNNER).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, module_level_only: bool) -> set[str]:
    """The runner modules `path` imports (`from compare.x import y` counts compare.x.y if it is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(_walk_outside_type_checking(tree))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("compare")}


def _walk_outside_type_checking(node):
    """ast.walk, but not into `if TYPE_CHECKING:` blocks (annotations only, never run)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            continue
        yield from _walk_outside_type_checking(child)


def graph(module_level_only: bool) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in RUNNER.rglob("*.py")}
    # A package's parents are imported before it anyway: `from compare import atomic` is no edge to runner/__init__.
    return {m: {t for t in imports(p, module_level_only) if t in modules and t != m and not m.startswith(t + ".")} for m, p in modules.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if not state.get(v) and (found := visit(v)):
                return found
        state[u] = 2
        stack.pop()
        return None

    for u in sorted(edges):
        if not state.get(u) and (found := visit(u)):
            return found
    return None


def test_the_runner_import_graph_is_acyclic_even_counting_lazy_imports():
    assert cycle(graph(module_level_only=True)) is None
    assert cycle(graph(module_level_only=False)) is None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_importing_runner_and_the_cli_imports_no_heavy_module():
    probe = "import sys, compare, compare.cli.main; compare.cli.main.application(); print(sorted(m for m in ('torch', 'pandas', 'torchvision') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# The floors of runner/, bottom first (docs/architecture.md "Floors"). A package imports only
# packages on floors below its own, at module level or lazily; packages on one floor import
# nothing from each other.
FLOORS = [
    {"errors"},
    {"atomic", "registry", "nested"},
    {"metrics", "rundir"},
    {"config"},
    {"engine"},
    {"resolve"},
    {"data", "report"},
    {"assemble", "export"},
    {"run"},
    {"bench"},
    {"cli"},
    {"__main__"},
]
# Upward imports with a reason: (importer, imported module).
EXCEPTIONS = {
    ("compare", "compare.run.experiment"): "`from compare import Experiment`, the public API, imported on first use",
}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "compare"


def upward_imports() -> list[str]:
    floor = {name: level for level, names in enumerate(FLOORS) for name in names}
    wrong = []
    for module, targets in graph(module_level_only=False).items():
        low = package_of(module)
        for target in sorted(targets):
            high = package_of(target)
            if high != low and (module, target) not in EXCEPTIONS and floor.get(high, -1) >= floor.get(low, len(FLOORS)):
                wrong.append(f"{module} imports {target} ({high} is not below {low})")
    return wrong


def test_runner_is_subpackages_with_few_top_level_modules():
    top = {p.name for p in RUNNER.glob("*.py")}
    assert top <= TOP_LEVEL_MODULES, top - TOP_LEVEL_MODULES
    packages = {p.name for p in RUNNER.iterdir() if (p / "__init__.py").exists()}
    assert packages == set().union(*FLOORS) - {p.removesuffix(".py") for p in TOP_LEVEL_MODULES}


def test_every_package_imports_only_packages_on_lower_floors():
    """Module-level and lazy imports alike (TYPE_CHECKING imports aside): a fact two floors need
    lives below both; docs/architecture.md lists the floors."""
    assert upward_imports() == []


def test_the_floor_check_finds_an_upward_import(monkeypatch):
    real = graph

    def planted(module_level_only):
        edges = real(module_level_only)
        edges["compare.metrics.builtin"] = edges["compare.metrics.builtin"] | {"compare.report.leaderboard"}
        return edges

    monkeypatch.setitem(globals(), "graph", planted)
    assert upward_imports() == ["compare.metrics.builtin imports compare.report.leaderboard (report is not below metrics)"]


def test_each_package_init_names_its_surface_and_imports_nothing():
    for init in RUNNER.glob("*/__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), init
        assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], init


def test_each_package_init_names_every_module_of_its_package():
    """The docstring is the package's table of contents: each module named at the start of a line."""
    for init in RUNNER.glob("*/__init__.py"):
        listed = {line.strip().lstrip("-").split(":")[0].split()[0] for line in ast.get_docstring(ast.parse(init.read_text())).splitlines() if line.strip().lstrip("-").strip()}
        modules = {p.stem for p in init.parent.glob("*.py")} - {"__init__"}
        assert modules <= listed, f"{init.relative_to(ROOT)} does not name {sorted(modules - listed)}"


def test_no_source_file_exceeds_400_lines():
    sources = [*RUNNER.rglob("*.py"), *(ROOT / "models").rglob("*.py"), *(ROOT / "datasets").rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > 400}
    assert not long
