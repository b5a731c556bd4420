"""The data model: frozen attrs classes, the only shapes data flows through.

files -> Variant/Layer -> BuildSpec (resolved) -> backend -> BuildResult -> LockEntry (lock/model.py).
Nothing here imports e2b or click, nor the lock (the lock depends on the model, never the
reverse); the lock reader (and so the Nexus server) imports this module, so it stays light.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import TYPE_CHECKING, Any, TypedDict

import attrs

from e2b_matrix import names
from e2b_matrix.errors import FieldError

if TYPE_CHECKING:  # resolve.py builds on the model: a layer's resolve hook is handed its Resolver
    from e2b_matrix.resolve import Resolver


def _strings(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The converter of a tuple-of-strings field: None is empty, one string is a tuple of one."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable mapping of str keys, kept sorted; its values frozen too (a dict becomes a
    FrozenMap, a list a tuple). The one frozen mapping of the model: parameters, a step's keywords,
    a lock entry's layers, inputs and channels."""

    __slots__ = ("_d",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()):
        pairs = items.items() if isinstance(items, Mapping) else items
        self._d = {str(k): freeze(v) for k, v in sorted(pairs, key=lambda kv: str(kv[0]))}

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def get(self, key: str, default: Any = None) -> Any:
        return self._d.get(key, default)

    def keys(self) -> KeysView[str]:  # the dict's read-only views: Mapping's generic ones look every key up again
        return self._d.keys()

    def values(self) -> ValuesView[Any]:
        return self._d.values()

    def items(self) -> ItemsView[str, Any]:
        return self._d.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __eq__(self, other: object) -> bool:
        return self._d == dict(other) if isinstance(other, Mapping) else NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._d.items()))

    def __repr__(self) -> str:
        return repr(self._d)

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return FrozenMap, (self._d,)


def freeze(value: Any) -> Any:
    """A value as the model keeps it: lists as tuples, tables as FrozenMaps (hashable, order-free)."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping) and not isinstance(value, FrozenMap):
        return FrozenMap(value)
    return value


def frozen_map(value: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> FrozenMap:
    """The converter of a FrozenMap field."""
    return value if type(value) is FrozenMap else FrozenMap(value or {})


def thaw(value: Any) -> Any:
    """The inverse of freezing: FrozenMap -> dict, tuple -> list (what the SDK's calls take)."""
    if isinstance(value, FrozenMap):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


# -- validators: a names.check_* made an attrs validator, its error a FieldError ------------

Check_ = Callable[[object], object]  # a names.check_*: ValueError when the value breaks the rule
# An attrs validator: the instance, the field (attrs' Attribute, whatever its value's type), the value.
Validator = Callable[[object, "attrs.Attribute[Any]", object], None]


def valid(check: Check_) -> Validator:
    """An attrs validator from a names.check_*: its ValueError becomes a FieldError naming the field."""

    def validate(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        try:
            check(value)
        except ValueError as exc:
            raise FieldError(attribute.name, str(exc)) from None

    return validate


def optional(check: Check_) -> Check_:
    """``check`` for a field whose empty string means "not set"."""
    return lambda value: value if value == "" else check(value)


def map_of(key_check: Check_, value_check: Check_) -> Callable[[object, attrs.Attribute[Any], FrozenMap], None]:
    """A validator of a str -> str FrozenMap: each key and value by its check, the error naming ``field.key``."""

    def validate(inst: object, attribute: attrs.Attribute[Any], value: FrozenMap) -> None:
        for k, v in value.items():
            where = f"{attribute.name}.{names.show_key(k)}"
            try:
                key_check(k)
            except ValueError as exc:
                raise FieldError(where, f"bad key: {exc}") from None
            try:
                value_check(v)
            except ValueError as exc:
                raise FieldError(where, str(exc)) from None

    return validate


@attrs.frozen(slots=False)
class Step:
    """One E2B Template SDK builder call, e.g. ``Step("apt_install", (("fuse",),))``.

    ``call`` names the builder method; ``args`` and ``kwargs`` are what it is
    called with. render.py turns a step into the SDK call, into the exact
    instruction the SDK would send (without importing e2b), and into
    Dockerfile lines.
    """

    call: str
    args: tuple[Any, ...] = attrs.field(default=(), converter=freeze)
    kwargs: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map)

    @property
    def kw(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def call_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) as the SDK builder method takes them."""
        return tuple(thaw(a) for a in self.args), thaw(self.kwargs)


def run(command: str, user: str | None = None) -> Step:
    return Step("run_cmd", (command,), {"user": user} if user else {})


def apt(packages: Iterable[str]) -> Step:
    return Step("apt_install", (tuple(packages),))


def pip(packages: Iterable[str]) -> Step:
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
    cells: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    expect: str | None = None
    user: str = "user"
    devices: tuple[str, ...] = attrs.field(default=(), converter=_strings)
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

    def convert(self, value: Any) -> Any:
        """``value`` (as a file or ``--set`` gives it: any TOML value) as the layer takes it."""
        return self.check(value) if self.check else value


@attrs.frozen(slots=False)
class Context:
    """What a layer's steps may depend on besides its parameters: where the template starts."""

    base: Base

    @property
    def python(self) -> str:
        return self.base.python


Params = Mapping[str, Any]  # a layer's parameters by name, their values as the files give them (TOML data)


def _no_steps(params: Params, ctx: Context) -> tuple[Step, ...]:
    return ()


def _no_checks(params: Params, ctx: Context) -> tuple[Check, ...]:
    return ()


def _params(value: Iterable[Param]) -> tuple[Param, ...]:
    return tuple(value)


@attrs.frozen(slots=False)
class Layer:
    """A named, versioned unit of build steps with parameters and checks.

    ``steps(params, ctx)`` and ``checks(params, ctx)`` are pure functions of
    the layer's resolved parameters. The base layer also gives ``base(params,
    ctx)`` (the template's starting point) and ``python(params, backend)``.
    """

    name: str
    version: str
    requires: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    params: tuple[Param, ...] = attrs.field(default=(), converter=_params)
    steps: Callable[[Params, Context], tuple[Step, ...]] = _no_steps
    checks: Callable[[Params, Context], tuple[Check, ...]] = _no_checks
    description: str = ""
    # What the lock records for this layer; nexus records its package version.
    recorded_version: Callable[[Params], str] | None = None
    # Turns parameters into concrete ones at plan time (nexus: "latest" -> x.y.z).
    resolve: Callable[[dict[str, Any], Context, Resolver], dict[str, Any]] | None = None
    source: str = "<built-in>"

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def lock_version(self, params: Params) -> str:
        if self.recorded_version is not None:
            return self.recorded_version(params)
        return self.version


class VariantJSON(TypedDict):
    """A variant as ``list --json`` prints it (docs/schemas/list.schema.json)."""

    name: str
    alias: str
    layers: list[str]
    cpu_count: int
    memory_mb: int
    tags: list[str]
    file: str
    description: str


@attrs.frozen(slots=False)
class Variant:
    """One template to build, as written in variants/*.toml (after [matrix])."""

    name: str
    alias: str
    layers: tuple[str, ...] = attrs.field(converter=_strings)
    cpu_count: int = 2
    memory_mb: int = 2048
    tags: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    # {layer: {param: value}}, values as written
    params: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map)
    description: str = ""
    source: str = ""  # the file it came from

    def params_for(self, layer: str) -> dict[str, Any]:
        return dict(self.params.get(layer, {}))

    def to_json(self) -> VariantJSON:
        return {
            "name": self.name,
            "alias": self.alias,
            "layers": list(self.layers),
            "cpu_count": self.cpu_count,
            "memory_mb": self.memory_mb,
            "tags": list(self.tags),
            "file": self.source,
            "description": self.description,
        }


