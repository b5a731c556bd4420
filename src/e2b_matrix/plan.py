"""Compare resolved specs with the lock: fresh, stale (and why) or unbuilt."""

from __future__ import annotations

import enum

import attrs

from e2b_matrix.model import BuildSpec, LockEntry


class State(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"
    UNBUILT = "unbuilt"
    ORPHAN = "orphan"  # in the lock, no longer defined


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

    def to_json(self) -> dict:
        return {"name": self.name, "alias": self.alias, "state": self.state.value,
                "reasons": list(self.reasons), "fingerprint": self.fingerprint,
                "locked_fingerprint": self.locked_fingerprint, "template_id": self.template_id}


def plan_one(spec: BuildSpec, entry, staleness=lambda entry: None) -> PlanItem:
    """``staleness(entry)``: the backend's reason a locked artifact no longer stands (another domain,
    a removed image), or None."""
    common = dict(name=spec.name, alias=spec.alias, fingerprint=spec.fingerprint, spec=spec, entry=entry)
    if entry is None:
        return PlanItem(state=State.UNBUILT, reasons=("not in the lock",), **common)
    common.update(locked_fingerprint=entry.fingerprint, template_id=entry.template_id)
    reasons = explain(spec, entry) if entry.fingerprint != spec.fingerprint else []
    gone = staleness(entry)
    if gone:
        reasons.append(gone)
    return PlanItem(state=State.STALE if reasons else State.FRESH, reasons=tuple(reasons), **common)


def explain(spec: BuildSpec, entry) -> list[str]:
    """Why a spec differs from its lock entry, in the user's terms."""
    reasons = []
    old_layers, new_layers = dict(entry.layers), spec.layer_versions()
    for name in new_layers:
        if name not in old_layers:
            reasons.append(f"layer {name} added")
        elif old_layers[name] != new_layers[name]:
            reasons.append(f"layer {name} {old_layers[name]} -> {new_layers[name]}")
    reasons += [f"layer {name} removed" for name in old_layers if name not in new_layers]
    if entry.variant != spec.name:
        reasons.append(f"variant renamed {entry.variant} -> {spec.name}")
    old_inputs = dict(entry.inputs)
    new_inputs = spec.inputs()
    if old_inputs:
        for key in sorted(set(old_inputs) | set(new_inputs)):
            old, new = old_inputs.get(key), new_inputs.get(key)
            if old == new:
                continue
            layer = key.split(".")[0]
            # a layer version line already says it (nexus.version is its version)
            if key == "nexus.version" and any(r.startswith("layer nexus") for r in reasons):
                continue
            if old is None and (f"layer {layer} added" in reasons):
                continue
            if new is None and (f"layer {layer} removed" in reasons):
                continue
            what = {"base": "base", "cpu_count": "resource cpu_count", "memory_mb": "resource memory_mb",
                    "tags": "tags", "parent_build": "base template rebuilt"}.get(key, f"param {key}")
            reasons.append(f"{what} {old or '(none)'} -> {new or '(none)'}")
    if not reasons:
        reasons.append("build steps changed")
    return reasons


def make_plan(specs, entries, staleness=lambda entry: None) -> list[PlanItem]:
    """Each spec against its lock entry (``entries``: alias -> LockEntry)."""
    return [plan_one(s, entries.get(s.alias), staleness) for s in specs]


def orphans(entries, aliases) -> list[PlanItem]:
    defined = set(aliases)
    return [PlanItem(name=e.variant, alias=e.alias, state=State.ORPHAN,
                     reasons=("in the lock but no longer defined",), locked_fingerprint=e.fingerprint,
                     template_id=e.template_id, entry=e)
            for e in entries.values() if e.alias not in defined]
