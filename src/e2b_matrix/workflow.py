"""The library entry point: load the project -> resolve specs -> plan -> run -> report.

Each step is a plain function of a ``Session`` (session.py: the run's options, settings, backend
and package index) and the previous step's result, so a test or the Nexus server can call any one
alone; ``build()`` chains them::

    from e2b_matrix.workflow import Options, build
    summary = build(Options(root="path/to/project", names=("latest",)))
    summary.exit_code, summary.results

Data flows one way: files -> model -> specs -> plan -> backend -> results ->
lock. Nothing here prints; a ``Reporter`` (events.py) hears progress.

The modules that read variants/ and resolve them (config, resolve, plan, pins, index), the
runner, and the inventories and releases (inventory, release) are imported by the step that uses
them: ``resolve`` reads only the lock, and a command that builds nothing never loads the runner's
threads (tests/test_startup.py). Each costs ``resolve`` 5 ms of CPU or more that it does not use
(the project's modules 28 ms, the runner 42 ms, inventory and release 9 ms, against 28 ms for
importing click; bench/run.py's resolve_ratio measures the whole command).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from e2b_matrix import backends, files
from e2b_matrix.errors import ConfigError
from e2b_matrix.events import Broadcast, Reporter, Silent
from e2b_matrix.lock import TemplateLock, store
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.lock.resolver import DEFAULT_TEMPLATE
from e2b_matrix.logs import RunLogReporter
from e2b_matrix.model import BuildResult, BuildSpec, State, Variant
from e2b_matrix.session import STATE_DIR, check_channel, logs_folder, other_lock, run_logs
from e2b_matrix.session import Options as Options  # the library's entry: ``workflow.build(Options(...))``
from e2b_matrix.session import Session as Session
from e2b_matrix.settings import Settings
from e2b_matrix.verify import VerifyReport

if TYPE_CHECKING:  # imported by the step that uses them (above)
    from e2b_matrix.config import Project
    from e2b_matrix.inventory import Inventory
    from e2b_matrix.pins import Committed, Compiled, Compiler
    from e2b_matrix.plan import Plan, PlanItem
    from e2b_matrix.release import Drift

# -- the steps ---------------------------------------------------------------------


def load(session: Session) -> Project:
    """The project at the session's root, its ``--set`` overrides applied."""
    from e2b_matrix.config import apply_overrides, load_project

    secrets = session.settings.secrets()
    return apply_overrides(load_project(session.options.root, secrets), session.options.overrides, secrets)


def resolve_specs(
    session: Session,
    project: Project,
    lock: TemplateLock,
    pins: Committed | None = None,
    variants: list[Variant] | None = None,
) -> list[BuildSpec]:
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


def preflight(session: Session, aliases: list[str]) -> Path | None:
    """Everything a build will write, checked before the first request: the logs folder (or None:
    a warning, and no log files), the state folder, the lock files of ``aliases`` and the lock
    (ConfigError). None of them may be a symbolic link."""
    from e2b_matrix.runner import alias_lock_file  # the runner: only a command that builds

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


@attrs.frozen
class Summary:
    results: tuple[BuildResult, ...]
    exit_code: int
    error: str | None = None  # what stopped the whole run (credentials refused)


