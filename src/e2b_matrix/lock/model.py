"""The lock's values: one built template (``LockEntry``) and the builds before it (``Build``).

Frozen attrs classes whose every field is validated on construction with the rules the project's
own files follow (names.py): whatever a lock says reaches a build step, a shell or a terminal only
through these. A check that fails raises a FieldError naming the field (``layers.nexus``); the
reader (format.py) adds the file and the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, NotRequired, TypedDict

import attrs

from e2b_matrix import names
from e2b_matrix.errors import FieldError
from e2b_matrix.model import FrozenMap, frozen_map, map_of, optional, valid

HISTORY_LIMIT = 5  # builds a lock entry remembers for rollback


def _utc(value: dt.datetime) -> dt.datetime:
    try:
        return names.check_timestamp(value)
    except ValueError as exc:
        raise FieldError("built_at", str(exc)) from None


# Every value a lock may hold, checked by the rules the project's own files are checked by
# (names.py): whatever a lock says reaches a build step, a shell or a terminal only through these.
_LAYERS = map_of(names.check_layer_name, names.check_layer_version)
_INPUTS = map_of(names.check_input_key, names.check_text)
_CHANNELS = map_of(names.check_tag, names.check_lock_id)


class BuildJSON(TypedDict):
    """A build of an entry's history as ``lock show --json`` prints it (docs/schemas/lock-show.schema.json)."""

    build_id: str
    fingerprint: str
    built_at: str
    layers: NotRequired[dict[str, str]]
    image: NotRequired[str]
    template_id: NotRequired[str]


class LockEntryJSON(TypedDict):
    """A lock entry as ``lock show --json`` prints it: its fields (empty optional ones left out), times in
    ISO 8601, and the reference."""

    variant: str
    template_id: str
    build_id: str
    fingerprint: str
    layers: dict[str, str]
    built_at: str
    domain: NotRequired[str]
    api_url: NotRequired[str]
    image: NotRequired[str]
    inputs: NotRequired[dict[str, str]]
    channels: NotRequired[dict[str, str]]
    history: NotRequired[list[BuildJSON]]
    reference: str


@attrs.frozen(slots=False)
class Build:
    """A previous build of a lock entry's alias: what rollback returns to.

    ``template_id`` only when it differs from the entry's (a Docker image ID does; an E2B one does not).
    """

    build_id: str = attrs.field(validator=valid(names.check_lock_id))
    fingerprint: str = attrs.field(validator=valid(names.check_fingerprint))
    built_at: dt.datetime = attrs.field(converter=_utc)
    layers: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map, validator=_LAYERS)
    image: str = attrs.field(default="", validator=valid(optional(names.check_image)))
    template_id: str = attrs.field(default="", validator=valid(optional(names.check_lock_id)))

    def to_json(self) -> BuildJSON:
        out: BuildJSON = {"build_id": self.build_id, "fingerprint": self.fingerprint, "built_at": _iso(self.built_at)}
        if self.layers:
            out["layers"] = dict(self.layers)
        if self.image:
            out["image"] = self.image
        if self.template_id:
            out["template_id"] = self.template_id
        return out


def _builds(value: Iterable[Build]) -> tuple[Build, ...]:
    return tuple(value)


@attrs.frozen(slots=False)
class LockEntry:
    """One built template, as the lock records it under ``[templates.<alias>]``.

    ``reference`` is the pinned build (``<template_id>:<build_id>``): what the
    Nexus server hands to ``Sandbox.create``. ``channels`` maps each E2B tag
    this tool promoted to the build ID it points at; ``history`` holds the
    previous builds, newest first.
    """

    alias: str = attrs.field(validator=valid(names.check_alias))
    variant: str = attrs.field(validator=valid(names.check_name))
    template_id: str = attrs.field(validator=valid(names.check_lock_id))
    build_id: str = attrs.field(validator=valid(names.check_lock_id))
    fingerprint: str = attrs.field(validator=valid(names.check_fingerprint))
    layers: FrozenMap = attrs.field(converter=frozen_map, validator=_LAYERS)
    built_at: dt.datetime = attrs.field(converter=_utc)
    # the E2B domain; empty for Docker builds
    domain: str = attrs.field(default="", validator=valid(optional(names.check_host)))
    # E2B_API_URL when the build went there instead of https://api.<domain> (an emulator, a proxy)
    api_url: str = attrs.field(default="", validator=valid(optional(names.check_http_url)))
    # the Docker image tag; empty for E2B builds
    image: str = attrs.field(default="", validator=valid(optional(names.check_image)))
    inputs: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map, validator=_INPUTS)
    channels: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map, validator=_CHANNELS)
    history: tuple[Build, ...] = attrs.field(
        default=(), converter=_builds, validator=attrs.validators.deep_iterable(attrs.validators.instance_of(Build))
    )

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
        this = Build(
            self.build_id,
            self.fingerprint,
            self.built_at,
            self.layers,
            self.image,
            self.template_id if self.template_id != new.template_id else "",
        )
        history = (this, *self.history) if self.build_id != new.build_id else self.history
        return attrs.evolve(new, channels=self.channels, history=history[:HISTORY_LIMIT])

    def rolled_back(self) -> LockEntry:
        """Back to the previous build; channels that pointed at this build follow it back."""
        prev = self.history[0]
        channels = {ch: (prev.build_id if bid == self.build_id else bid) for ch, bid in self.channels.items()}
        return attrs.evolve(
            self,
            build_id=prev.build_id,
            fingerprint=prev.fingerprint,
            layers=prev.layers,
            built_at=prev.built_at,
            image=prev.image or self.image,
            template_id=prev.template_id or self.template_id,
            inputs={},
            channels=channels,
            history=self.history[1:],
        )

    def promoted(self, channel: str, build_id: str | None = None) -> LockEntry:
        """``channel`` recorded as pointing at ``build_id`` (default: this entry's build)."""
        return attrs.evolve(self, channels={**self.channels, channel: build_id or self.build_id})

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain data (without the alias, its key); empty optional fields left out."""
        return _plain(self)

    def to_json(self) -> LockEntryJSON:
        """As ``lock show --json`` prints it: the TOML's fields (empty optional ones left out, as in
        ``to_dict``), times in ISO 8601, and the reference."""
        out: LockEntryJSON = {
            "variant": self.variant,
            "template_id": self.template_id,
            "build_id": self.build_id,
            "fingerprint": self.fingerprint,
            "layers": dict(self.layers),
            "built_at": _iso(self.built_at),
            "reference": self.reference,
        }
        if self.domain:
            out["domain"] = self.domain
        if self.api_url:
            out["api_url"] = self.api_url
        if self.image:
            out["image"] = self.image
        if self.inputs:
            out["inputs"] = dict(self.inputs)
        if self.channels:
            out["channels"] = dict(self.channels)
        if self.history:
            out["history"] = [b.to_json() for b in self.history]
        return out


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: LockEntry | Build) -> dict[str, Any]:
    """A lock value's fields as plain data (TOML values, for tomli-w), in field order; empty optional
    ones left out."""
    out: dict[str, Any] = {}
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
