"""Project files -> model: variants/*.toml (with [matrix]) and layers/*.toml.

Every problem is a ConfigError naming the file and the key, raised before
anything is built or written. Loading is pure: it reads, never writes.
Every string of every file (keys too) is checked for control characters in
one place (``read_toml``); newlines and tabs pass only where a value is a
script or a description.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from e2b_matrix import files, names, resolve
from e2b_matrix.errors import ConfigError, UnknownNameError
from e2b_matrix.layers import SHIPPED
from e2b_matrix.model import Check, Context, Layer, Param, Params, Step, Variant, apt, pip, run
from e2b_matrix.resolve import Case, MatrixValue
from e2b_matrix.secrets import looks_secret

VARIANT_KEYS = {"name", "alias", "layers", "cpu_count", "memory_mb", "tags", "description"}
REQUIRED_VARIANT_KEYS = ("name", "alias", "layers")
TOP_KEYS = {"variant", "params", "matrix"}
LAYER_KEYS = {"name", "version", "requires", "description"}
STEP_KINDS = {"run", "apt", "pip", "env", "workdir", "user"}
CHECK_KEYS = {"name", "command", "expect", "user"}
# E2B reads memoryMB as an int32 (e2b-dev/infra packages/api/internal/template/register_build.go,
# RegisterBuildData.MemoryMB; team/limits.go then holds it to the tier's MaxRamMb): the largest even one.
MAX_MEMORY_MB = 2**31 - 2
# where a newline or a tab is part of the value: scripts and prose
_MULTILINE = re.compile(r"(steps\[\d+\]\.run|checks\[\d+\]\.command|(variant|layer)\.description)")


@attrs.frozen
class Project:
    """A project directory: its layers and its (expanded, validated) variants."""

    root: Path
    variants: tuple[Variant, ...]
    layers: Mapping[str, Layer] = attrs.field(eq=False)

    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if name in (v.name, v.alias):
                return v
        close = names.near(name, self.names() + [v.alias for v in self.variants])
        hint = f"; did you mean {close!r}?" if close else ""
        raise UnknownNameError(
            f"no variant named {names.shown(name)} (known: {', '.join(self.names()) or 'none'}){hint}",
            path=self.root / "variants",
        )

    def select(self, names: Iterable[str] = ()) -> list[Variant]:
        chosen: dict[str, Variant] = {}
        for n in names:
            v = self.variant(n)
            chosen.setdefault(v.name, v)
        return list(chosen.values()) if chosen else list(self.variants)


def load_project(root: str | Path = ".", secrets: Iterable[str] = ()) -> Project:
    """The project at ``root``; a secret-looking value anywhere (``secrets``: this run's keys, matched
    exactly) is refused before anything is built or sent."""
    root = Path(root)
    secrets = tuple(secrets)
    vdir = root / "variants"
    if not vdir.is_dir():
        raise ConfigError("no variants/ folder here (use -C DIR to point at the project)", path=root.resolve())
    layers = load_layers(root, secrets)
    files_ = project_files(vdir)
    if not files_:
        raise ConfigError("no variant files (*.toml)", path=vdir)
    variants = [v for f in files_ for v in load_variant_file(f, layers, root, secrets)]
    check_namespace(variants)
    return Project(root=root, variants=tuple(sorted(variants, key=lambda v: v.name)), layers=layers)


# -- files -------------------------------------------------------------------------


def project_files(folder: Path) -> list[Path]:
    """The project's files in ``variants/`` or ``layers/``: ``*.toml``, sorted; hidden and editor files
    are not (a name starting with "." or "#": Emacs' lock ``.#x.toml``, a dangling link, and its
    ``#x.toml#``; Vim's ``.x.toml.swp``; backups ``x.toml~`` do not end in ``.toml``)."""
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.glob("*.toml") if not f.name.startswith((".", "#")))


