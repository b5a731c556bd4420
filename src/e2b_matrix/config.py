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
from e2b_matrix.model import Check, Layer, Step, Variant, apt, pip, run
from e2b_matrix.names import type_name
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
        raise UnknownNameError(f"no variant named {names.shown(name)} (known: {', '.join(self.names()) or 'none'})"
                               f"{hint}", path=self.root / "variants")

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


SECRET_REFUSED = ("looks like a secret (not shown); a template is no place for one: "
                  "give it to the sandbox at run time")


def check_strings(value, shown: str, key: str = "", secrets: tuple[str, ...] = ()) -> None:
    """No control characters in any key or string (newline and tab only in scripts and prose), and
    nothing that looks like a secret (an E2B key, this run's key, a value under a secret's name)."""
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{key}.{k}" if key else k
            if names.control_char(k):
                raise ConfigError(f"a key contains a control character ({names.control_char(k)})", path=shown,
                                  key=key or None)
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


def read_toml(path: Path, root: Path | None = None, secrets: tuple[str, ...] = ()) -> dict:
    shown = _display(path, root)
    try:
        text = files.read_text(path)
    except files.FileError as exc:
        raise ConfigError(str(exc), path=shown) from None
    if text is None:
        raise ConfigError("no such file", path=shown)
    try:
        doc = files.parse_toml(text)
    except ValueError as exc:
        raise ConfigError(str(exc), path=shown) from None
    check_strings(doc, shown, secrets=secrets)
    return doc


def _unknown(keys: Iterable[str], allowed: Iterable[str], shown: str, prefix: str) -> None:
    allowed = sorted(allowed)
    for key in keys:
        if key not in allowed:
            raise ConfigError(f"unknown key{names.did_you_mean(key, allowed)}", path=shown, key=f"{prefix}{key}")


def _table(doc: Mapping, key: str, shown: str, prefix: str = "", required: bool = False) -> dict:
    if key not in doc:
        if required:
            raise ConfigError("missing table", path=shown, key=f"{prefix}{key}")
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {type_name(value)}", path=shown, key=f"{prefix}{key}")
    return value


def _checked(check, value, shown: str, key: str):
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(str(exc), path=shown, key=key) from None


def _string_list(value, shown, key, check=None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"expected a list of strings, got {type_name(value)}", path=shown, key=key)
    return tuple(_checked(check, x, shown, key) if check else x for x in value)


# -- variants ----------------------------------------------------------------------

def load_variant_file(path: Path, layers: Mapping[str, Layer], root: Path | None = None,
                      secrets: tuple[str, ...] = ()) -> list[Variant]:
    shown = _display(path, root)
    doc = read_toml(path, root, secrets)
    _unknown(doc, TOP_KEYS, shown, "")
    spec = _table(doc, "variant", shown, required=True)
    params = _table(doc, "params", shown)
    for layer_name, table in params.items():
        if not isinstance(table, dict):
            raise ConfigError(f"expected a table, got {type_name(table)}", path=shown, key=f"params.{layer_name}")
    axes = _parse_matrix(_table(doc, "matrix", shown), shown)
    for key in REQUIRED_VARIANT_KEYS:
        if key not in spec:
            raise ConfigError("missing key", path=shown, key=f"variant.{key}")
    _unknown(spec, VARIANT_KEYS, shown, "variant.")

    out: list[Variant] = []
    seen: dict[str, dict] = {}
    for case in _checked(resolve.matrix_cases, axes, shown, "matrix"):
        v = _build_variant(spec, params, case, layers, shown)
        if v.name in seen:
            raise ConfigError(f"matrix cases {seen[v.name]} and {case} both expand to the name {v.name!r}",
                              path=shown, key="matrix")
        seen[v.name] = case
        out.append(v)
    check_namespace(out)
    return out


def _parse_matrix(matrix: dict, shown: str) -> dict[str, tuple]:
    axes = {}
    for axis in sorted(matrix):
        values = matrix[axis]
        key = f"matrix.{axis}"
        _checked(names.check_axis, axis, shown, key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"expected a non-empty list of values, got {type_name(values)}", path=shown, key=key)
        for value in values:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ConfigError(f"values must be strings or numbers, got {type_name(value)}", path=shown, key=key)
        if len(set(map(str, values))) != len(values):
            raise ConfigError("repeated value", path=shown, key=key)
        axes[axis] = tuple(values)
    return axes


