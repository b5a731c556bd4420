"""Variant -> BuildSpec: layer order, parameters, pinned versions, fingerprint.

Pure given its inputs (the project, a package index, the lock): the same
inputs give the same specs and fingerprints on every machine.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

try:  # the same SHA-256 without loading OpenSSL (hashlib's import costs ~2.5 ms)
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import sha256

from e2b_matrix import readlog
from e2b_matrix.errors import ConfigError
from e2b_matrix.layers import SHIPPED
from e2b_matrix.model import BuildSpec, Context, Layer, ResolvedLayer, Step, Variant
from e2b_matrix.render import instructions

FINGERPRINT_SCHEMA = 1
_RANK = {name: i for i, name in enumerate(SHIPPED)}  # base, fuse, nexus, extra-tools


def layer_order(names: Iterable[str], layers: Mapping[str, Layer]) -> list[str]:
    """Topological order of a variant's layers from ``requires``.

    Ties go to the shipped order (base, fuse, nexus, extra-tools), then by
    name, so variants share their longest common prefix of steps (and E2B's
    layer cache) whatever order their files list the layers in.
    """
    names = list(names)
    chosen = set(names)
    deps = {n: {r for r in layers[n].requires if r in chosen} for n in names}
    users: dict[str, set[str]] = {n: set() for n in names}
    for n, ds in deps.items():
        for d in ds:
            users[d].add(n)
    key = lambda n: (_RANK.get(n, len(_RANK)), n)  # noqa: E731
    ready = [key(n) for n in names if not deps[n]]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for u in users[n]:
            deps[u].discard(n)
            if not deps[u]:
                heapq.heappush(ready, key(u))
    if len(order) != len(names):  # load_layers refuses cycles; keep the guard honest
        stuck = sorted(set(names) - set(order))
        raise ConfigError(f"layers require each other in a loop: {' -> '.join(stuck)}", key="variant.layers")
    return order


@attrs.define(slots=False)
class Resolver:
    """What layer ``resolve`` hooks may consult: the package index and the lock."""

    variant: Variant
    index: object = None
    offline: bool = False
    locked: Mapping[str, str] = attrs.field(factory=dict)  # layer -> version in the lock

    def locked_layer_version(self, layer: str) -> str | None:
        return self.locked.get(layer)

    def error(self, message: str, key: str) -> ConfigError:
        return ConfigError(message, path=self.variant.source, key=key)


@attrs.frozen(slots=False)
class Options:
    """What a run adds to the files: backend, index, offline mode, CA certificates."""

    backend: str = "e2b"
    index: object = None
    offline: bool = False
    ca_certs: tuple[tuple[str, bytes], ...] = ()  # (file name, content) for Docker builds


def build_spec(variant: Variant, layers: Mapping[str, Layer], options: Options = Options(),
               lock=None) -> BuildSpec:
    order = layer_order(variant.layers, layers)
    entry = _lock_entry(lock, variant.alias)
    resolver = Resolver(variant, options.index, options.offline, dict(entry.layers) if entry else {})

    base_layer = layers["base"] if "base" in order else None
    base_params = {**base_layer.defaults(), **variant.params_for("base")} if base_layer else {}
    if base_layer is None or base_layer.base is None:
        raise ConfigError("every variant starts from the base layer", path=variant.source, key="variant.layers")
    base = base_layer.base(base_params, options.backend)
    ctx = Context(backend=options.backend, python=base.python)

    resolved: list[ResolvedLayer] = []
    steps: list[Step] = []
    checks = []
    files: list[tuple[str, str]] = []
    for name in order:
        layer = layers[name]
        params = {**layer.defaults(), **variant.params_for(name)}
        if layer.resolve is not None:
            params = layer.resolve(params, ctx, resolver)
        resolved.append(ResolvedLayer(layer, params))
        if name == "base" and options.backend == "docker" and options.ca_certs:
            # render.dockerfile installs them right after FROM; their hashes
            # make them part of the Docker fingerprint.
            files += [(f"ca/{n}", sha256(data).hexdigest()) for n, data in options.ca_certs]
        steps += layer.steps(params, ctx)
        checks += [attrs.evolve(c, layer=name) for c in layer.checks(params, ctx) if ctx.backend in c.backends]

    spec = BuildSpec(
        variant=variant, backend=options.backend, layers=tuple(resolved), base=base, steps=tuple(steps),
        checks=tuple(checks), start_cmd=base_params.get("start_cmd") or None,
        ready_cmd=base_params.get("ready_cmd") or None, files=tuple(files),
        parent_build=_parent_build(lock, base),
    )
    return attrs.evolve(spec, fingerprint=fingerprint(spec))


def _lock_entry(lock, alias: str):
    if lock is None:
        return None
    return lock.entries.get(alias)


def _parent_build(lock, base) -> str | None:
    """from_template on a template this project built: its build ID is an input."""
    if lock is None or base.kind != "template":
        return None
    entry = lock.entries.get(base.ref)
    return entry.build_id if entry else None


def canonical(spec: BuildSpec) -> dict:
    """The build spec as data: exactly what the fingerprint covers (no secrets)."""
    doc = {
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
    return "sha256:" + sha256(text.encode()).hexdigest()


def build_specs(variants: Iterable[Variant], layers: Mapping[str, Layer], options: Options = Options(),
                lock=None) -> list[BuildSpec]:
    return [build_spec(v, layers, options, lock) for v in variants]


def read_ca_certs(paths: Iterable[str | Path]) -> tuple[tuple[str, bytes], ...]:
    out = []
    for p in paths:
        p = Path(p)
        try:
            data = p.read_bytes()
            readlog.note_file(p, data)
        except OSError as exc:
            raise ConfigError(f"cannot read CA certificate: {exc.strerror}", path=p, key="--ca-cert") from None
        if b"BEGIN CERTIFICATE" not in data:
            raise ConfigError("not a PEM certificate", path=p, key="--ca-cert")
        out.append((p.stem + ".crt", data))
    return tuple(sorted(out))
