"""What a build holds: its Python, every Python package and every apt package, and what changed.

``verify`` (and ``build --verify``) run the base layer's inventory checks
(``pip list``, ``dpkg-query``: checks with ``capture``) with the smoke
checks, in the same sandbox or container; ``from_report`` turns their output
into an ``Inventory``, kept beside the lock (``<lock>.inventory/<alias>/
<build_id>.toml``: not inside the lock the server reads, which stays small).
``diff`` lists the packages added, removed and changed between two builds.

An inventory file is input like the lock: read through the bounded TOML
parser and validated field by field on read; written atomically.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import attrs
import tomli_w

from e2b_matrix import files, names, reqfile
from e2b_matrix.errors import ConfigError, FieldError, MatrixError
from e2b_matrix.model import FrozenMap, frozen_map, map_of, valid

if TYPE_CHECKING:  # a verify run's report is read here; verify knows nothing of inventories
    from e2b_matrix.verify import VerifyReport

SCHEMA = 1
KINDS = ("python", "pip", "apt")
# The base layer's inventory checks: their output is recorded, not judged (stderr is not part of it).
PIP_LIST = "python3 -m pip list --format=json --disable-pip-version-check 2>/dev/null"
APT_LIST = "dpkg-query -W -f='${Package}\\t${Version}\\n' 2>/dev/null"
# The used size of the root file system, in KiB, as a POSIX df line ("Filesystem 1024-blocks Used
# Available Capacity Mounted-on"). A container's root is an overlay whose df is the host's whole disk
# (57 GiB here, whatever the image), so there the Used column is what du counts on the root file
# system instead: the image's files (about 1 s for a 1.8 GB image). Run as root, so du reads it all.
DISK_USED = (
    "set -- $(df -Pk / 2>/dev/null | tail -n 1); "
    'if [ "$1" = overlay ]; then set -- overlay - "$(du -skx / 2>/dev/null | cut -f1)" - - /; fi; '
    'echo "$@"'
)
MAX_DISK_KIB = 2**50  # a petabyte and more: no template is that big

_PACKAGES = map_of(names.check_package_name, names.check_package_version)


def _kib(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_DISK_KIB:
        raise ValueError(f"expected a size in KiB from 0 to {MAX_DISK_KIB}, got {names.shown(value)}")
    return value


@attrs.frozen
class Inventory:
    """The packages one build of an alias holds."""

    alias: str = attrs.field(validator=valid(names.check_alias))
    build_id: str = attrs.field(validator=valid(names.check_lock_id))
    recorded_at: dt.datetime = attrs.field(validator=valid(names.check_timestamp))
    python: str = attrs.field(default="", validator=valid(lambda v: v == "" or names.check_package_version(v)))
    pip: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map, validator=_PACKAGES)
    apt: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map, validator=_PACKAGES)
    disk_used_kib: int = attrs.field(default=0, validator=valid(_kib))  # 0: not recorded

    def summary(self) -> str:
        """``157 Python packages, 197 apt packages, 1.4 GiB used`` (the size when recorded)."""
        used = f", {size(self.disk_used_kib)} used" if self.disk_used_kib else ""
        return f"{len(self.pip)} Python packages, {len(self.apt)} apt packages{used}"

    def packages(self, kind: str) -> dict[str, str]:
        if kind == "python":
            return {"python": self.python} if self.python else {}
        return dict(getattr(self, kind))


_KEYS = frozenset({"schema", *(f.name for f in attrs.fields(Inventory))})


def size(kib: int) -> str:
    """A size as people read it: 20 KiB, 812 MiB, 1.4 GiB."""
    if kib < 1024:
        return f"{kib} KiB"
    if kib < 1024 * 1024:
        return f"{kib / 1024:.0f} MiB"
    return f"{kib / 1024 / 1024:.1f} GiB"


def size_change(before: int, after: int) -> str:
    """``1.2 GiB -> 1.3 GiB (+87 MiB)``, or "" when either size is not recorded."""
    if not before or not after:
        return ""
    delta = after - before
    sign = "+" if delta >= 0 else "-"
    return f"{size(before)} -> {size(after)} ({sign}{size(abs(delta))})"


# A change as ``diff --json`` prints it (docs/schemas/diff.schema.json); "from" and "to" are keywords.
ChangeJSON = TypedDict("ChangeJSON", {"kind": str, "name": str, "change": str, "from": str | None, "to": str | None})


@attrs.frozen
class Change:
    kind: str  # python, pip, apt
    name: str
    old: str | None  # None: added
    new: str | None  # None: removed

    @property
    def what(self) -> str:
        return "added" if self.old is None else "removed" if self.new is None else "changed"

    def line(self) -> str:
        if self.old is None:
            return f"+ {self.kind} {self.name} {self.new}"
        if self.new is None:
            return f"- {self.kind} {self.name} {self.old}"
        return f"~ {self.kind} {self.name} {self.old} -> {self.new}"

    def to_json(self) -> ChangeJSON:
        return {"kind": self.kind, "name": self.name, "change": self.what, "from": self.old, "to": self.new}


def diff(before: Inventory, after: Inventory) -> list[Change]:
    """Every package added, removed or changed from ``before`` to ``after``, by kind, then name."""
    out: list[Change] = []
    for kind in KINDS:
        old, new = before.packages(kind), after.packages(kind)
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                out.append(Change(kind, name, old.get(name), new.get(name)))
    return out


# -- from a verify run ---------------------------------------------------------------


def from_report(alias: str, build_id: str, report: VerifyReport) -> Inventory | None:
    """The inventory in a verify report's captured outputs (None when the run captured none);
    MatrixError when an output is not what its command prints."""
    captured = report.captured
    if not captured and "python" not in report.found:
        return None
    try:
        return Inventory(
            alias=alias,
            build_id=build_id,
            recorded_at=_now(),
            python=report.found.get("python", ""),
            pip=parse_pip(captured.get("pip", "")),
            apt=parse_apt(captured.get("apt", "")),
            disk_used_kib=parse_df(captured.get("disk", "")),
        )
    except ValueError as exc:
        raise MatrixError(f"cannot record the inventory of {alias} build {build_id}: {exc}") from None


def record(lock_path: files.StrPath, alias: str, build_id: str, report: VerifyReport) -> Inventory | None:
    """Keep what a verify run found beside the lock; the inventory (None when the run captured none)."""
    inv = from_report(alias, build_id, report)
    if inv is not None:
        save(lock_path, inv)
    return inv


def parse_pip(text: str) -> dict[str, str]:
    """``pip list --format=json`` -> {canonical name: version}; ValueError when it is not that."""
    if not text.strip():
        return {}
    rows = files.parse_json(text)
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("version"), str) for r in rows
    ):
        raise ValueError("pip list: expected a JSON list of {name, version}")
    return {reqfile.canonical_name(r["name"]): r["version"] for r in rows}


def parse_df(text: str) -> int:
    """DISK_USED's line (``df -Pk /``'s last) -> the KiB used (its third column); 0 when nothing was captured."""
    if not text.strip():
        return 0
    fields = text.strip().splitlines()[-1].split()
    if len(fields) < 6 or not fields[2].isdigit():
        raise ValueError(f"df: expected a POSIX line (filesystem, size, used, ...), got {names.shown(text.strip())}")
    return _kib(int(fields[2]))


def parse_apt(text: str) -> dict[str, str]:
    """``dpkg-query -W -f='${Package}\\t${Version}\\n'`` -> {package: version}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, tab, version = line.strip().partition("\t")
        if tab and name and version:
            out[name] = version
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# -- beside the lock -----------------------------------------------------------------


