"""Compare resolved specs with the lock: fresh, stale (and why) or unbuilt."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict

import attrs

from e2b_matrix import pins
from e2b_matrix.model import BuildSpec, State
from e2b_matrix.render import Instruction, instructions, template_source

if TYPE_CHECKING:  # the lock depends on the model; planning reads entries, never imports the lock
    from e2b_matrix.lock.model import LockEntry


# The backend's reason a locked artifact no longer stands (another domain, a removed image), or None.
Staleness = Callable[["LockEntry"], str | None]


def _never_stale(entry: LockEntry) -> str | None:
    return None


class PlanItemJSON(TypedDict):
    """A variant's line of ``plan --json`` (docs/schemas/plan.schema.json)."""

    name: str
    alias: str
    state: str
    reasons: list[str]
    python: str | None
    layers: dict[str, str]
    fingerprint: str
    locked_fingerprint: str
    template_id: str


@attrs.frozen(slots=False)
class PlanItem:
    name: str
    alias: str
    state: State
    reasons: tuple[str, ...] = ()
    fingerprint: str = ""
    locked_fingerprint: str = ""
    template_id: str = ""
    spec: BuildSpec | None = attrs.field(default=None, eq=False, repr=False)
    entry: LockEntry | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def python(self) -> str | None:
        """The base's Python the layers were resolved for (None: an orphan, nothing to build)."""
        return self.spec.base.python if self.spec else None

    @property
    def layers(self) -> dict[str, str]:
        """Each layer's version exactly as a build would record it in the lock ("latest" resolved)."""
        return self.spec.layer_versions() if self.spec else {}

    def to_json(self) -> PlanItemJSON:
        return {
            "name": self.name,
            "alias": self.alias,
            "state": self.state.value,
            "reasons": list(self.reasons),
            "python": self.python,
            "layers": self.layers,
            "fingerprint": self.fingerprint,
            "locked_fingerprint": self.locked_fingerprint,
            "template_id": self.template_id,
        }


def plan_one(spec: BuildSpec, entry: LockEntry | None, staleness: Staleness = _never_stale) -> PlanItem:
    """The spec against its lock entry (None: not in the lock); ``staleness(entry)``: the backend's
    reason a locked artifact no longer stands, or None."""
    unpinned = pins.reasons(spec)  # a requirements file missing or out of date: nothing can build it as is
    if entry is None:
        reasons = ("not in the lock", *unpinned)
        return PlanItem(spec.name, spec.alias, State.UNBUILT, reasons, spec.fingerprint, spec=spec)
    found = explain(spec, entry) if entry.fingerprint != spec.fingerprint else []
    found += [r for r in unpinned if r not in found]
    gone = staleness(entry)
    if gone:
        found.append(gone)
    return PlanItem(
        spec.name,
        spec.alias,
        State.STALE if found else State.FRESH,
        tuple(found),
        spec.fingerprint,
        entry.fingerprint,
        entry.template_id,
        spec=spec,
        entry=entry,
    )


def explain(spec: BuildSpec, entry: LockEntry) -> list[str]:
    """Why a spec differs from its lock entry, in the user's terms."""
    reasons = _layer_changes(dict(entry.layers), spec.layer_versions())
    if entry.variant != spec.name:
        reasons.append(f"variant renamed {entry.variant} -> {spec.name}")
    if entry.inputs:
        reasons += _input_changes(dict(entry.inputs), spec.inputs(), reasons)
    if not reasons and not any(r.problem for r in spec.requirements):  # else plan_one names the file
        reasons.append("build steps changed")
    return reasons


