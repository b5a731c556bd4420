"""What a run is given: jobs, parents first, and who computes each shared prefix.

Plain data and pure functions: ``make_jobs`` turns a plan into jobs (graphlib's order),
``share_gates`` gives each variant the owner of the steps it shares with another build of the
run (one owner per node of the step trie), ``owners_first`` orders the jobs so that those owners
take the team's slots first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from e2b_matrix import resolve
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.model import BuildSpec, State
from e2b_matrix.plan import Node, PlanItem, step_trie

Gate = tuple[str, int]  # (the alias whose build computes a shared prefix, that prefix's last depth)


@attrs.frozen
class Job:
    spec: BuildSpec
    entry: LockEntry | None  # its lock entry when the run started
    fresh: bool  # unchanged since that entry (the plan said so)
    parent: str | None = None  # alias of a variant of this run it is built on


def make_jobs(items: Iterable[PlanItem], force: bool = False) -> list[Job]:
    """Plan items -> jobs, parents first (graphlib)."""
    items = list(items)
    by_alias = {i.alias: i for i in items}
    specs = resolve.build_order(i.spec for i in items if i.spec is not None)
    aliases = set(by_alias)
    return [
        Job(
            s,
            by_alias[s.alias].entry,
            by_alias[s.alias].state is State.FRESH and not force,
            resolve.parent_alias(s, aliases),
        )
        for s in specs
    ]


def building(jobs: Iterable[Job]) -> set[str]:
    """The aliases a run builds: those not fresh, and those on a parent the run builds (jobs come
    parents first)."""
    out: set[str] = set()
    for j in jobs:
        if not j.fresh or j.parent in out:
            out.add(j.spec.alias)
    return out


def share_gates(specs: Iterable[BuildSpec]) -> dict[str, Gate]:
    """alias -> (the alias whose build computes its shared prefix, that prefix's last depth).

    Depth 0 is the base, d the d-th step. A variant absent from the result waits for nobody.
    """
    specs = list(specs)
    alias = {s.name: s.alias for s in specs}
    rank = {s.name: (len(s.steps), -i) for i, s in enumerate(specs)}  # most steps first, then plan order
    gates: dict[str, Gate] = {}

    def walk(node: Node, owner: str | None) -> None:
        if owner not in node.variants:
            owner = max(node.variants, key=rank.__getitem__)
        for v in node.variants:
            if v != owner:  # deeper nodes come later on v's path: the last foreign one is the gate
                gates[alias[v]] = (alias[owner], node.depth)
        for child in node.children:
            walk(child, owner)

    for root in step_trie(specs):
        walk(root, None)
    return gates


def owners_first(jobs: list[Job], gates: Mapping[str, Gate]) -> list[Job]:
    """Every job after the jobs it waits for (its parent, its gate's owner): owners take slots first."""
    graph = {j.spec.alias: [a for a in (j.parent, gates.get(j.spec.alias, (None, 0))[0]) if a] for j in jobs}
    position = {j.spec.alias: i for i, j in enumerate(jobs)}
    by_alias = {j.spec.alias: j for j in jobs}
    return [by_alias[a] for a in resolve.ordered(graph, key=position.__getitem__)]
