"""Variants -> BuildSpecs: matrix expansion, layer order, parameters, pinned versions, fingerprint.

Pure given its inputs (the variant, the layers, the backend's rules, the
package index's answers, the lock entries): the same inputs give the same specs
and fingerprints on every machine. Every ordering is graphlib's.
"""

from __future__ import annotations

import graphlib
import hashlib
import heapq
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict, TypeVar

import attrs

from e2b_matrix.backends import Backend
from e2b_matrix.errors import ConfigError
from e2b_matrix.index import PackageIndex
from e2b_matrix.layers import SHIPPED
from e2b_matrix.layers.base import installed
from e2b_matrix.model import BuildSpec, Check, Context, Layer, ResolvedLayer, Step, Variant
from e2b_matrix.pins import Answers, files_of, pin_steps
from e2b_matrix.render import Instruction, instructions

if TYPE_CHECKING:  # the lock depends on the model; planning reads entries, never imports the lock
    from e2b_matrix.lock.model import LockEntry


class _Sortable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


_K = TypeVar("_K", bound=_Sortable)  # what a tie-break key gives: anything heapq can order
# A matrix axis's value (config.py takes strings and numbers), and one case: a value for each axis.
MatrixValue = str | int | float
Case = dict[str, MatrixValue]

FINGERPRINT_SCHEMA = 1
_RANK = {name: i for i, name in enumerate(SHIPPED)}  # base, fuse, nexus, extra-tools


# -- matrix ------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


MAX_MATRIX_CASES = 10_000


def matrix_size(axes: Mapping[str, tuple[MatrixValue, ...]]) -> int:
    """How many cases ``axes`` expand to (the product of their lengths), without expanding them."""
    return math.prod(len(values) for values in axes.values())


def matrix_cases(axes: Mapping[str, tuple[MatrixValue, ...]]) -> list[Case]:
    """Every combination of the axes' values, axes sorted: a pure, stable expansion.

    ValueError, before expanding anything, when there would be more than MAX_MATRIX_CASES.
    """
    size = matrix_size(axes)
    if size > MAX_MATRIX_CASES:
        raise ValueError(f"expands to {size} cases; the limit is {MAX_MATRIX_CASES}")
    names = sorted(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(axes[n] for n in names))]


def name_safe(value: MatrixValue) -> str:
    """A matrix value as it may appear in an E2B name: '0.5.6' -> '0-5-6'."""
    return re.sub(r"[^a-z0-9-_]+", "-", str(value).lower()).strip("-") or "x"


