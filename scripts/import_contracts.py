"""An import-linter contract type: no import cycle between modules (used by .importlinter).

import-linter's own contracts check layers, independence and cycles between sibling packages;
this one checks the modules themselves: no module may import, directly or through others, a
module that imports it.
"""

from __future__ import annotations

from typing import Any, cast

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class AcyclicModulesContract(Contract):
    type_name = "acyclic_modules"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        roots = cast(list[str], self.packages)
        ours = {m for m in graph.modules if any(m == r or m.startswith(r + ".") for r in roots)}
        edges = {m: sorted(graph.find_modules_directly_imported_by(m) & ours) for m in sorted(ours)}
        cycles = [sorted(c) for c in _components(edges) if len(c) > 1]
        cycles += [[m] for m, targets in edges.items() if m in targets]
        return ContractCheck(kept=not cycles, warnings=[], metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in cast(list[list[str]], check.metadata["cycles"]):
            output.print("These modules import each other in a cycle:")
            for module in cycle:
                output.print(f"  {module}")
            output.new_line()


def _components(edges: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work: list[tuple[str, Any]] = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            advanced = False
            for target in targets:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges[target])))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found
