"""The data model: frozen attrs classes, the only shapes data flows through.

files -> Variant/Layer -> BuildSpec (resolved) -> backend -> BuildResult -> LockEntry.
Nothing here imports e2b or click; the lock reader (and so the Nexus
server) imports this module, so it stays light.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from e2b_matrix import names

HISTORY_LIMIT = 5  # builds a lock entry remembers for rollback


def _tuple(value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        return (value,)
    return tuple(value)


class Pairs(tuple):
    """A frozen mapping: sorted (key, value) pairs, told apart from a frozen list."""


def _frozen_mapping(value) -> Pairs:
    """A mapping as sorted (key, value) pairs: hashable, order-free."""
    if value is None:
        return Pairs()
    items = value.items() if isinstance(value, Mapping) else value
    return Pairs(sorted((str(k), _freeze(v)) for k, v in items))


def _freeze(value):
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return _frozen_mapping(value)
    return value


def thaw(value):
    """The inverse of freezing: Pairs -> dict, tuple -> list (what the SDK's calls take)."""
    if isinstance(value, Pairs):
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@attrs.frozen(slots=False)
class Step:
    """One E2B Template SDK builder call, e.g. ``Step("apt_install", (("fuse",),))``.

    ``call`` names the builder method; ``args`` and ``kwargs`` are what it is
    called with. render.py turns a step into the SDK call, into the exact
    instruction the SDK would send (without importing e2b), and into
    Dockerfile lines.
    """

    call: str
    args: tuple = attrs.field(default=(), converter=_freeze)
    kwargs: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_frozen_mapping)

    @property
    def kw(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def call_args(self) -> tuple[tuple, dict[str, Any]]:
        """(args, kwargs) as the SDK builder method takes them."""
        return tuple(thaw(a) for a in self.args), {k: thaw(v) for k, v in self.kwargs}


def run(command: str, user: str | None = None) -> Step:
    return Step("run_cmd", (command,), {"user": user} if user else {})


def apt(packages) -> Step:
    return Step("apt_install", (tuple(packages),))


def pip(packages) -> Step:
    return Step("pip_install", (tuple(packages),))


@attrs.frozen(slots=False)
class Check:
    """A smoke check that proves a layer worked in a built artifact.

    Either a shell ``command`` (passes when it exits 0 and, if ``expect`` is
    set, its output contains it) or Python ``cells`` run one after another in
    one stateful kernel (E2B's code interpreter), the last one's text
    containing ``expect``. A version check (``version``, e.g. "3.13") passes
    only when the first version in the output is a release of it, and
    reports the version it found as the fact ``fact`` (e.g. "python").
    """

    name: str
    command: str | None = None
    cells: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    expect: str | None = None
    user: str = "user"
    devices: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    layer: str = ""
    version: str | None = None
    fact: str = ""
    capture: bool = False  # an inventory check: its output is recorded as ``fact``, not judged

    @property
    def stateful(self) -> bool:
        return bool(self.cells)


@attrs.frozen(slots=False)
class Base:
    """Where a template starts: another E2B template, or an image."""

    kind: str = attrs.field(validator=attrs.validators.in_(("template", "image")))
    ref: str
    python: str  # the base's Python (major.minor); decides which nexus it can run

    def describe(self) -> str:
        return f"{self.kind} {self.ref}"


@attrs.frozen(slots=False)
class Param:
    """A layer parameter: its default and how a value from a file is checked.

    ``check(value)`` returns the converted value or raises ValueError with a
    message saying what is wrong (the config loader adds file and key).
    """

    name: str
    default: Any
    doc: str = ""
    check: Callable[[Any], Any] | None = None

    def convert(self, value):
        return self.check(value) if self.check else value


@attrs.frozen(slots=False)
class Context:
    """What a layer's steps may depend on besides its parameters: where the template starts."""

    base: Base

    @property
    def python(self) -> str:
        return self.base.python


@attrs.frozen(slots=False)
class Layer:
    """A named, versioned unit of build steps with parameters and checks.

    ``steps(params, ctx)`` and ``checks(params, ctx)`` are pure functions of
    the layer's resolved parameters. The base layer also gives ``base(params,
    ctx)`` (the template's starting point) and ``python(params, backend)``.
    """

    name: str
    version: str
    requires: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    params: tuple[Param, ...] = attrs.field(default=(), converter=_tuple)
    steps: Callable[[Mapping, Context], tuple[Step, ...]] = lambda p, c: ()
    checks: Callable[[Mapping, Context], tuple[Check, ...]] = lambda p, c: ()
    description: str = ""
    # What the lock records for this layer; nexus records its package version.
    recorded_version: Callable[[Mapping], str] | None = None
    # Turns parameters into concrete ones at plan time (nexus: "latest" -> x.y.z).
    resolve: Callable[[dict, Context, Any], dict] | None = None
    source: str = "<built-in>"

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def lock_version(self, params: Mapping) -> str:
        if self.recorded_version is not None:
            return self.recorded_version(params)
        return self.version


@attrs.frozen(slots=False)
class Variant:
    """One template to build, as written in variants/*.toml (after [matrix])."""

    name: str
    alias: str
    layers: tuple[str, ...] = attrs.field(converter=_tuple)
    cpu_count: int = 2
    memory_mb: int = 2048
    tags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    # {layer: {param: value}} as sorted pairs, values as written
    params: tuple = attrs.field(default=(), converter=_frozen_mapping)
    description: str = ""
    source: str = ""  # the file it came from

    def params_for(self, layer: str) -> dict[str, Any]:
        for name, pairs in self.params:
            if name == layer:
                return dict(pairs)
        return {}


@attrs.frozen(slots=False)
class ResolvedLayer:
    layer: Layer
    params: tuple = attrs.field(converter=_frozen_mapping)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def lock_version(self) -> str:
        return self.layer.lock_version(self.values)


@attrs.frozen(slots=False)
class Requirements:
    """A pip step's committed requirements file (pins.py): the question it answers and the answer.

    The question is what the step asks for (``asks``) for the base's ``python`` on ``platform``,
    constrained by what the base and the earlier steps install (``constraints``, ``name==version``);
    ``identity`` hashes it and names the file (``path``). ``content`` is the file as committed
    (None when missing); ``problem`` says why it cannot be installed as is ("" when it can).
    """

    layer: str
    key: str                        # the spec input that records it: "requirements.nexus"
    asks: tuple[str, ...] = attrs.field(converter=_tuple)
    python: str
    platform: str
    constraints: tuple[str, ...] = attrs.field(converter=_tuple)
    identity: str
    path: str                       # "requirements/nexus-<identity[:12]>.txt", relative to the project
    content: bytes | None = attrs.field(default=None, eq=False, repr=False)
    digest: str = ""                # sha256 of content
    pinned: tuple[str, ...] = attrs.field(default=(), converter=_tuple, eq=False, repr=False)  # name==version
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.content is not None and not self.problem


@attrs.frozen(slots=False)
class BuildSpec:
    """A variant resolved for one backend: everything a build needs, nothing else."""

    variant: Variant
    backend: str
    layers: tuple[ResolvedLayer, ...]
    base: Base
    steps: tuple[Step, ...]
    checks: tuple[Check, ...]
    start_cmd: str | None = None
    ready_cmd: str | None = None
    # Content hashes of the files a build takes: the backend's (CA certificates) and the
    # requirements files the steps copy.
    files: tuple[tuple[str, str], ...] = ()
    # Build ID of a parent template built by this project (from_template on one
    # of our aliases): E2B resolves it at submit time, so it is an input.
    parent_build: str | None = None
    fingerprint: str = ""
    # Each pip step's requirements file, in step order (pins.py).
    requirements: tuple[Requirements, ...] = ()

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def alias(self) -> str:
        return self.variant.alias

    def layer_versions(self) -> dict[str, str]:
        return {rl.name: rl.lock_version for rl in self.layers}

    def inputs(self) -> dict[str, str]:
        """Flat, human-comparable inputs: what plan explains a change with."""
        out = {"base": self.base.describe(), "cpu_count": str(self.variant.cpu_count),
               "memory_mb": str(self.variant.memory_mb), "tags": ",".join(self.variant.tags)}
        for rl in self.layers:
            for key, value in rl.params:
                out[f"{rl.name}.{key}"] = value if isinstance(value, str) else json.dumps(value)
        for r in self.requirements:
            out[r.key] = f"{r.path}@{r.digest[:12] or '(missing)'}"
        if self.parent_build:
            out["parent_build"] = self.parent_build
        return out


class State(enum.Enum):
    """Where a variant stands: the one set of states the plan, the runner, the reporters and
    the results share.

    In a plan: fresh, stale, unbuilt (orphan: in the lock, no longer defined). While a run
    goes: compiling, queued, waiting, building, retrying, verifying, promoting. How it ended
    (``final``): fresh (unchanged since its lock entry, nothing done), built, failed,
    cancelled, skipped (not started: fail-fast, an interrupt, its parent failed).
    """

    FRESH = "fresh"
    STALE = "stale"
    UNBUILT = "unbuilt"
    ORPHAN = "orphan"
    COMPILING = "compiling"
    QUEUED = "queued"
    WAITING = "waiting"
    BUILDING = "building"
    RETRYING = "retrying"
    VERIFYING = "verifying"
    PROMOTING = "promoting"
    BUILT = "built"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        return self in (State.FRESH, State.BUILT)

    @property
    def final(self) -> bool:
        """How a run ended for a variant."""
        return self in (State.FRESH, State.BUILT, State.FAILED, State.CANCELLED, State.SKIPPED)


@attrs.frozen(slots=False)
class BuildResult:
    name: str
    alias: str
    status: State
    template_id: str = ""
    build_id: str = ""
    duration_s: float = 0.0
    error: str = ""
    attempts: int = 0
    image: str = ""


@attrs.frozen(slots=False)
class Outcome:
    """What a backend built: the template (or image) and the build."""

    template_id: str
    build_id: str
    image: str = ""
    domain: str = ""
    api_url: str = ""  # E2B_API_URL, when the build went there


# -- the lock's values -----------------------------------------------------------

class FrozenMap(Mapping):
    """A read-only, hashable str -> str mapping, its keys sorted."""

    __slots__ = ("_d",)

    def __init__(self, items=()):
        pairs = items.items() if type(items) is dict or isinstance(items, Mapping) else items
        self._d = dict(sorted(pairs))

    def __getitem__(self, key):
        return self._d[key]

    def __contains__(self, key) -> bool:
        return key in self._d

    def get(self, key, default=None):
        return self._d.get(key, default)

    def keys(self):  # the dict's read-only views: Mapping's generic ones look every key up again
        return self._d.keys()

    def values(self):
        return self._d.values()

    def items(self):
        return self._d.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __eq__(self, other):
        return self._d == dict(other) if isinstance(other, Mapping) else NotImplemented

    def __hash__(self):
        return hash(tuple(self._d.items()))

    def __repr__(self):
        return repr(self._d)

    def __reduce__(self):
        return FrozenMap, (self._d,)


def _frozen_map(value) -> FrozenMap:
    return value if type(value) is FrozenMap else FrozenMap(value or {})


def _utc(value: dt.datetime) -> dt.datetime:
    try:
        return names.check_timestamp(value)
    except ValueError as exc:
        raise ValueError(f"built_at: {exc}") from None


_show_key = names.show_key


def _valid(check: Callable[[Any], Any]):
    """An attrs validator from a names.check_*: its ValueError is prefixed with the field's name."""

    def validate(inst, attribute, value) -> None:
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"{attribute.name}: {exc}") from None

    return validate


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: value if value == "" else check(value)


