"""The library entry point: load the project -> resolve specs -> plan -> run -> report.

Each step is a plain function of a ``Session`` (the run's options, settings,
backend and package index) and the previous step's result, so a test or the
Nexus server can call any one alone; ``build()`` chains them::

    from e2b_matrix.workflow import Options, build
    summary = build(Options(root="path/to/project", names=("latest",)))
    summary.exit_code, summary.results

Data flows one way: files -> model -> specs -> plan -> backend -> results ->
lock. Nothing here prints; a ``Reporter`` (events.py) hears progress.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from e2b_matrix import backends, files
from e2b_matrix.errors import ConfigError
from e2b_matrix.events import Reporter, Silent
from e2b_matrix.lock import TemplateLock, store
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.model import BuildResult, BuildSpec, State
from e2b_matrix.names import check_tag, printable
from e2b_matrix.settings import Settings

if TYPE_CHECKING:  # a step imports what it uses: `resolve` reads the lock, never variants/ or the planner
    from e2b_matrix.config import Project
    from e2b_matrix.plan import Plan, PlanItem
    from e2b_matrix.release import Drift

log = logging.getLogger(__name__)

STATE_DIR = ".e2b-matrix"
LOGS_DIR = "logs"


@attrs.frozen
class Options:
    """What a run asks for: the CLI's options, or a library caller's arguments."""

    root: Path = attrs.field(default=Path("."), converter=Path)
    names: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    backend: str = backends.DEFAULT
    backend_options: Mapping = attrs.field(factory=dict)
    overrides: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    offline: bool = False
    force: bool = False
    jobs: int | None = None
    fail_fast: bool = False
    wait: bool = True
    verify: bool = False
    promote: str | None = None
    share: bool = True  # wait for the steps another build of the run computes (runner.py); False: all at once
    locked: bool = False  # refuse to build a variant whose requirements files are missing or out of date
    environment: str | None = None  # --env: an environment of e2b-matrix.toml (None: E2B_MATRIX_ENV, else the default)


@attrs.define
class Session:
    """One run: its options and settings, the backend that builds, and (made when first asked: a
    command that resolves no variant never imports them) the package index and the committed
    requirements files."""

    options: Options
    settings: Settings
    backend: backends.Backend
    _index: object = None  # index.PackageIndex: the ``index`` property
    _pins: object = None  # pins.Committed: the ``pins`` property
    logs: tuple | None = None  # (the logs folder or None), once preflight decided

    @classmethod
    def open(cls, options: Options, settings: Settings | None = None) -> Session:
        """The run's session: its settings in the environment chosen (--env, E2B_MATRIX_ENV, else the
        default of e2b-matrix.toml), and the backend that builds there."""
        from e2b_matrix import environments

        settings = settings or Settings.from_env()
        if options.promote is not None:
            check_channel(options.promote, "--promote")
        chosen = environments.load(options.root).select(
            options.environment or settings.environment, "--env" if options.environment else "E2B_MATRIX_ENV"
        )
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
        return cls(options, settings, backend)

    @property
    def index(self):
        """The package index as uv answers it (index.PackageIndex): "latest", and uv itself for compile
        (``index.uv``), with the settings' uv and options and the run's --offline."""
        if self._index is None:
            from e2b_matrix.index import PackageIndex, Uv

            s = self.settings
            self._index = PackageIndex(Uv(s.uv, s.uv_args, self.options.offline))
        return self._index

    @property
    def pins(self):
        """The project's committed requirements files (pins.Committed), each read once."""
        if self._pins is None:
            from e2b_matrix.pins import Committed

            self._pins = Committed(self.options.root)
        return self._pins

    @property
    def lock_path(self) -> Path:
        return self.options.root / self.backend.lock_file

    def lock(self) -> TemplateLock:
        return TemplateLock.load(self.lock_path)


def check_channel(channel: str, key: str) -> str:
    try:
        return check_tag(channel)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


# -- the steps ---------------------------------------------------------------------


def load(session: Session) -> Project:
    from e2b_matrix.config import apply_overrides, load_project

    secrets = session.settings.secrets()
    return apply_overrides(load_project(session.options.root, secrets), session.options.overrides, secrets)


def resolve_specs(session: Session, project: Project, lock: TemplateLock, pins=None, variants=None) -> list[BuildSpec]:
    """The selected variants (or ``variants``) as specs; ``pins`` answers their pip steps (default:
    the committed files)."""
    from e2b_matrix.resolve import build_spec

    return [
        build_spec(
            v,
            project.layers,
            session.backend,
            session.index,
            session.options.offline,
            lock.entries,
            pins=pins or session.pins,
        )
        for v in (project.select(session.options.names) if variants is None else variants)
    ]


