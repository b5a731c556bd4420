"""Backends: where a template is built. A registry of classes, each owning itself.

A backend class carries its name, its lock file and header, its base rule
(which base-layer parameters a template starts from), its rendering, its
smoke checks, its CLI options (as plain data: the core never imports click)
and its release operations (channels). Adding a backend is one module plus
one line in ``REGISTRY``; nothing outside this package compares a backend's
name. Backend modules import their heavy dependencies (e2b) inside methods.

The registry line holds what is known of a backend before its module is
imported (its lock file, lock header command, rendering's name, options),
and the class takes those from its line: a command parses its options, and
``--version`` or ``list`` runs, without importing a backend it does not use.
Its records are NamedTuples (frozen and typed), not attrs classes: cli.py reads
the options when it is imported, and importing attrs would add about 12 ms to
``--version`` (65 -> 78 ms here, the fastest quarter of 60 interleaved runs;
attrs is 10.5 ms of ``-X importtime`` on top of click). ``list`` and every
command that reads the project load attrs anyway.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from e2b_matrix.errors import ConfigError

if TYPE_CHECKING:  # the protocol's annotations only: the registry imports no model
    import threading

    from e2b_matrix.environments import Environment
    from e2b_matrix.lock import TemplateLock
    from e2b_matrix.lock.model import LockEntry
    from e2b_matrix.model import Base, BuildSpec, Check, Outcome, Removal
    from e2b_matrix.settings import Settings
    from e2b_matrix.verify import VerifyReport

LogSink = Callable[[list[str]], None]


class Option(NamedTuple):
    """A backend's own command-line option, as data (cli.py makes a click option of it)."""

    flag: str  # "--ca-cert"
    dest: str  # the constructor's keyword: "ca_certs"
    help: str
    multiple: bool = False
    path: bool = False  # a file that must exist


class Registered(NamedTuple):
    """A backend as the registry knows it, its module not imported: where its class is, and the
    facts the class takes from here (``lock_file``, ``regenerate``, ``render_format``, ``options``)."""

    target: str  # "module:Class", imported on first use
    lock_file: str  # its own lock, so the Nexus lock never mixes backends
    regenerate: str  # the lock header's "Regenerate:" command
    render_format: str  # what `render --format` calls its rendering
    options: tuple[Option, ...] = ()
    in_environments: bool = False  # builds in an environment of e2b-matrix.toml (--env): its endpoint and key


REGISTRY = {
    "e2b": Registered(
        "e2b_matrix.backends.e2b:E2BBackend",
        lock_file="templates.lock",
        regenerate="make build-all",
        render_format="json",
        in_environments=True,
    ),
    "docker": Registered(
        "e2b_matrix.backends.docker:DockerBackend",
        lock_file="templates.docker.lock",
        regenerate="make build-all BACKEND=docker",
        render_format="dockerfile",
        options=(
            Option(
                "--ca-cert",
                "ca_certs",
                "CA certificate (PEM) to install in Docker builds (repeatable).",
                multiple=True,
                path=True,
            ),
        ),
    ),
}
DEFAULT = "e2b"


class ChannelState(NamedTuple):
    """Where a channel points on the backend, for ``status``: a build ID, or None when unset."""

    channel: str
    build_id: str | None