def _substitute(value, case: dict, shown: str, key: str, for_name: bool = False):
    try:
        return resolve.substitute(value, case, for_name)
    except KeyError as exc:
        axes = ", ".join(sorted(case)) or "none: this file has no [matrix]"
        raise ConfigError(f"unknown matrix axis {{{exc.args[0]}}} (axes: {axes})", path=shown, key=key) from None


def _build_variant(spec: dict, params: dict, case: dict, layers: Mapping[str, Layer], shown: str) -> Variant:
    s = {k: _substitute(v, case, shown, f"variant.{k}", for_name=k in ("name", "alias", "tags"))
         for k, v in spec.items()}
    name = _checked(names.check_name, s["name"], shown, "variant.name")
    alias = _checked(names.check_alias, s["alias"], shown, "variant.alias")
    layer_names = _string_list(s["layers"], shown, "variant.layers")
    if not layer_names:
        raise ConfigError("a variant needs at least one layer", path=shown, key="variant.layers")
    tags = _string_list(s.get("tags", []), shown, "variant.tags", names.check_variant_tag)
    cpu = _int(s.get("cpu_count", 2), shown, "variant.cpu_count")
    if not (cpu == 1 or (cpu % 2 == 0 and 2 <= cpu <= 32)):
        raise ConfigError(f"E2B takes 1 or an even number up to 32, got {names.shown(cpu, 30)}", path=shown,
                          key="variant.cpu_count")
    mem = _int(s.get("memory_mb", 2048), shown, "variant.memory_mb")
    if mem < 128 or mem % 2 or mem > MAX_MEMORY_MB:
        raise ConfigError(f"E2B takes an even number of MiB from 128 to {MAX_MEMORY_MB}, got {names.shown(mem, 30)}",
                          path=shown, key="variant.memory_mb")
    description = _checked(lambda d: names.check_text(d, multiline=True), s.get("description", ""), shown,
                           "variant.description")

    seen: set[str] = set()
    for ln in layer_names:
        if ln not in layers:
            raise ConfigError(f"unknown layer {ln!r}{names.did_you_mean(ln, layers)}", path=shown,
                              key="variant.layers")
        if ln in seen:
            raise ConfigError(f"layer {ln!r} is listed twice", path=shown, key="variant.layers")
        seen.add(ln)
    for ln in layer_names:
        for req in layers[ln].requires:
            if req not in seen:
                raise ConfigError(f"layer {ln!r} requires {req!r}, which is not listed", path=shown,
                                  key="variant.layers")

    resolved_params: dict[str, dict[str, Any]] = {}
    for ln, table in params.items():
        key = f"params.{ln}"
        if ln not in layers:
            raise ConfigError(f"unknown layer {ln!r}", path=shown, key=key)
        if ln not in seen:
            raise ConfigError(f"layer {ln!r} is not in this variant's layers", path=shown, key=key)
        layer = layers[ln]
        values = {}
        for pname, raw in table.items():
            p = layer.param(pname)
            if p is None:
                known = ", ".join(x.name for x in layer.params) or "none"
                raise ConfigError(f"unknown parameter (layer {ln} takes: {known})", path=shown, key=f"{key}.{pname}")
            value = _substitute(raw, case, shown, f"{key}.{pname}")
            values[pname] = _checked(p.convert, value, shown, f"{key}.{pname}")
        resolved_params[ln] = values

    return Variant(name=name, alias=alias, layers=layer_names, cpu_count=cpu, memory_mb=mem, tags=tags,
                   params=resolved_params, description=description, source=shown)


def _int(value, shown, key) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"expected an integer, got {type_name(value)}", path=shown, key=key)
    return value


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
                what = "two variants" if oattr == attr else f"two variants (the {oattr} of one, the {attr} of the other)"
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
            raise ConfigError(f"layer {layer.name!r} is already defined ({where})", path=layer.source,
                              key="layer.name")
        layers[layer.name] = layer
    for layer in layers.values():
        for req in layer.requires:
            if req not in layers:
                raise ConfigError(f"requires unknown layer {req!r}", path=layer.source, key="layer.requires")
    cycle = resolve.find_cycle({n: layer.requires for n, layer in layers.items()})
    if cycle:
        culprit = next(layers[n] for n in cycle if layers[n].source != "<built-in>")
        raise ConfigError(f"layers require each other in a loop: {' -> '.join(cycle)}", path=culprit.source,
                          key="layer.requires")
    return layers


