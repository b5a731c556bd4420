"""The release-time bound: the least wall time of a cold build-all, from the step trie alone.

bench/scale.py divides the wall time of a cold build-all (the first build
request to the last build ready) by this bound. It is computed from the
variants' step trie (``e2b-matrix plan --json``: its ``steps``) and the step
costs the bench gives the emulator, never from a run, so no runner can beat it:
it holds for every runner that runs each distinct step once (the bench's
``scale_steps_ratio`` goal of 1.0) on a team of ``limit`` concurrent builds.

The model (e2b_matrix.emulator, after E2B's orchestrator):

- a build runs its steps one after the other; a step that misses the layer
  cache runs for its cost; its layer is published ``upload_s`` after it ends;
  a build is ready (and leaves the team's limit) once its last step has ended
  and all its layers are published;
- a build meets a step as a cache hit only once that step's layer is published;
- the base of every build (``FROM TEMPLATE``) is the parent's snapshot: every
  build has it at once.

Earliest starts. Every build starts at 0 or later, so a root (the base) starts
at 0. A step ``c`` after ``n`` runs in one of two ways. Either the build that
ran ``n`` goes on to it (its *continuation*): ``c`` starts when ``n`` ends;
one build runs one chain, so at most one child of ``n`` is run this way.
Or another build meets ``n`` as a cache hit, and ``c`` starts no earlier than
``n``'s release: its end plus ``upload_s``. (A runner that ran ``n`` a second
time could start ``c`` sooner, at the price of a step run twice.) The
children of a root all start at the root's end: nothing is released there.
So the earliest start of a step is its path's cost plus ``upload_s`` for each
edge of its path taken by another build; which child of a step is the
continuation is the runner's choice.

Slot time. A step occupies one of the team's ``limit`` slots for its cost.
A build that ends at a leaf step (a step with no child) is counted until its
layer is published: ``upload_s`` more. A runner can reuse a slot only once it
has seen the build end, which it learns from a status poll: each variant's
build counts ``poll_s`` more (the E2B backend's poll interval for a young
build), charged to the variant's last step. That one models the client, not
E2B: a poll that happens to land just after a build's end sees it sooner, so
bench/scale.py also gives the bound with ``poll_s = 0``, which no client beats.

The bound is the larger of two lower bounds, each minimised over every choice
of continuations (so it holds whatever the runner chooses):

- the critical path: the latest *earliest ready* of a variant, ``earliest
  start + cost + upload_s`` of its last step (a variant that ends on a step
  another build goes on from is still ready only once that step is published);
- the release-time bound: ``max over t of t + W(t) / limit``, where ``W(t)``
  is the slot time of the steps whose earliest start is ``t`` or later. All
  that work is done after ``t`` on at most ``limit`` slots at once. ``t`` runs
  over the earliest starts of the steps (``W`` only changes there). The
  polls of the builds that end last lie after the last build is ready, the
  end of the wall time; at most ``limit`` builds are running then. So ``W(t)``
  counts the polls of all but ``limit`` of the builds it covers.

For one ``t``, the least ``W(t)`` over the continuations comes from a walk of
the trie: at each step, every child's subtree is charged with a start after the
release, except the one child whose subtree then costs the most more; that
child is taken as the continuation. Its cost and its polls are minimised
separately, so the bound is at most the true least, never above it.

This module is pure (no I/O) and imports nothing of the project:
tests/test_bench_bound.py checks it on small tries worked out by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

EPS = 1e-9  # float sums of the same costs in another order: equal starts are equal


@dataclass(frozen=True)
class Step:
    """One distinct step (a layer-cache key) of the step trie."""

    cost: float  # seconds it runs on a cache miss
    ends: int = 0  # variants whose last step this is
    children: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Bound:
    """The bound and what it is made of (seconds)."""

    bound_s: float  # max(critical_s, release_s)
    critical_s: float  # the critical path, after releases
    release_s: float  # max over t of t + W(t) / limit
    at_s: float  # the t that gives release_s
    work_s: float  # W(t) at that t


def from_plan(segments: Iterable[dict[str, Any]], cost: Callable[[str, bool], float]) -> tuple[Step, ...]:
    """The roots of the trie ``e2b-matrix plan --json`` prints under "steps".

    Each segment is a run of steps the same variants share: {"steps": [text, ...], "variants": [name, ...],
    "children": [segment, ...]}; a root segment starts with the base. ``cost(text, is_base)``: a step's cost.
    """

    def chain(segment: dict[str, Any], first_is_base: bool) -> Step:
        below = {v for child in segment["children"] for v in child["variants"]}
        ends = len(set(segment["variants"]) - below)
        texts = segment["steps"]
        step = Step(
            cost(texts[-1], first_is_base and len(texts) == 1),
            ends,
            tuple(chain(child, False) for child in segment["children"]),
        )
        for i in range(len(texts) - 2, -1, -1):
            step = Step(cost(texts[i], first_is_base and i == 0), 0, (step,))
        return step

    return tuple(chain(segment, True) for segment in segments)


@dataclass(frozen=True)
class _Node:
    cost: float
    ends: int
    leaf: bool
    root: bool
    path: float  # the cost of the steps before it
    hops: int  # the steps before it (not a base) another build may have to wait for
    children: tuple[int, ...]


def _flatten(roots: Sequence[Step]) -> list[_Node]:
    nodes: list[_Node] = []

    def add(step: Step, path: float, hops: int, root: bool) -> int:
        index = len(nodes)
        nodes.append(_Node(step.cost, step.ends, not step.children, root, path, hops, ()))
        # a child waits for this step's release only if this step's build goes on to a sibling or ends here
        waits = hops + (not root and (len(step.children) > 1 or step.ends > 0))
        kids = tuple(add(child, path + step.cost, waits, False) for child in step.children)
        nodes[index] = _Node(step.cost, step.ends, not step.children, root, path, hops, kids)
        return index

    for root in roots:
        add(root, 0.0, 0, True)
    return nodes


def _least(nodes: list[_Node], roots: list[int], t: float, weight: Callable[[_Node], float], upload_s: float) -> float:
    """The least total ``weight`` of the steps whose earliest start is ``t`` or later, over every choice
    of continuations. A step reached through ``waits`` releases starts at ``path + waits * upload_s``."""

    @cache
    def least(i: int, waits: int) -> float:
        node = nodes[i]
        here = weight(node) if node.path + waits * upload_s >= t - EPS else 0.0
        if node.root:  # the base: every build has it at once
            return here + sum(least(c, waits) for c in node.children)
        released = [least(c, waits + 1) for c in node.children]
        saved = max((r - least(c, waits) for c, r in zip(node.children, released, strict=True)), default=0.0)
        return here + sum(released) - saved

    return sum(least(r, 0) for r in roots)


def _critical(nodes: list[_Node], i: int, upload_s: float) -> float:
    """From the start of step ``i``: the least time until its subtree's last variant is ready."""
    node = nodes[i]
    mine = node.cost + upload_s if node.ends and not node.root else node.cost
    below = sorted((_critical(nodes, c, upload_s) for c in node.children), reverse=True)
    if not below:
        return mine
    if node.root or len(below) == 1:
        return max(mine, node.cost + below[0])
    return max(mine, node.cost + max(below[0], below[1] + upload_s))  # the longest goes on, the rest wait