class Backend(Protocol):
    name: str
    lock_file: str  # these four: its registry line's (Registered), an environment's lock for E2B
    regenerate: str
    render_format: str
    options: tuple[Option, ...]

    def base(self, params: Mapping[str, Any]) -> Base:
        """Where a template starts, from the base layer's parameters."""

    def files(self) -> tuple[tuple[str, str], ...]:
        """(name, sha256) of extra files every build takes (fingerprinted)."""

    def runs(self, check: Check) -> bool:
        """Can verify run this check here?"""

    def render(self, spec: BuildSpec) -> str: ...

    def check(self) -> None:
        """Fail at once (CredentialsError, ConfigError) when this backend cannot build or ask."""

    def staleness(self, entry: LockEntry) -> str | None:
        """Why a lock entry no longer stands for what this backend would serve, or None."""

    def gone(self, entry: LockEntry, build_id: str) -> str | None:
        """Why build ``build_id`` of the entry's alias cannot run here (it is gone), or None: it is
        there. An error that leaves it unknown (no answer) is raised, never taken for "gone"."""

    def shares_in_flight(self) -> bool:
        """Does the engine run an identical step of concurrent builds once (BuildKit)? Then every
        build starts at once; else a build waits for the steps another is building (runner.py: sharing)."""

    def build(
        self,
        spec: BuildSpec,
        *,
        force: bool,
        log: LogSink,
        cancel: threading.Event,
        progress: Callable[[int], None] | None = None,
    ) -> Outcome:
        """Build one spec; raise BuildError, TransientError, Cancelled or CredentialsError.

        ``progress(d)``, when the backend can tell: the base and steps 1..d are
        now in the cache, where another build would hit them."""

    def verify(self, spec: BuildSpec, built: LockEntry | Outcome) -> VerifyReport:
        """Run the spec's checks (those this backend ``runs``) on the build."""

    def reference(self, entry: LockEntry) -> str:
        """What runs the pinned build (E2B: ``<alias>:<build_id>``)."""

    def channel_reference(self, entry: LockEntry, channel: str) -> str: ...

    def leftovers(self, lock: TemplateLock, defined: set[str]) -> list[Removal]:
        """What this backend built that ``lock`` no longer needs (prune): never a build of the lock, of
        its history, or behind a channel. ``defined``: the aliases of the project's variants."""

    def remove(self, ref: str) -> str | None:
        """Remove one leftover (its ``ref``); None when it is gone, else why not (the run goes on)."""

    def point(self, entry: LockEntry, channel: str, build_id: str) -> None:
        """Point ``channel`` of the entry's alias at one of its builds."""

    def channels(self, entry: LockEntry) -> tuple[list[ChannelState], str | None]:
        """(where each channel points, what is gone: None, or "template"/"build ...")."""


def names() -> list[str]:
    return sorted(REGISTRY)


def registered(name: str) -> Registered:
    """Backend ``name``'s registry line; ConfigError for a name the registry does not hold."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r} (known: {', '.join(names())})", key="--backend") from None


def backend_class(name: str) -> Callable[..., Backend]:
    """The class of backend ``name``: the one backend module imported."""
    module, _, cls = registered(name).target.partition(":")
    found: Callable[..., Backend] = getattr(importlib.import_module(module), cls)
    return found


def formats() -> list[str]:
    """What ``render --format`` accepts: every backend's rendering."""
    return sorted(REGISTRY[n].render_format for n in names())


def by_format(fmt: str) -> str:
    """The backend whose rendering ``render --format`` calls ``fmt``."""
    for name in names():
        if REGISTRY[name].render_format == fmt:
            return name
    raise ConfigError(f"unknown format {fmt!r}", key="--format")


def all_options() -> list[tuple[str, Option]]:
    """Every backend's options, with the backend's name (for the CLI); no backend module is imported."""
    return [(name, o) for name in names() for o in REGISTRY[name].options]


def make(
    name: str,
    settings: Settings,
    values: Mapping[str, Any] | None = None,
    environment: Environment | None = None,
    explicit: bool = False,
) -> Backend:
    """An instance of backend ``name`` for this run; options of other backends are refused. A backend that
    builds in environments (``in_environments``: E2B) gets the ``environment`` (environments.py) and its
    settings; another refuses one named explicitly (--env)."""
    mine = {o.dest for o in registered(name).options}
    kwargs: dict[str, Any] = {}
    for other, o in all_options():
        value = (values or {}).get(o.dest)
        if not value:
            continue
        if o.dest not in mine:
            raise ConfigError(f"applies to --backend {other} only", key=o.flag)
        kwargs[o.dest] = value
    if environment is not None and registered(name).in_environments:
        kwargs["environment"] = environment
    elif explicit and environment is not None and environment.declared:
        raise ConfigError(
            f"environments are E2B deployments; --backend {name} builds here ({REGISTRY[name].lock_file})", key="--env"
        )
    return backend_class(name)(settings, **kwargs)