def substitute(value: Any, case: Mapping[str, MatrixValue], for_name: bool = False) -> Any:
    """``{axis}`` replaced by the case's value (``{{``/``}}`` give literal braces), in strings,
    lists and tables (``value``: any TOML value); KeyError naming an unknown axis. A string that is
    exactly one placeholder keeps the value's type."""
    if isinstance(value, list):
        return [substitute(v, case, for_name) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, case, for_name) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    whole = _PLACEHOLDER.fullmatch(value)
    if whole and whole.group(1) in case and not for_name:
        return case[whole.group(1)]

    def repl(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group()[0]
        if m.group(1) not in case:
            raise KeyError(m.group(1))
        return name_safe(case[m.group(1)]) if for_name else str(case[m.group(1)])

    return _PLACEHOLDER.sub(repl, value)


# -- order -------------------------------------------------------------------------


def ordered(graph: Mapping[str, Iterable[str]], key: Callable[[str], _K]) -> list[str]:
    """graphlib's topological order, ties broken by ``key``; CycleError names the loop."""
    ts = graphlib.TopologicalSorter(graph)
    ts.prepare()
    ready = [(key(n), n) for n in ts.get_ready()]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        ts.done(n)
        for m in ts.get_ready():
            heapq.heappush(ready, (key(m), m))
    return order


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """The loop in a dependency graph (as ``a -> b -> a``), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def layer_order(names: Iterable[str], layers: Mapping[str, Layer]) -> list[str]:
    """Topological order of a variant's layers from ``requires``.

    Ties go to the shipped order (base, fuse, nexus, extra-tools), then by
    name, so variants share their longest common prefix of steps (and the
    layer cache) whatever order their files list the layers in.
    """
    chosen = set(names)
    graph = {n: [r for r in layers[n].requires if r in chosen] for n in chosen}
    return ordered(graph, key=lambda n: (_RANK.get(n, len(_RANK)), n))


def build_order(specs: Iterable[BuildSpec]) -> list[BuildSpec]:
    """Specs with every parent (a variant another is built on) before its children."""
    specs = list(specs)
    by_alias = {s.alias: s for s in specs}
    graph = {s.alias: [p] if (p := parent_alias(s, by_alias)) else [] for s in specs}
    cycle = find_cycle(graph)
    if cycle:
        raise ConfigError(
            f"variants are built on each other in a loop: {' -> '.join(cycle)}",
            path=by_alias[cycle[0]].variant.source,
            key="params.base.template",
        )
    position = {s.alias: i for i, s in enumerate(specs)}
    return [by_alias[a] for a in ordered(graph, key=position.__getitem__)]


def parent_alias(spec: BuildSpec, aliases: Iterable[str]) -> str | None:
    """The alias of a variant of this project that ``spec`` is built on (from_template), if any."""
    return spec.base.ref if spec.base.kind == "template" and spec.base.ref in aliases else None


# -- specs -------------------------------------------------------------------------


@attrs.frozen
class Resolver:
    """What layer ``resolve`` hooks may consult: the package index (asked through uv) and the lock."""

    variant: Variant
    index: PackageIndex | None = None
    offline: bool = False
    locked: Mapping[str, str] = attrs.field(factory=dict)  # layer -> version in the lock

    def locked_layer_version(self, layer: str) -> str | None:
        return self.locked.get(layer)

    def error(self, message: str, key: str) -> ConfigError:
        return ConfigError(message, path=self.variant.source, key=key)


def build_spec(
    variant: Variant,
    layers: Mapping[str, Layer],
    backend: Backend,
    index: PackageIndex | None = None,
    offline: bool = False,
    entries: Mapping[str, LockEntry] | None = None,
    *,
    pins: Answers,
) -> BuildSpec:
    """One variant resolved for ``backend`` (its base rule, files and checks) against the lock's ``entries``.

    ``pins`` answers each pip step with its requirements file (pins.Committed reads the committed
    files, pins.Compiler compiles them): the step becomes a copy of the file and a hashed install.
    """
    entries = entries or {}
    order = layer_order(variant.layers, layers)
    if "base" not in order:
        raise ConfigError("every variant starts from the base layer", path=variant.source, key="variant.layers")
    entry = entries.get(variant.alias)
    resolver = Resolver(variant, index, offline, dict(entry.layers) if entry else {})
    base_params = {**layers["base"].defaults(), **variant.params_for("base")}
    base = backend.base(base_params)
    resolved, steps, checks = _resolve_layers(variant, order, layers, backend, Context(base=base), resolver)
    pinned_steps, requirements = pin_steps(variant, steps, base, pins, installed=installed(base))
    parent = entries.get(base.ref) if base.kind == "template" else None
    spec = BuildSpec(
        variant=variant,
        backend=backend.name,
        layers=resolved,
        base=base,
        steps=pinned_steps,
        checks=checks,
        start_cmd=base_params.get("start_cmd") or None,
        ready_cmd=base_params.get("ready_cmd") or None,
        files=tuple(backend.files()) + files_of(requirements),
        parent_build=parent.build_id if parent else None,
        requirements=requirements,
    )
    return attrs.evolve(spec, fingerprint=fingerprint(spec))


def _resolve_layers(
    variant: Variant,
    order: Iterable[str],
    layers: Mapping[str, Layer],
    backend: Backend,
    ctx: Context,
    resolver: Resolver,
) -> tuple[tuple[ResolvedLayer, ...], list[tuple[str, Step]], tuple[Check, ...]]:
    """The variant's layers (in ``order``), each with its parameters (its defaults, the variant's values,
    then its ``resolve`` hook), with the steps it adds (by layer name) and the checks ``backend`` runs."""
    resolved: list[ResolvedLayer] = []
    steps: list[tuple[str, Step]] = []
    checks: list[Check] = []
    for name in order:
        layer = layers[name]
        params = {**layer.defaults(), **variant.params_for(name)}
        if layer.resolve is not None:
            params = layer.resolve(params, ctx, resolver)
        resolved.append(ResolvedLayer(layer, params))
        steps += [(name, step) for step in layer.steps(params, ctx)]
        checks += [attrs.evolve(c, layer=name) for c in layer.checks(params, ctx) if backend.runs(c)]
    return tuple(resolved), steps, tuple(checks)


def rebase(spec: BuildSpec, parent_build: str) -> BuildSpec:
    """The spec on a new build of its parent template (built earlier in this run)."""
    spec = attrs.evolve(spec, parent_build=parent_build)
    return attrs.evolve(spec, fingerprint=fingerprint(spec))


# What a fingerprint covers (``canonical``); "from" is a keyword, hence this spelling.
Canonical = TypedDict(
    "Canonical",
    {
        "schema": int,
        "from": dict[str, str],
        "steps": list[Instruction],
        "start_cmd": str | None,
        "ready_cmd": str | None,
        "cpu_count": int,
        "memory_mb": int,
        "tags": list[str],
        "files": list[tuple[str, str]],
        "parent_build": NotRequired[str],
    },
)


def canonical(spec: BuildSpec) -> Canonical:
    """The build spec as data: exactly what the fingerprint covers (no secrets)."""
    doc: Canonical = {
        "schema": FINGERPRINT_SCHEMA,
        "from": {"kind": spec.base.kind, "ref": spec.base.ref},
        "steps": instructions(spec.steps),
        "start_cmd": spec.start_cmd,
        "ready_cmd": spec.ready_cmd,
        "cpu_count": spec.variant.cpu_count,
        "memory_mb": spec.variant.memory_mb,
        "tags": sorted(spec.variant.tags),
        "files": sorted(spec.files),
    }
    if spec.parent_build:
        doc["parent_build"] = spec.parent_build
    return doc


def fingerprint(spec: BuildSpec) -> str:
    text = json.dumps(canonical(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
