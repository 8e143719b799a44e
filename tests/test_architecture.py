"""The house rules, checked: the layering (import-linter's contracts in pyproject.toml), no import cycle between
any two modules of the package, and no function longer than a screen."""

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60


def test_the_layering_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import cycle between modules of the graph, or None (depth-first search, colouring modules)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module], path[len(path):] = 1, [module]
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == 1:
                return path[path.index(imported):] + [imported]
            if imported not in state and (found := visit(imported)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph.modules):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_module_imports_itself_through_others():
    # an import only a type checker runs (under ``if TYPE_CHECKING:``) is no import at run time
    graph = grimp.build_graph("resnet_viz", exclude_type_checking_imports=True, cache_dir=None)
    assert _cycle(graph) is None, " → ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    graph.remove_import(importer="p.c", imported="p.a")
    assert _cycle(graph) is None


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in sorted((ROOT / "resnet_viz").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