def plan(session: Session, specs: list[BuildSpec], lock: TemplateLock) -> list[PlanItem]:
    """Each spec against the lock, and the backend's word on whether the locked artifact still
    stands here (E2B: built on this domain; Docker: the image is still there). No E2B request."""
    from e2b_matrix.plan import make_plan

    return make_plan(specs, lock.entries, session.backend.staleness)


def planned(session: Session) -> tuple[Project, TemplateLock, list[PlanItem]]:
    """load -> specs -> plan: the one chain ``build``, ``plan``, ``verify`` and ``lock check`` share."""
    project = load(session)
    lock = session.lock()
    return project, lock, plan(session, resolve_specs(session, project, lock), lock)


def preflight(session: Session, aliases=()) -> Path | None:
    """Everything a build will write, checked before the first request: the logs folder (or None:
    a warning, and no log files), the state folder, the lock files of ``aliases`` and the lock
    (ConfigError). None of them may be a symbolic link."""
    from e2b_matrix.runner import alias_lock_file

    root = session.options.root
    blocked = files.check_writable_dir(root / STATE_DIR / "locks", inside=root)
    if blocked:
        raise ConfigError(f"cannot keep build state: {blocked[1]}", path=blocked[0])
    for alias in aliases:
        path = alias_lock_file(root / STATE_DIR, alias)
        try:
            files.refuse_link(path, in_place=True)
        except files.FileError as exc:
            raise ConfigError(f"cannot keep build state: {exc}", path=path) from None
    store.preflight(session.lock_path)
    return logs_folder(session)


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


def run_logs(session: Session, folder: Path | None):
    """The run log and the variants' logs in ``folder`` (None: no files), redacting the session's secrets."""
    from e2b_matrix.logs import RunLogs
    from e2b_matrix.secrets import Redactor

    return RunLogs(folder, Redactor(tuple(session.settings.secrets())))


@attrs.frozen
class Summary:
    results: tuple[BuildResult, ...]
    exit_code: int
    error: str | None = None  # what stopped the whole run (credentials refused)


def run(session: Session, items: list[PlanItem], reporter: Reporter) -> Summary:
    """Build what the plan says is not fresh (everything with --force); record each success at once."""
    from e2b_matrix import runner

    o, backend, settings = session.options, session.backend, session.settings
    jobs = runner.make_jobs(items, o.force)
    secrets = tuple(settings.secrets())
    logs = None
    if o.promote or not all(j.fresh for j in jobs):  # a no-op checks nothing and writes nothing
        from e2b_matrix.events import Broadcast
        from e2b_matrix.logs import RunLogReporter

        logs = run_logs(session, preflight(session, [j.spec.alias for j in jobs]))
        reporter = Broadcast(reporter, RunLogReporter(logs))  # the run log hears what the console hears
    scheduler = runner.Scheduler(
        backend=backend,
        lock_path=session.lock_path,
        state_dir=o.root / STATE_DIR,
        logs=logs,
        reporter=reporter,
        jobs=o.jobs or settings.team_builds,
        force=o.force,
        fail_fast=o.fail_fast,
        wait_for_alias=o.wait,
        retry=settings.retry,
        verify=o.verify,
        promote=o.promote,
        share=o.share,
        secrets=secrets,
    )
    try:
        outcome = scheduler.run(jobs)
    finally:
        if logs is not None:
            logs.close()
    return Summary(outcome.results, outcome.exit_code, str(outcome.fatal) if outcome.fatal else None)


def build(options: Options, settings: Settings | None = None, reporter: Reporter | None = None) -> Summary:
    """Plan and build: the whole workflow, as ``e2b-matrix build`` runs it; ``reporter`` hears
    every event (events.Reporter)."""
    from e2b_matrix import resolve

    reporter = reporter or Silent()
    session = Session.open(options, settings)
    session.backend.check()  # no key: stop before the package index is asked or its cache written
    project, lock, items = planned(session)
    resolve.build_order(i.spec for i in items)  # the whole request is valid (no loop of parents) before
    specs = [i.spec for i in items]  # anything is compiled, logged or locked
    compiled = pinned(session, project, lock, specs, reporter)
    return run(session, items if compiled is specs else plan(session, compiled, lock), reporter)