def _layer_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Layers added, moved to another version, and removed."""
    reasons: list[str] = []
    for name in new:
        if name not in old:
            reasons.append(f"layer {name} added")
        elif old[name] != new[name]:
            reasons.append(f"layer {name} {old[name]} -> {new[name]}")
    return reasons + [f"layer {name} removed" for name in old if name not in new]


_INPUT_NAMES = {
    "base": "base",
    "cpu_count": "resource cpu_count",
    "memory_mb": "resource memory_mb",
    "tags": "tags",
    "parent_build": "base template rebuilt",
}


def _input_changes(old_inputs: Mapping[str, str], new_inputs: Mapping[str, str], said: list[str]) -> list[str]:
    """Each input (spec.inputs) that changed, unless a reason ``said`` already says it: a layer's
    version line (nexus.version is its version), a layer added or removed."""
    reasons: list[str] = []
    for key in sorted(set(old_inputs) | set(new_inputs)):
        old, new = old_inputs.get(key), new_inputs.get(key)
        if old == new:
            continue
        layer = key.split(".")[0]
        if key == "nexus.version" and any(r.startswith("layer nexus") for r in said):
            continue
        if (old is None and f"layer {layer} added" in said) or (new is None and f"layer {layer} removed" in said):
            continue
        if key.startswith("requirements."):
            if not (new or "").endswith("@(missing)"):  # a missing file is named with what to run (plan_one)
                reasons.append(_requirements_change(old, new))
            continue
        reasons.append(f"{_INPUT_NAMES.get(key, f'param {key}')} {old or '(none)'} -> {new or '(none)'}")
    return reasons


def _requirements_change(old: str | None, new: str | None) -> str:
    """A pip step's requirements file, as the lock recorded it (``path@digest``) and as it is now."""
    old_path, new_path = (v.rsplit("@", 1)[0] if v else None for v in (old, new))
    if old_path is None:
        return f"{new_path} added"
    if new_path is None:
        return f"{old_path} removed"
    if old_path == new_path:
        return f"{new_path} changed"
    return f"requirements {old_path} -> {new_path}"


def make_plan(
    specs: Iterable[BuildSpec], entries: Mapping[str, LockEntry], staleness: Staleness = _never_stale
) -> list[PlanItem]:
    """Each spec against its lock entry (``entries``: alias -> LockEntry)."""
    return [plan_one(s, entries.get(s.alias), staleness) for s in specs]


def orphans(entries: Mapping[str, LockEntry], aliases: Iterable[str]) -> list[PlanItem]:
    defined = set(aliases)
    return [
        PlanItem(
            name=e.variant,
            alias=e.alias,
            state=State.ORPHAN,
            reasons=("in the lock but no longer defined",),
            locked_fingerprint=e.fingerprint,
            template_id=e.template_id,
            entry=e,
        )
        for e in entries.values()
        if e.alias not in defined
    ]


# -- the step trie: which variants share which leading steps -------------------------


@attrs.define(eq=False)
class Node:
    """One build step (or the base) as the layer cache sees it: a step's identity is its own
    text on its parent's. ``variants``: the names whose builds pass through it, in plan order."""

    key: str
    text: str
    depth: int  # 0: the base; n: the n-th step
    variants: list[str] = attrs.field(factory=list)
    children: list[Node] = attrs.field(factory=list)


_APT = re.compile(r"apt-get update && .*?apt-get install -y ")


def _step_text(ins: Instruction) -> str:
    args = ins["args"][:1] if ins["type"] == "RUN" else [a for a in ins["args"] if a]  # not RUN's user
    return _APT.sub("apt-get install ", f"{ins['type']} {' '.join(args)}".strip())