def release_bound(roots: Sequence[Step], limit: int, upload_s: float, poll_s: float) -> Bound:
    """The release-time bound (module docstring) of the trie ``roots`` on ``limit`` slots."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    nodes = _flatten(roots)
    tops = [i for i, n in enumerate(nodes) if n.root]
    critical = max((_critical(nodes, r, upload_s) for r in tops), default=0.0)
    starts = sorted({round(n.path + k * upload_s, 9) for n in nodes for k in range(n.hops + 1)})

    def slot(n: _Node) -> float:
        return n.cost + (upload_s if n.leaf and not n.root else 0.0)

    best = (0.0, 0.0, 0.0)  # (release, t, W)
    for t in starts:
        work = _least(nodes, tops, t, slot, upload_s)
        builds = _least(nodes, tops, t, lambda n: float(n.ends), upload_s)
        work += poll_s * max(0.0, builds - limit)
        if work > EPS and t + work / limit > best[0]:
            best = (t + work / limit, t, work)
    release, at, work = best
    return Bound(max(critical, release), critical, release, at, work)


def naive_bound(roots: Sequence[Step], limit: int, upload_s: float) -> float:
    """The bound bench/scale.py divided by before: max(the longest chain of steps plus one upload,
    the cost of every distinct step / limit), the bases excluded."""

    def chain(step: Step) -> float:
        return step.cost + max((chain(c) for c in step.children), default=0.0)

    def total(step: Step) -> float:
        return step.cost + sum(total(c) for c in step.children)

    longest = max((chain(r) - r.cost for r in roots), default=0.0) + upload_s
    return max(longest, sum(total(r) - r.cost for r in roots) / limit)