def load_layer_file(path: Path, root: Path | None = None, secrets: tuple[str, ...] = ()) -> Layer:
    shown = _display(path, root)
    doc = read_toml(path, root, secrets)
    _unknown(doc, {"layer", "steps", "checks"}, shown, "")
    spec = _table(doc, "layer", shown, required=True)
    _unknown(spec, LAYER_KEYS, shown, "layer.")
    for key in ("name", "version"):
        if not isinstance(spec.get(key), str) or not spec.get(key).strip():
            raise ConfigError("missing key" if key not in spec else "expected a non-empty string",
                              path=shown, key=f"layer.{key}")
    name = _checked(names.check_layer_name, spec["name"], shown, "layer.name")
    requires = _string_list(spec.get("requires", ["base"]), shown, "layer.requires")
    description = _checked(lambda d: names.check_text(d, multiline=True), spec.get("description", ""), shown,
                           "layer.description")
    steps = tuple(_parse_step(s, shown, f"steps[{i}]") for i, s in enumerate(_array(doc, "steps", shown)))
    checks = tuple(_parse_check(c, shown, f"checks[{i}]", name) for i, c in enumerate(_array(doc, "checks", shown)))
    return Layer(name=name, version=spec["version"], requires=requires, description=description,
                 steps=lambda p, c, s=steps: s, checks=lambda p, c, k=checks: k, source=shown)


def _array(doc, key, shown) -> list[dict]:
    items = doc.get(key, [])
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise ConfigError(f"expected an array of tables ([[{key}]])", path=shown, key=key)
    return items


def _parse_step(s: dict, shown: str, key: str) -> Step:
    # "user" is a step of its own, or the user a "run" step runs as
    kinds = [k for k in s if k in STEP_KINDS and not (k == "user" and "run" in s)]
    if len(kinds) != 1:
        raise ConfigError(f"a step has exactly one of {', '.join(sorted(STEP_KINDS))}", path=shown, key=key)
    kind = kinds[0]
    _unknown(s, {kind, "user"} if kind == "run" else {kind}, shown, f"{key}.")
    value = s[kind]
    where = f"{key}.{kind}"
    if kind in ("apt", "pip"):
        pkgs = _string_list(value, shown, where, names.check_package)
        return apt(pkgs) if kind == "apt" else pip(pkgs)
    if kind == "env":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError("expected a table of strings", path=shown, key=where)
        for k in value:
            _checked(names.check_env_name, k, shown, f"{where}.{k}")
        return Step("set_envs", (value,))
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("expected a non-empty string", path=shown, key=where)
    if kind == "run":
        user = s.get("user")
        if user is not None:
            _checked(names.check_user, user, shown, f"{key}.user")
        return run(value, user=user)
    if kind == "user":
        return Step("set_user", (_checked(names.check_user, value, shown, where),))
    return Step("set_workdir", (value,))


def _parse_check(c: dict, shown: str, key: str, layer: str) -> Check:
    _unknown(c, CHECK_KEYS, shown, f"{key}.")
    for k in ("name", "command"):
        if not isinstance(c.get(k), str) or not c[k].strip():
            raise ConfigError("missing key" if k not in c else "expected a non-empty string", path=shown,
                              key=f"{key}.{k}")
    for k in ("expect", "user"):
        if k in c and not isinstance(c[k], str):
            raise ConfigError("expected a string", path=shown, key=f"{key}.{k}")
    if "user" in c:
        _checked(names.check_user, c["user"], shown, f"{key}.user")
    return Check(c["name"], command=c["command"], expect=c.get("expect"), user=c.get("user", "user"), layer=layer)


# -- command-line overrides (precedence: defaults -> file -> command line) -----------

def apply_overrides(project: Project, overrides: Iterable[str], secrets: Iterable[str] = ()) -> Project:
    """``--set layer.param=value``: applied to every variant that has the layer."""
    parsed: list[tuple[str, str, Any]] = []
    for item in overrides:
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
        layer = project.layers.get(layer_name)
        if layer is None:
            raise ConfigError(f"unknown layer {layer_name!r}", key="--set")
        p = layer.param(pname)
        if p is None:
            known = ", ".join(x.name for x in layer.params) or "none"
            raise ConfigError(f"unknown parameter {name!r} (layer {layer_name} takes: {known})", key="--set")
        value = raw
        if not isinstance(p.default, str):  # lists, numbers: TOML syntax, or a,b,c
            try:
                value = files.parse_toml(f"v = {raw}")["v"]
            except files.TooDeep as exc:
                raise ConfigError(f"{name}: {exc}", key="--set") from None
            except ValueError:
                value = [x for x in raw.split(",") if x] if isinstance(p.default, tuple) else raw
        try:
            parsed.append((layer_name, pname, p.convert(value)))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}", key="--set") from None
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