def _map_of(key_check: Callable[[Any], Any], value_check: Callable[[Any], Any]):
    """A validator of a str -> str map: each key and value by its check, the error naming ``field.key``."""

    def validate(inst, attribute, value: FrozenMap) -> None:
        for k, v in value.items():
            try:
                key_check(k)
            except ValueError as exc:
                raise ValueError(f"{attribute.name}.{_show_key(k)}: bad key: {exc}") from None
            try:
                value_check(v)
            except ValueError as exc:
                raise ValueError(f"{attribute.name}.{_show_key(k)}: {exc}") from None

    return validate


# Every value a lock may hold, checked by the rules the project's own files are checked by
# (names.py): whatever a lock says reaches a build step, a shell or a terminal only through these.
_LAYERS = _map_of(names.check_layer_name, names.check_layer_version)
_INPUTS = _map_of(names.check_input_key, names.check_text)
_CHANNELS = _map_of(names.check_tag, names.check_lock_id)


@attrs.frozen(slots=False)
class Build:
    """A previous build of a lock entry's alias: what rollback returns to.

    ``template_id`` only when it differs from the entry's (a Docker image ID does; an E2B one does not).
    """

    build_id: str = attrs.field(validator=_valid(names.check_lock_id))
    fingerprint: str = attrs.field(validator=_valid(names.check_fingerprint))
    built_at: dt.datetime = attrs.field(converter=_utc)
    layers: FrozenMap = attrs.field(factory=FrozenMap, converter=_frozen_map, validator=_LAYERS)
    image: str = attrs.field(default="", validator=_valid(_optional(names.check_image)))
    template_id: str = attrs.field(default="", validator=_valid(_optional(names.check_lock_id)))


