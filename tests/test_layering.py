"""The architecture as a test: import-linter's contracts (pyproject.toml) are kept, and no
package has an import circle, counting imports made inside functions too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "bench", "training")


def test_the_import_linter_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def circles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The import circles among `modules`: strongly connected components of two or more
    modules, or one that imports itself (Tarjan's algorithm, iterative)."""
    imports = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            module, start = work.pop()
            if start == 0:
                index[module] = lowest[module] = len(index)
                stack.append(module)
                on_stack.add(module)
            for position in range(start, len(imports[module])):
                imported = imports[module][position]
                if imported not in index:
                    work += [(module, position + 1), (imported, 0)]
                    break
                if imported in on_stack:
                    lowest[module] = min(lowest[module], index[imported])
            else:
                if lowest[module] == index[module]:
                    component = []
                    while not component or component[-1] != module:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    if len(component) > 1 or module in imports[module]:
                        found.append(sorted(component))
                if work:
                    parent = work[-1][0]
                    lowest[parent] = min(lowest[parent], lowest[module])
    return found


def test_the_circle_check_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")
    assert circles(graph, {"a", "a.b", "a.c", "a.d"}) == [["a.b", "a.c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(graph, package):
    modules = graph.find_descendants(package) | {package}
    found = circles(graph, modules)
    described = [
        " -> ".join(graph.find_shortest_chain(c[0], c[1]) or c) + f" (circle of {', '.join(c)})"
        for c in found
    ]
    assert not found, f"{package}/ has import circles: " + "; ".join(described)