def _display(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


SECRET_REFUSED = "looks like a secret (not shown); a template is no place for one: give it to the sandbox at run time"


def check_strings(value: object, shown: str, key: str = "", secrets: tuple[str, ...] = ()) -> None:
    """No control characters in any key or string (newline and tab only in scripts and prose), and
    nothing that looks like a secret (an E2B key, this run's key, a value under a secret's name)."""
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{key}.{k}" if key else k
            if names.control_char(k):
                raise ConfigError(
                    f"a key contains a control character ({names.control_char(k)})", path=shown, key=key or None
                )
            check_strings(v, shown, sub, secrets)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_strings(v, shown, f"{key}[{i}]", secrets)
    elif isinstance(value, str):
        bad = names.control_char(value, multiline=bool(_MULTILINE.fullmatch(key)))
        if bad:
            raise ConfigError(f"contains a control character ({bad})", path=shown, key=key)
        if looks_secret(key, value, secrets):
            raise ConfigError(SECRET_REFUSED, path=shown, key=key)


def read_toml(path: Path, root: Path | None = None, secrets: tuple[str, ...] = ()) -> files.Table:
    """A project file as a table: read bounded, through no link, parsed, every string checked."""
    shown = _display(path, root)
    doc = files.load_toml(path, shown)
    if doc is None:
        raise ConfigError("no such file", path=shown)
    check_strings(doc, shown, secrets=secrets)
    return files.Table(doc, shown)


# -- variants ----------------------------------------------------------------------


def load_variant_file(
    path: Path, layers: Mapping[str, Layer], root: Path | None = None, secrets: tuple[str, ...] = ()
) -> list[Variant]:
    doc = read_toml(path, root, secrets)
    doc.only(TOP_KEYS)
    spec = doc.table("variant", required=True)
    params = doc.table("params")
    for layer_name in params.doc:
        params.table(layer_name)  # each a table
    axes = _parse_matrix(doc.table("matrix"))
    spec.require(*REQUIRED_VARIANT_KEYS)
    spec.only(VARIANT_KEYS)
    out: list[Variant] = []
    seen: dict[str, Case] = {}
    for case in doc.value_of(axes, resolve.matrix_cases, "matrix"):
        v = _build_variant(spec, params, case, layers)
        if v.name in seen:
            raise doc.error(f"matrix cases {seen[v.name]} and {case} both expand to the name {v.name!r}", "matrix")
        seen[v.name] = case
        out.append(v)
    check_namespace(out)
    return out


def _parse_matrix(matrix: files.Table) -> dict[str, tuple[MatrixValue, ...]]:
    axes: dict[str, tuple[MatrixValue, ...]] = {}
    for axis in sorted(matrix.doc):
        values = matrix.doc[axis]
        matrix.value_of(axis, names.check_axis, axis)
        if not isinstance(values, list) or not values:
            raise matrix.error(f"expected a non-empty list of values, got {names.type_name(values)}", axis)
        for value in values:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise matrix.error(f"values must be strings or numbers, got {names.type_name(value)}", axis)
        if len(set(map(str, values))) != len(values):
            raise matrix.error("repeated value", axis)
        axes[axis] = tuple(values)
    return axes


def _substitute(
    value: Any, case: Mapping[str, MatrixValue], table: files.Table, key: str, for_name: bool = False
) -> Any:
    try:
        return resolve.substitute(value, case, for_name)
    except KeyError as exc:
        axes = ", ".join(sorted(case)) or "none: this file has no [matrix]"
        raise table.error(f"unknown matrix axis {{{exc.args[0]}}} (axes: {axes})", key) from None


def _build_variant(
    spec: files.Table, params: files.Table, case: Mapping[str, MatrixValue], layers: Mapping[str, Layer]
) -> Variant:
    v = files.Table(
        {k: _substitute(x, case, spec, k, for_name=k in ("name", "alias", "tags")) for k, x in spec.doc.items()},
        spec.path,
        spec.where,
    )
    layer_names = v.string_list("layers")
    if not layer_names:
        raise v.error("a variant needs at least one layer", "layers")
    _check_layers(v, layer_names, layers)
    cpu = v.get("cpu_count", int, 2)
    if not (cpu == 1 or (cpu % 2 == 0 and 2 <= cpu <= 32)):
        raise v.error(f"E2B takes 1 or an even number up to 32, got {names.shown(cpu, 30)}", "cpu_count")
    mem = v.get("memory_mb", int, 2048)
    if mem < 128 or mem % 2 or mem > MAX_MEMORY_MB:
        raise v.error(
            f"E2B takes an even number of MiB from 128 to {MAX_MEMORY_MB}, got {names.shown(mem, 30)}", "memory_mb"
        )
    return Variant(
        name=v.value("name", names.check_name),
        alias=v.value("alias", names.check_alias),
        layers=layer_names,
        cpu_count=cpu,
        memory_mb=mem,
        tags=v.string_list("tags", names.check_variant_tag, ()),
        params=_params(params, case, layers, set(layer_names)),
        description=v.value("description", lambda d: names.check_text(d, multiline=True), ""),
        source=str(spec.path),
    )


def _check_layers(v: files.Table, layer_names: tuple[str, ...], layers: Mapping[str, Layer]) -> None:
    """Each layer known, listed once, and every layer it requires listed too."""
    seen: set[str] = set()
    for ln in layer_names:
        if ln not in layers:
            raise v.error(f"unknown layer {ln!r}{names.did_you_mean(ln, layers)}", "layers")
        if ln in seen:
            raise v.error(f"layer {ln!r} is listed twice", "layers")
        seen.add(ln)
    for ln in layer_names:
        for req in layers[ln].requires:
            if req not in seen:
                raise v.error(f"layer {ln!r} requires {req!r}, which is not listed", "layers")


def _params(
    params: files.Table, case: Mapping[str, MatrixValue], layers: Mapping[str, Layer], chosen: set[str]
) -> dict[str, dict[str, Any]]:
    """``[params.<layer>]``: each parameter known to its layer and checked by it (matrix values in)."""
    out: dict[str, dict[str, Any]] = {}
    for ln in params.doc:
        if ln not in layers:
            raise params.error(f"unknown layer {ln!r}", ln)
        if ln not in chosen:
            raise params.error(f"layer {ln!r} is not in this variant's layers", ln)
        table, layer = params.table(ln), layers[ln]
        values: dict[str, Any] = {}  # each parameter's value as its layer's check made it
        for pname, raw in table.doc.items():
            p = layer.param(pname)
            if p is None:
                known = ", ".join(x.name for x in layer.params) or "none"
                raise table.error(f"unknown parameter (layer {ln} takes: {known})", pname)
            values[pname] = table.value_of(_substitute(raw, case, table, pname), p.convert, pname)
        out[ln] = values
    return out


def check_namespace(variants: list[Variant]) -> None:
    """Names and aliases share one namespace: no word may mean two variants."""
    owner: dict[str, tuple[Variant, str]] = {}
    for v in variants:
        for attr in ("name", "alias"):
            word = getattr(v, attr)
            other = owner.get(word)
            if other is not None and other[0] is not v:
                o, oattr = other
                where = o.source if o.source == v.source else f"{o.source} and {v.source}"
                what = (
                    "two variants" if oattr == attr else f"two variants (the {oattr} of one, the {attr} of the other)"
                )
                raise ConfigError(f"{word!r} is used by {what} ({where})", path=v.source, key=f"variant.{attr}")
            owner.setdefault(word, (v, attr))


# -- project layers ------------------------------------------------------------------


def load_layers(root: Path, secrets: tuple[str, ...] = ()) -> dict[str, Layer]:
    """The shipped layers plus the project's own layers/*.toml; cycles are errors."""
    layers = dict(SHIPPED)
    for f in project_files(root / "layers"):
        layer = load_layer_file(f, root, secrets)
        if layer.name in layers:
            where = "a shipped layer" if layer.name in SHIPPED else layers[layer.name].source
            raise ConfigError(f"layer {layer.name!r} is already defined ({where})", path=layer.source, key="layer.name")
        layers[layer.name] = layer
    for layer in layers.values():
        for req in layer.requires:
            if req not in layers:
                raise ConfigError(f"requires unknown layer {req!r}", path=layer.source, key="layer.requires")
    cycle = resolve.find_cycle({n: layer.requires for n, layer in layers.items()})
    if cycle:
        culprit = next(layers[n] for n in cycle if layers[n].source != "<built-in>")
        raise ConfigError(
            f"layers require each other in a loop: {' -> '.join(cycle)}", path=culprit.source, key="layer.requires"
        )
    return layers


def load_layer_file(path: Path, root: Path | None = None, secrets: tuple[str, ...] = ()) -> Layer:
    doc = read_toml(path, root, secrets)
    doc.only({"layer", "steps", "checks"})
    spec = doc.table("layer", required=True)
    spec.only(LAYER_KEYS)
    name = spec.value("name", _nonempty)
    spec.value("version", _nonempty)
    name = spec.value("name", names.check_layer_name)
    steps = tuple(_parse_step(s) for s in doc.tables("steps"))
    checks = tuple(_parse_check(c, name) for c in doc.tables("checks"))

    def layer_steps(params: Params, ctx: Context) -> tuple[Step, ...]:  # a file's steps take no parameter
        return steps

    def layer_checks(params: Params, ctx: Context) -> tuple[Check, ...]:
        return checks

    return Layer(
        name=name,
        version=spec.doc["version"],
        requires=spec.string_list("requires", default=("base",)),
        description=spec.value("description", lambda d: names.check_text(d, multiline=True), ""),
        steps=layer_steps,
        checks=layer_checks,
        source=str(doc.path),
    )


def _nonempty(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _parse_step(s: files.Table) -> Step:
    # "user" is a step of its own, or the user a "run" step runs as
    kinds = [k for k in s.doc if k in STEP_KINDS and not (k == "user" and "run" in s.doc)]
    if len(kinds) != 1:
        raise s.Error(f"a step has exactly one of {', '.join(sorted(STEP_KINDS))}", path=s.path, key=s.where)
    kind = kinds[0]
    s.only({kind, "user"} if kind == "run" else {kind})
    if kind in ("apt", "pip"):
        pkgs = s.string_list(kind, names.check_package)
        return apt(pkgs) if kind == "apt" else pip(pkgs)
    if kind == "env":
        env = s.strings("env")
        for k in env:
            s.table("env").value_of(k, names.check_env_name, k)
        return Step("set_envs", (env,))
    value = s.value(kind, _nonempty)
    if kind == "run":
        return run(value, user=s.value("user", names.check_user, None))
    if kind == "user":
        return Step("set_user", (s.value("user", names.check_user),))
    return Step("set_workdir", (value,))


def _parse_check(c: files.Table, layer: str) -> Check:
    c.only(CHECK_KEYS)
    name, command = c.value("name", _nonempty), c.value("command", _nonempty)
    return Check(
        name,
        command=command,
        expect=c.get("expect", str, None),
        user=c.value("user", names.check_user, "user"),
        layer=layer,
    )


# -- command-line overrides (precedence: defaults -> file -> command line) -----------


def apply_overrides(project: Project, overrides: Iterable[str], secrets: Iterable[str] = ()) -> Project:
    """``--set layer.param=value``: applied to every variant that has the layer."""
    known = tuple(secrets)
    parsed = [_override(project.layers, item, known) for item in overrides]
    if not parsed:
        return project
    variants = []
    for v in project.variants:
        params = {ln: v.params_for(ln) for ln in v.layers}
        for layer_name, pname, value in parsed:
            if layer_name in params:
                params[layer_name][pname] = value
        variants.append(attrs.evolve(v, params={k: d for k, d in params.items() if d}))
    return attrs.evolve(project, variants=tuple(variants))


def _override(layers: Mapping[str, Layer], item: str, secrets: tuple[str, ...]) -> tuple[str, str, Any]:
    """One ``--set LAYER.PARAM=VALUE``: (layer, parameter, the value as the layer's parameter takes it)."""
    name, sep, raw = item.partition("=")
    layer_name, dot, pname = name.partition(".")
    shown = names.shown(name) if names.control_char(name) else name
    if looks_secret(name, raw, secrets):
        raise ConfigError(f"{shown}: {SECRET_REFUSED}", key="--set")
    if not sep or not dot or not layer_name or not pname:
        raise ConfigError(f"{names.shown(item)} is not LAYER.PARAM=VALUE", key="--set")
    bad = names.control_char(item)
    if bad:
        raise ConfigError(f"{shown}: contains a control character ({bad})", key="--set")
    layer = layers.get(layer_name)
    if layer is None:
        raise ConfigError(f"unknown layer {layer_name!r}", key="--set")
    p = layer.param(pname)
    if p is None:
        known = ", ".join(x.name for x in layer.params) or "none"
        raise ConfigError(f"unknown parameter {name!r} (layer {layer_name} takes: {known})", key="--set")
    value = _written(p, name, raw)
    try:
        return layer_name, pname, p.convert(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}", key="--set") from None


def _written(p: Param, name: str, raw: str) -> Any:
    """What ``raw`` (after ``=``) says, for parameter ``p``: a string parameter takes it as it is; any
    other (lists, numbers) reads it as a TOML value, else as ``a,b,c`` (a list) or as it is."""
    if isinstance(p.default, str):
        return raw
    try:
        return files.parse_toml(f"v = {raw}")["v"]
    except files.TooDeep as exc:
        raise ConfigError(f"{name}: {exc}", key="--set") from None
    except ValueError:
        return [x for x in raw.split(",") if x] if isinstance(p.default, tuple) else raw