@attrs.frozen(slots=False)
class LockEntry:
    """One built template, as the lock records it under ``[templates.<alias>]``.

    ``reference`` is the pinned build (``<template_id>:<build_id>``): what the
    Nexus server hands to ``Sandbox.create``. ``channels`` maps each E2B tag
    this tool promoted to the build ID it points at; ``history`` holds the
    previous builds, newest first.
    """

    alias: str = attrs.field(validator=_valid(names.check_alias))
    variant: str = attrs.field(validator=_valid(names.check_name))
    template_id: str = attrs.field(validator=_valid(names.check_lock_id))
    build_id: str = attrs.field(validator=_valid(names.check_lock_id))
    fingerprint: str = attrs.field(validator=_valid(names.check_fingerprint))
    layers: FrozenMap = attrs.field(converter=_frozen_map, validator=_LAYERS)
    built_at: dt.datetime = attrs.field(converter=_utc)
    # the E2B domain; empty for Docker builds
    domain: str = attrs.field(default="", validator=_valid(_optional(names.check_host)))
    # E2B_API_URL when the build went there instead of https://api.<domain> (an emulator, a proxy)
    api_url: str = attrs.field(default="", validator=_valid(_optional(names.check_http_url)))
    # the Docker image tag; empty for E2B builds
    image: str = attrs.field(default="", validator=_valid(_optional(names.check_image)))
    inputs: FrozenMap = attrs.field(factory=FrozenMap, converter=_frozen_map, validator=_INPUTS)
    channels: FrozenMap = attrs.field(factory=FrozenMap, converter=_frozen_map, validator=_CHANNELS)
    history: tuple[Build, ...] = attrs.field(default=(), converter=tuple,
                                             validator=attrs.validators.deep_iterable(
                                                 attrs.validators.instance_of(Build)))

    @property
    def reference(self) -> str:
        """The pinned build: ``<alias>:<build_id>``.

        E2B resolves the name, then matches a UUID "tag" against the build IDs of the template's
        tag assignments (e2b-dev/infra, packages/db/queries/templates/get_template_with_build_by_tag.sql):
        exactly this build. The alias keeps the Nexus server's fast path, which skips its 10-15 s
        mount-time dependency checks only for a reference holding ``nexus-sandbox`` (nexi-lab/nexus,
        src/nexus/bricks/sandbox/sandbox_manager.py, ``preinstalled_templates``); a bare template
        ID never does.
        """
        return f"{self.alias}:{self.build_id}"

    def replaced_by(self, new: LockEntry) -> LockEntry:
        """``new`` with this build pushed onto its history; channels stay where they point."""
        this = Build(self.build_id, self.fingerprint, self.built_at, self.layers, self.image,
                     self.template_id if self.template_id != new.template_id else "")
        history = (this, *self.history) if self.build_id != new.build_id else self.history
        return attrs.evolve(new, channels=self.channels, history=history[:HISTORY_LIMIT])

    def rolled_back(self) -> LockEntry:
        """Back to the previous build; channels that pointed at this build follow it back."""
        prev = self.history[0]
        channels = {ch: (prev.build_id if bid == self.build_id else bid) for ch, bid in self.channels.items()}
        return attrs.evolve(self, build_id=prev.build_id, fingerprint=prev.fingerprint, layers=prev.layers,
                            built_at=prev.built_at, image=prev.image or self.image,
                            template_id=prev.template_id or self.template_id, inputs={},
                            channels=channels, history=self.history[1:])

    def promoted(self, channel: str, build_id: str | None = None) -> LockEntry:
        """``channel`` recorded as pointing at ``build_id`` (default: this entry's build)."""
        return attrs.evolve(self, channels={**self.channels, channel: build_id or self.build_id})

    def to_dict(self) -> dict:
        """The entry as plain data (without the alias, its key); empty optional fields left out."""
        return _plain(self)


def _plain(value) -> dict:
    """A lock value's fields as plain data, in field order; empty optional ones left out."""
    out = {}
    for f in attrs.fields(type(value)):
        v = getattr(value, f.name)
        if f.name == "alias":
            continue
        if isinstance(v, FrozenMap):
            v = dict(v)
        elif isinstance(v, tuple):
            v = [_plain(x) for x in v]
        if v or f.default is attrs.NOTHING:
            out[f.name] = v
    return out
