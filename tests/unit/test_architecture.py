"""The layout's rules that import-linter's contracts (pyproject.toml, run by ``make lint``) do not
state: no import cycle anywhere in the product, and a pipeline run with sources configured never
loads the simulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import grimp

PRODUCT = ("batchscope", "agents", "simulator", "pipeline")


def cycles(graph: grimp.ImportGraph) -> Iterator[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    yield sorted(component)


def test_no_module_of_the_product_is_in_an_import_cycle() -> None:
    """Imports inside functions and under TYPE_CHECKING count too: none may hide a cycle."""
    graph = grimp.build_graph(*PRODUCT)
    assert list(cycles(graph)) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(name)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")
    assert list(cycles(graph)) == [["a.b", "a.c"]]


def test_a_configured_pipeline_never_loads_the_simulator() -> None:
    probe = ("import sys, batchscope.cli, agents.runner, agents.worker, agents.app; "
             "print(sorted(m for m in sys.modules if m == 'simulator' or m.startswith('simulator.')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