def step_trie(specs: Iterable[BuildSpec]) -> list[Node]:
    """The specs' steps as a trie (one root per base): what each change would rebuild."""
    roots: dict[str, Node] = {}
    for spec in specs:
        source = template_source(spec) if spec.base.kind == "template" else spec.base.ref
        # a file a step copies is keyed at that step (E2B: the COPY's files hash); others at the base
        digests, copied = dict(spec.files), {r.path for r in spec.requirements}
        base_key = json.dumps([spec.base.kind, source, sorted(f for f in spec.files if f[0] not in copied)])
        node = roots.get(base_key)
        if node is None:
            node = roots[base_key] = Node(base_key, f"FROM {source}", 0)
        node.variants.append(spec.name)
        for ins in instructions(spec.steps):
            key = json.dumps([ins, digests.get(ins["args"][0]) if ins["type"] == "COPY" else None], sort_keys=True)
            child = next((c for c in node.children if c.key == key), None)
            if child is None:
                child = Node(key, _step_text(ins), node.depth + 1)
                node.children.append(child)
            child.variants.append(spec.name)
            node = child
    return list(roots.values())


def segments(node: Node) -> tuple[list[Node], list[Node]]:
    """The chain of nodes from ``node`` that the same variants share, and the branches after it."""
    chain = [node]
    while len(chain[-1].children) == 1 and chain[-1].children[0].variants == node.variants:
        chain.append(chain[-1].children[0])
    return chain, chain[-1].children


class TrieJSON(TypedDict):
    """A run of steps the same variants share, and the branches after it (``plan --json``'s steps)."""

    steps: list[str]
    variants: list[str]
    children: list[TrieJSON]


def trie_json(node: Node) -> TrieJSON:
    """A node as JSON: the run of steps the same variants share, and the branches after it."""
    chain, branches = segments(node)
    return {
        "steps": [n.text for n in chain],
        "variants": list(node.variants),
        "children": [trie_json(b) for b in branches],
    }


class PlanJSON(TypedDict):
    """What ``plan --json`` prints (docs/schemas/plan.schema.json)."""

    variants: list[PlanItemJSON]
    steps: list[TrieJSON]


@attrs.frozen
class Plan:
    """What ``plan`` says: each variant against the lock, the steps they share (the step trie), and the
    used disk of each locked build whose inventory says it (KiB, by alias)."""

    items: tuple[PlanItem, ...]
    roots: tuple[Node, ...]
    disk_used_kib: Mapping[str, int] = attrs.field(factory=dict)

    def to_json(self) -> PlanJSON:
        return {"variants": [i.to_json() for i in self.items], "steps": [trie_json(r) for r in self.roots]}


def trie_lines(roots: list[Node], width: int = 70) -> list[str]:
    """The trie as an indented tree: each line a run of steps the same variants share."""
    lines: list[str] = []

    def walk(node: Node, prefix: str, last: bool, top: bool) -> None:
        chain, branches = segments(node)
        text = chain[0].text if len(chain[0].text) <= width else chain[0].text[: width - 1] + "…"
        if len(chain) > 1:
            text += f" (+{len(chain) - 1} steps)"
        head = "" if top else prefix + ("└─ " if last else "├─ ")
        lines.append(f"{head}{text}  [{', '.join(node.variants)}]")
        inner = prefix if top else prefix + ("   " if last else "│  ")
        for i, b in enumerate(branches):
            walk(b, inner, i == len(branches) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return lines


def markdown(items: Sequence[PlanItem], roots: list[Node], sizes: Mapping[str, str] | None = None) -> str:
    """The plan for a pull request's job summary: a table (each variant's last known size, from the
    inventory of its locked build) and the step tree."""
    sizes = sizes or {}
    rows = ["| variant | alias | state | size | why |", "|---|---|---|---|---|"]
    rows += [
        f"| {i.name} | `{i.alias}` | **{i.state.value}** | {sizes.get(i.alias, '-')} | {'; '.join(i.reasons) or '-'} |"
        for i in items
    ]
    changed = sum(i.state is not State.FRESH for i in items)
    head = f"### e2b-matrix plan: {changed} of {len(items)} variants would build\n"
    tree = "\n".join(trie_lines(roots))
    return (
        f"{head}\n" + "\n".join(rows) + f"\n\nShared steps (a change rebuilds what is below it):\n\n```\n{tree}\n```\n"
    )
