"""One command's context: its options, its settings in the environment chosen, the backend that builds.

``Session.open`` is where every command starts (the CLI's ``Env.session``, a library caller, the
Nexus server); the pipeline (workflow.py), the release commands (release.py) and prune take the
session it returns. Beside it, what they all share: the run's log files (``logs_folder``,
``run_logs``), a channel's check, and another environment's lock.

The package index and the committed requirements files are made when first asked (``index``,
``pins``): a command that resolves no variant (``resolve``, ``promote``, ``status``) never imports
them (bench/run.py's resolve_ratio; tests/test_startup.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from e2b_matrix import backends, environments, files
from e2b_matrix.backends import Backend
from e2b_matrix.environments import Environment, Environments
from e2b_matrix.errors import ConfigError
from e2b_matrix.lock import TemplateLock
from e2b_matrix.logs import RunLogs
from e2b_matrix.names import check_tag, printable
from e2b_matrix.secrets import Redactor
from e2b_matrix.settings import Settings

if TYPE_CHECKING:  # imported when first asked (the properties below): uv's client and the pins
    from e2b_matrix.index import PackageIndex
    from e2b_matrix.pins import Committed

log = logging.getLogger(__name__)

STATE_DIR = ".e2b-matrix"
LOGS_DIR = "logs"


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class Options:
    """What a run asks for: the CLI's options, or a library caller's arguments."""

    root: Path = attrs.field(default=Path("."), converter=Path)
    names: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    backend: str = backends.DEFAULT
    backend_options: Mapping[str, Any] = attrs.field(factory=dict)  # each backend's own options (backends.Option)
    overrides: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    offline: bool = False
    force: bool = False
    jobs: int | None = None
    fail_fast: bool = False
    wait: bool = True
    verify: bool = False
    promote: str | None = None
    share: bool = True  # wait for the steps another build of the run computes (runner/); False: all at once
    locked: bool = False  # refuse to build a variant whose requirements files are missing or out of date
    environment: str | None = None  # --env: an environment of e2b-matrix.toml (None: E2B_MATRIX_ENV, else the default)


@attrs.define
class Session:
    """One run: its options and settings, the backend that builds, and (made when first asked: a
    command that resolves no variant never imports them) the package index and the committed
    requirements files."""

    options: Options
    settings: Settings
    backend: Backend
    environments: Environments  # the project file's, read once per command
    chosen: Environment  # the one this command runs in
    _index: PackageIndex | None = None  # the ``index`` property
    _pins: Committed | None = None  # the ``pins`` property
    logs: tuple[Path | None] | None = None  # (the logs folder or None), once preflight decided

    @classmethod
    def open(cls, options: Options, settings: Settings | None = None) -> Session:
        """The run's session: its settings in the environment chosen (--env, E2B_MATRIX_ENV, else the
        default of e2b-matrix.toml), and the backend that builds there."""
        settings = settings or Settings.from_env()
        if options.promote is not None:
            check_channel(options.promote, "--promote")
        project = environments.load(options.root)
        chosen = project.choose(options.environment, settings.environment)
        if backends.registered(options.backend).in_environments:
            settings = environments.apply(settings, chosen)
        backend = backends.make(
            options.backend, settings, options.backend_options, chosen, explicit=options.environment is not None
        )
        if options.jobs is not None and not 1 <= options.jobs <= settings.team_builds:
            raise ConfigError(
                f"{options.jobs} builds at once: the team has {settings.team_builds} "
                "(E2B_MATRIX_TEAM_BUILDS, or the environment's team_builds)",
                key="--jobs",
            )
        return cls(options, settings, backend, project, chosen)

    @property
    def index(self) -> PackageIndex:
        """The package index as uv answers it (index.PackageIndex): "latest", and uv itself for compile
        (``index.uv``), with the settings' uv and options and the run's --offline."""
        if self._index is None:
            from e2b_matrix.index import PackageIndex, Uv  # uv's client: only a command that resolves variants

            s = self.settings
            self._index = PackageIndex(Uv(s.uv, s.uv_args, self.options.offline))
        return self._index

    @property
    def pins(self) -> Committed:
        """The project's committed requirements files (pins.Committed), each read once."""
        if self._pins is None:
            from e2b_matrix.pins import Committed  # with the variants' model: only a command that resolves them

            self._pins = Committed(self.options.root)
        return self._pins

    @property
    def lock_path(self) -> Path:
        return self.options.root / self.backend.lock_file

    def lock(self) -> TemplateLock:
        return TemplateLock.load(self.lock_path)


def check_channel(channel: str, key: str) -> str:
    """``channel`` as a channel name (an E2B tag); ConfigError naming ``key`` when it is not one."""
    try:
        return check_tag(channel)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


def logs_folder(session: Session) -> Path | None:
    """The logs folder, or None (no log files: set so, or one warning when it cannot be written).
    Decided once per session, so a build that compiles first warns once."""
    if session.logs is None:
        root = session.options.root
        folder = root / LOGS_DIR if session.settings.log_files else None
        blocked = files.check_writable_dir(folder, inside=root) if folder else None
        if blocked:
            log.warning("%s: %s; writing no log files", printable(blocked[0]), blocked[1])
            folder = None
        session.logs = (folder,)
    return session.logs[0]


def run_logs(session: Session, folder: Path | None) -> RunLogs:
    """The run log and the variants' logs in ``folder`` (None: no files), redacting the session's secrets."""
    return RunLogs(folder, Redactor(tuple(session.settings.secrets())))


def other_lock(session: Session, name: str, flag: str) -> TemplateLock:
    """The lock of environment ``name`` of this project (``flag`` names it in an error)."""
    env = session.environments.select(name, flag)
    if env.lock == session.backend.lock_file:
        raise ConfigError(f"{name!r} is the environment this command runs in: name another", key=flag)
    return TemplateLock.load(session.options.root / env.lock)