def folder(lock_path: files.StrPath) -> Path:
    """``templates.lock`` -> ``templates.inventory/``; ``templates.docker.lock`` -> ``templates.docker.inventory/``."""
    path = Path(lock_path)
    return path.with_name(path.name.removesuffix(".lock") + ".inventory")


def path_of(lock_path: files.StrPath, alias: str, build_id: str) -> Path:
    names.check_alias(alias)
    names.check_lock_id(build_id)
    return folder(lock_path) / alias / f"{build_id.replace('/', '_').replace(':', '_')}.toml"


def save(lock_path: files.StrPath, inv: Inventory) -> Path:
    path = path_of(lock_path, inv.alias, inv.build_id)
    doc: dict[str, Any] = {  # the TOML document tomli-w writes
        "schema": SCHEMA,
        **{
            f.name: (dict(v) if isinstance(v := getattr(inv, f.name), FrozenMap) else v)
            for f in attrs.fields(Inventory)
        },
    }
    blocked = files.check_writable_dir(path.parent, inside=Path(lock_path).parent, create=True)  # no folder is a link
    if blocked:
        raise ConfigError(f"cannot write the inventory: {blocked[1]}", path=blocked[0])
    files.atomic_write(path, ("# Recorded by e2b-matrix verify; do not edit.\n" + tomli_w.dumps(doc)).encode())
    return path


def load(lock_path: files.StrPath, alias: str, build_id: str) -> Inventory | None:
    """The inventory of one build, or None when none was recorded; ConfigError naming the file when bad."""
    path = path_of(lock_path, alias, build_id)
    doc = files.load_toml(path)
    if doc is None:
        return None
    t = files.Table(doc, path)
    t.only(_KEYS)
    if t.get("schema", int) != SCHEMA:
        raise ConfigError(f"expected schema {SCHEMA}", path=path, key="schema")
    try:
        inv = Inventory(
            alias=t.get("alias", str),
            build_id=t.get("build_id", str),
            recorded_at=t.get("recorded_at", dt.datetime),
            python=t.get("python", str, ""),
            pip=t.strings("pip"),
            apt=t.strings("apt"),
            disk_used_kib=t.get("disk_used_kib", int, 0),
        )
    except FieldError as exc:
        raise ConfigError(exc.message, path=path, key=exc.field) from None
    if (inv.alias, inv.build_id) != (alias, build_id):
        raise ConfigError(f"holds {inv.alias} build {inv.build_id}, not {alias} build {build_id}", path=path)
    return inv


def exists(lock_path: files.StrPath, alias: str, build_id: str) -> bool:
    return os.path.lexists(path_of(lock_path, alias, build_id))