def run(session: Session, items: list[PlanItem], reporter: Reporter) -> Summary:
    """Build what the plan says is not fresh (everything with --force); record each success at once."""
    from e2b_matrix import runner  # its threads and the lock writer: only a command that builds

    o, settings = session.options, session.settings
    jobs = runner.make_jobs(items, o.force)
    logs = None
    if o.promote or not all(j.fresh for j in jobs):  # a no-op checks nothing and writes nothing
        logs = run_logs(session, preflight(session, [j.spec.alias for j in jobs]))
        reporter = Broadcast(reporter, RunLogReporter(logs))  # the run log hears what the console hears
    scheduler = runner.Scheduler(
        backend=session.backend,
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
        secrets=tuple(settings.secrets()),
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
    specs = [i.spec for i in items if i.spec is not None]  # a planned variant always has its spec
    resolve.build_order(specs)  # the whole request is valid (no loop of parents) before
    compiled = pinned(session, project, lock, specs, reporter)  # anything is compiled, logged or locked
    return run(session, items if compiled is specs else plan(session, compiled, lock), reporter)


def pinned(
    session: Session, project: Project, lock: TemplateLock, specs: list[BuildSpec], reporter: Reporter
) -> list[BuildSpec]:
    """The specs with every requirements file compiled: what is missing or out of date is compiled
    first (``compile_requirements``), unless the run is --locked or --offline, which refuse (ConfigError)."""
    from e2b_matrix import pins

    problems = {s.alias: problem for s in specs if (problem := pins.first_problem(s)) is not None}
    if not problems:
        return specs
    unpinned = [s for s in specs if s.alias in problems]
    o = session.options
    if o.locked or o.offline:
        raise pins.refusal(unpinned, "--locked" if o.locked else "--offline", o.backend, backends.DEFAULT)
    preflight(session, [s.alias for s in specs])
    for s in unpinned:
        reporter.progress(s.name, State.COMPILING, problems[s.alias].path)
    previous = pins.previous_files(unpinned, lock.entries)
    compiler = pins.Compiler(session.pins, session.index.uv, previous=previous)
    compiled = {s.alias: s for s in _compile(session, project, lock, unpinned, compiler)}
    return [compiled.get(s.alias, s) for s in specs]


def _compile(
    session: Session, project: Project, lock: TemplateLock, specs: list[BuildSpec], compiler: Compiler
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


def compile_requirements(
    session: Session, upgrade: bool = False, packages: tuple[str, ...] = (), check: bool = False
) -> tuple[list[BuildSpec], list[Compiled]]:
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
        session.pins, session.index.uv, upgrade, wanted, previous=pins.previous_files(before, lock.entries)
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
    return Plan(tuple(items), tuple(step_trie(i.spec for i in items if i.spec is not None)), sizes)


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


def unlike(variants: list[Variant], lock: TemplateLock, other: TemplateLock, environment: str) -> list[Unlike]:
    """The ``variants`` not built from the same inputs here (``lock``) and in ``environment`` (``other``)."""
    out = []
    for v in variants:
        here, there = lock.entries.get(v.alias), other.entries.get(v.alias)
        if here is None or there is None or not same_inputs(here, there):
            out.append(
                Unlike(
                    v.alias, v.name, environment, here.fingerprint if here else "", there.fingerprint if there else ""
                )
            )
    return out


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
    the backend's drift (``release.drift``); with ``same_as``, each variant built from other inputs in
    that environment (no request: its lock is read)."""
    from e2b_matrix.plan import orphans
    from e2b_matrix.release import drift

    other = other_lock(session, same_as, "--same-as") if same_as else None
    project, lock, items = planned(session)
    items += orphans(lock.entries, [v.alias for v in project.variants])
    differ = unlike(project.select(session.options.names), lock, other, str(same_as)) if other is not None else []
    return LockCheck(tuple(items), tuple(drift(session, lock)) if remote else (), tuple(differ))


@attrs.frozen
class Verified:
    """What ``verify`` found: the plan item checked, every check's result, what the build holds."""

    item: PlanItem
    report: VerifyReport
    inventory: Inventory | None  # recorded beside the lock


def verify(session: Session) -> Verified:
    """Run the named variant's checks against its locked build; record what it holds beside the lock."""
    from e2b_matrix import inventory

    item = planned(session)[2][0]
    if item.entry is None:
        raise ConfigError(
            f"{item.name} is not built yet (no entry for {item.alias}); build it first", path=session.lock_path
        )
    assert item.spec is not None  # a planned item has its spec (only an orphan of the lock has none)
    session.backend.check()
    report = session.backend.verify(item.spec, item.entry)
    return Verified(item, report, inventory.record(session.lock_path, item.alias, item.entry.build_id, report))


def reference(session: Session, name: str | None = None, *, bare: bool = False, channel: str | None = None) -> str:
    """What ``resolve`` hands a shell. For a named variant or alias: always its lock entry (its pinned
    build; ``bare``: the template ID; ``channel``: ``<alias>:<channel>``). With no name: the server's
    default template, where ``E2B_TEMPLATE_ID`` wins (the seed's variable), then the lock.
    An unknown name is UnknownNameError, whatever the environment says."""
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