def pinned(
    session: Session, project: Project, lock: TemplateLock, specs: list[BuildSpec], reporter: Reporter
) -> list[BuildSpec]:
    """The specs with every requirements file compiled: what is missing or out of date is compiled
    first (``compile_requirements``), unless the run is --locked or --offline, which refuse (ConfigError)."""
    from e2b_matrix import pins

    unpinned = [s for s in specs if pins.first_problem(s)]
    if not unpinned:
        return specs
    o = session.options
    if o.locked or o.offline:
        raise pins.refusal(unpinned, "--locked" if o.locked else "--offline", o.backend, backends.DEFAULT)
    preflight(session, [s.alias for s in specs])
    for s in unpinned:
        reporter.progress(s.name, State.COMPILING, pins.first_problem(s).path)
    compiled = {
        s.alias: s
        for s in _compile(
            session,
            project,
            lock,
            unpinned,
            pins.Compiler(o.root, session.index.uv, previous=pins.previous_files(unpinned, lock.entries)),
        )
    }
    return [compiled.get(s.alias, s) for s in specs]


def _compile(
    session: Session, project: Project, lock: TemplateLock, specs: list[BuildSpec], compiler
) -> list[BuildSpec]:
    """``specs`` resolved again with ``compiler`` answering their pip steps; uv's output in the run log.
    The requirements folder is checked first (ConfigError): it may not be, or be in, a linked folder."""
    from e2b_matrix.pins import DIR

    root = session.options.root
    blocked = files.check_writable_dir(root / DIR, inside=root)
    if blocked:
        raise ConfigError(f"cannot write requirements files: {blocked[1]}", path=blocked[0])
    with run_logs(session, logs_folder(session)) as logs:  # uv's command and output are recorded there
        compiler.uv = attrs.evolve(compiler.uv, record=logs.run.info)
        return resolve_specs(session, project, lock, pins=compiler, variants=[s.variant for s in specs])


def compile_requirements(session: Session, upgrade: bool = False, packages=(), check: bool = False):
    """``e2b-matrix compile``: each selected variant's requirements files, compiled where missing or out
    of date (``upgrade``: every package re-resolved; ``packages``: only those). ``check``: nothing is
    written and nothing compiled. Returns (the specs, what happened to each file: pins.Compiled)."""
    from e2b_matrix import pins

    if check and (upgrade or packages):
        raise ConfigError("--check writes nothing; --upgrade and --upgrade-package write", key="--check")
    wanted = pins.check_packages(upgrade, packages)
    project = load(session)
    lock = session.lock()
    before = resolve_specs(session, project, lock)
    if check:
        return before, pins.survey(before)
    pins.check_known(before, wanted)
    compiler = pins.Compiler(
        session.options.root, session.index.uv, upgrade, wanted, previous=pins.previous_files(before, lock.entries)
    )
    return _compile(session, project, lock, before, compiler), list(compiler.results.values())


def render(session: Session, name: str) -> str:
    """The variant as its backend renders it; ConfigError when a requirements file is missing or out of date."""
    from e2b_matrix import pins

    spec = resolve_specs(session, load(session), session.lock())[0]
    pins.require(spec, session.options.backend, backends.DEFAULT)
    return session.backend.render(spec)


# -- reading the plan and the lock -------------------------------------------------


def show_plan(session: Session) -> Plan:
    """``plan``: every selected variant against the lock, the steps they share, and the last known
    size of each locked build (its inventory's)."""
    from e2b_matrix import inventory
    from e2b_matrix.plan import Plan, step_trie

    items = planned(session)[2]
    sizes = {}
    for i in items:
        recorded = inventory.load(session.lock_path, i.alias, i.entry.build_id) if i.entry else None
        if recorded is not None and recorded.disk_used_kib:
            sizes[i.alias] = recorded.disk_used_kib
    return Plan(tuple(items), tuple(step_trie(i.spec for i in items)), sizes)


@attrs.frozen
class Unlike:
    """A variant built from other inputs in another environment (``lock check --same-as``)."""

    alias: str
    variant: str
    environment: str
    here: str  # the fingerprint in this environment's lock ("": not built here)
    there: str  # the fingerprint in the other's ("": not built there)

    def line(self) -> str:
        if not self.there:
            return f"{self.alias}: not built in {self.environment}"
        if not self.here:
            return f"{self.alias}: built in {self.environment}, not here"
        return (
            f"{self.alias}: built from other inputs in {self.environment} ({self.there[:19]}…, here {self.here[:19]}…)"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "alias": self.alias,
            "variant": self.variant,
            "environment": self.environment,
            "here": self.here,
            "there": self.there,
        }


