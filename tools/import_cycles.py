"""Every import cycle between navstream's modules, ``if TYPE_CHECKING:`` imports included
(grimp reads them like any other): ``python tools/import_cycles.py`` with the installed layout
(tools/layout.py) first on ``PYTHONPATH``. Exit 1 and one line per cycle when there is any.

Also checks that no core module imports the facade (``navstream`` itself): the facade imports
core, so that would be a cycle in waiting, and core must say which module it needs.
"""

from __future__ import annotations

import sys

import grimp

#: Modules written for plugin authors, which may import the facade like a plugin does.
FACADE_USERS = ("navstream.testing",)


def strongly_connected(adjacency: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(adjacency):
        if root in index:
            continue
        work = [(root, iter(sorted(adjacency[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(adjacency.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def problems(package: str = "navstream") -> list[str]:
    graph = grimp.build_graph(package)
    adjacency = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    found = [f"import cycle: {' <-> '.join(group)}" for group in strongly_connected(adjacency)]
    for module, imported in sorted(adjacency.items()):
        core = module != package and not module.startswith(f"{package}.plugins")
        if core and package in imported and module not in FACADE_USERS:
            found.append(f"{module} imports the facade `{package}`: import the module that defines the name")
    return found


if __name__ == "__main__":
    found = problems()
    for line in found:
        print(line)
    sys.exit(1 if found else 0)