@attrs.frozen(slots=False)
class ResolvedLayer:
    layer: Layer
    params: FrozenMap = attrs.field(converter=frozen_map)

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
    key: str  # the spec input that records it: "requirements.nexus"
    asks: tuple[str, ...] = attrs.field(converter=_strings)
    python: str
    platform: str
    constraints: tuple[str, ...] = attrs.field(converter=_strings)
    identity: str
    path: str  # "requirements/nexus-<identity[:12]>.txt", relative to the project
    content: bytes | None = attrs.field(default=None, eq=False, repr=False)
    digest: str = ""  # sha256 of content
    pinned: tuple[str, ...] = attrs.field(default=(), converter=_strings, eq=False, repr=False)  # name==version
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
        out = {
            "base": self.base.describe(),
            "cpu_count": str(self.variant.cpu_count),
            "memory_mb": str(self.variant.memory_mb),
            "tags": ",".join(self.variant.tags),
        }
        for rl in self.layers:
            for key, value in rl.params.items():
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
    goes: compiling, queued, waiting, building, retrying, verifying, promoting. How it ended:
    fresh (unchanged since its lock entry, nothing done), built, failed,
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


class BuildResultJSON(TypedDict):
    """A build's result as ``build --json`` prints it (docs/schemas/build.schema.json)."""

    name: str
    alias: str
    status: str
    template_id: str
    build_id: str
    duration_s: float
    attempts: int
    image: str
    error: str


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

    def to_json(self) -> BuildResultJSON:
        """As --json prints it; ``error`` keeps its lines (one per failed smoke check)."""
        return {
            "name": self.name,
            "alias": self.alias,
            "status": self.status.value,
            "template_id": self.template_id,
            "build_id": self.build_id,
            "duration_s": self.duration_s,
            "attempts": self.attempts,
            "image": self.image,
            "error": self.error,
        }


class RemovalJSON(TypedDict):
    kind: str
    target: str
    why: str


@attrs.frozen(slots=False)
class Removal:
    """One thing prune would remove (prune.py): what kind, which, and why it is no longer needed."""

    kind: str  # "requirements file", "inventory", or a backend's leftover ("docker image")
    target: str  # a path relative to the project, an image, a template
    why: str
    backend: str = ""  # the backend that removes it (a leftover); "" for a file of the project
    ref: str = ""  # what that backend removes it by (an image ID, a template ID)
    alias: str = ""  # the lock entry that goes with it, once it is removed

    def to_json(self) -> RemovalJSON:
        return {"kind": self.kind, "target": self.target, "why": self.why}


@attrs.frozen(slots=False)
class Outcome:
    """What a backend built: the template (or image) and the build."""

    template_id: str
    build_id: str
    image: str = ""
    domain: str = ""
    api_url: str = ""  # E2B_API_URL, when the build went there