def same_inputs(a: LockEntry, b: LockEntry) -> bool:
    """Built from the same inputs: the same fingerprint, or, for a variant built on a parent template
    of this project (whose build ID differs between environments), the same inputs but that one."""
    if a.fingerprint == b.fingerprint:
        return True
    strip = [{k: v for k, v in e.inputs.items() if k != "parent_build"} for e in (a, b)]
    return "parent_build" in a.inputs and bool(strip[0]) and strip[0] == strip[1]


@attrs.frozen
class LockCheck:
    """What ``lock check`` found: each variant against the lock (orphans too), drift when asked, and the
    variants built from other inputs in another environment (``--same-as``)."""

    items: tuple[PlanItem, ...]
    drift: tuple[Drift, ...] = ()
    unlike: tuple[Unlike, ...] = ()

    @property
    def bad(self) -> list[PlanItem]:
        return [i for i in self.items if i.state is not State.FRESH]

    @property
    def drifted(self) -> list[Drift]:
        return [d for d in self.drift if not d.ok]

    @property
    def ok(self) -> bool:
        return not self.bad and not self.drifted and not self.unlike

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "items": [i.to_json() for i in self.items],
            "drift": [d.to_json() for d in self.drift],
            "unlike": [u.to_json() for u in self.unlike],
        }


def check_lock(session: Session, remote: bool = False, same_as: str | None = None) -> LockCheck:
    """Every variant against the lock, plus entries no longer defined (``lock check``); with ``remote``,
    the backend's drift (``release.status``); with ``same_as``, each variant built from other inputs in
    that environment (no request: its lock is read)."""
    from e2b_matrix import release
    from e2b_matrix.plan import orphans

    other = other_lock(session, same_as, "--same-as") if same_as else None
    project, lock, items = planned(session)
    items += orphans(lock.entries, [v.alias for v in project.variants])
    unlike = []
    for v in project.select(session.options.names) if other is not None else ():
        here, there = lock.entries.get(v.alias), other.entries.get(v.alias)
        if here is None or there is None or not same_inputs(here, there):
            unlike.append(
                Unlike(
                    v.alias, v.name, str(same_as), here.fingerprint if here else "", there.fingerprint if there else ""
                )
            )
    return LockCheck(tuple(items), tuple(release.status(session)) if remote else (), tuple(unlike))


def other_lock(session: Session, name: str, flag: str) -> TemplateLock:
    """The lock of environment ``name`` of this project (``flag`` names it in an error)."""
    from e2b_matrix import environments

    env = environments.load(session.options.root).select(name, flag)
    if env.lock == session.backend.lock_file:
        raise ConfigError(f"{name!r} is the environment this command runs in: name another", key=flag)
    return TemplateLock.load(session.options.root / env.lock)


@attrs.frozen
class Verified:
    """What ``verify`` found: the plan item checked, every check's result, what the build holds."""

    item: PlanItem
    report: object  # verify.VerifyReport
    inventory: object | None  # inventory.Inventory, recorded beside the lock


def verify(session: Session) -> Verified:
    """Run the named variant's checks against its locked build; record what it holds beside the lock."""
    from e2b_matrix import inventory

    item = planned(session)[2][0]
    if item.entry is None:
        raise ConfigError(
            f"{item.name} is not built yet (no entry for {item.alias}); build it first", path=session.lock_path
        )
    session.backend.check()
    report = session.backend.verify(item.spec, item.entry)
    return Verified(item, report, inventory.record(session.lock_path, item.alias, item.entry.build_id, report))


def reference(session: Session, name: str | None = None, *, bare: bool = False, channel: str | None = None) -> str:
    """What ``resolve`` hands a shell. For a named variant or alias: always its lock entry (its pinned
    build; ``bare``: the template ID; ``channel``: ``<alias>:<channel>``). With no name: the server's
    default template, where ``E2B_TEMPLATE_ID`` wins (the seed's variable), then the lock.
    An unknown name is UnknownNameError, whatever the environment says."""
    from e2b_matrix.lock.resolver import DEFAULT_TEMPLATE

    if bare and channel is not None:
        raise ConfigError("--id and --channel ask for different things; give one", key="--channel")
    if name is None:
        if session.settings.template_id and not bare and channel is None:
            return session.settings.template_id
        name = DEFAULT_TEMPLATE
    entry = session.lock().entry(name)
    if channel is not None:
        return session.backend.channel_reference(entry, check_channel(channel, "--channel"))
    return entry.template_id if bare else session.backend.reference(entry)
