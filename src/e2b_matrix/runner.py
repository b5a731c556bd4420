"""The scheduler: one loop owns the plan, starts each build when it can run, and lands results.

As the parallel runners of tox and nox do: the loop (``Scheduler.run``, in the
caller's thread) keeps every job that has not started and submits one to the
worker pool only when it can run:

- its parent template, when the run builds that too, has built (the child is
  rebased on that build; a parent that failed skips it);
- the steps it shares with another build of the run are published (below);
- a team slot is free: at most ``jobs`` builds at once, and fewer while E2B
  answers 429 because other builds of the team hold its slots (``Window``);
- its retry is due (``RetryPolicy.next_delay``: a build waiting to retry holds
  no slot);
- its alias is free: no other process builds it (the flock in
  ``.e2b-matrix/locks/<alias>.lock``, held from start to landing). A run that
  finds the alias built meanwhile by another run takes that build as fresh.

A worker only builds (and verifies): it never waits on another job. What it
learns (a log line, a step published, its outcome) comes back to the loop as
an event on one queue. Finished builds land by group commit: one writer
thread records every build that ended since its last write with one lock
write (``store.record_builds``) and promotes them (``promote``: the one place
a channel moves), so a finished build is written at once, the writes do not
grow with the run, and the loop never waits on the disk to start a build.
Once written, the loop releases their aliases and tells the reporter
(events.Reporter). A failure never touches its variant's
entry; --fail-fast, Ctrl-C, SIGTERM and a refused key stop starting builds and
cancel the running ones, and everything that finished stays in the lock.

Sharing (``share_gates``): E2B looks its layer cache up as a build reaches
each step and does not merge identical steps of builds running at once, so
variants that start with the same steps would each run them. Each node of
the step trie (plan.step_trie) gets one owner: the variant through it with
the most steps (the parent's owner where it passes), so one build computes
each shared prefix. Every other variant starts when that prefix is published
(``progress`` from the owner's build, or the owner's end, or while the owner
waits for another process's build of its alias) and meets it as cache hits. Where the engine merges identical steps itself (BuildKit) or
with --force, or with --no-share, every build may start at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from e2b_matrix import files, release, resolve
from e2b_matrix.clock import Clock
from e2b_matrix.errors import (BuildError, Cancelled, CredentialsError, MatrixError, SlotsFull,
                               TransientError)
from e2b_matrix.events import Reporter, Silent
from e2b_matrix.lock import store
from e2b_matrix.model import BuildResult, BuildSpec, LockEntry, Outcome, State
from e2b_matrix.names import printable
from e2b_matrix.retry import RetryPolicy, gave_up

log = logging.getLogger(__name__)

_NO_LOG = logging.Logger("e2b_matrix.variant")  # a run without log files: outside the hierarchy, no handler
_NO_LOG.addHandler(logging.NullHandler())
_NO_LOG.propagate = False

ALIAS_RECHECK_S = 0.5   # how often a job waiting for another process's build of its alias looks again
TICK_S = 0.5            # the longest the loop sleeps without an event (an interrupt is always an event)


def alias_lock_file(state_dir: Path, alias: str) -> Path:
    """The file whose flock says ``alias`` is being built, across processes (see DESIGN: never twice at once)."""
    return state_dir / "locks" / f"{alias}.lock"


@attrs.frozen
class Job:
    spec: BuildSpec
    entry: LockEntry | None     # its lock entry when the run started
    fresh: bool                 # unchanged since that entry (the plan said so)
    parent: str | None = None   # alias of a variant of this run it is built on


def make_jobs(items, force: bool = False) -> list[Job]:
    """Plan items -> jobs, parents first (graphlib)."""
    by_alias = {i.alias: i for i in items}
    specs = resolve.build_order(i.spec for i in items)
    aliases = set(by_alias)
    return [Job(s, by_alias[s.alias].entry, by_alias[s.alias].state is State.FRESH and not force,
                resolve.parent_alias(s, aliases)) for s in specs]


def share_gates(specs: Iterable[BuildSpec]) -> dict[str, tuple[str, int]]:
    """alias -> (the alias whose build computes its shared prefix, that prefix's last depth).

    Depth 0 is the base, d the d-th step. A variant absent from the result waits for nobody.
    """
    from e2b_matrix.plan import step_trie

    specs = list(specs)
    alias = {s.name: s.alias for s in specs}
    rank = {s.name: (len(s.steps), -i) for i, s in enumerate(specs)}  # most steps first, then plan order
    gates: dict[str, tuple[str, int]] = {}

    def walk(node, owner: str | None) -> None:
        if owner not in node.variants:
            owner = max(node.variants, key=rank.__getitem__)
        for v in node.variants:
            if v != owner:  # deeper nodes come later on v's path: the last foreign one is the gate
                gates[alias[v]] = (alias[owner], node.depth)
        for child in node.children:
            walk(child, owner)

    for root in step_trie(specs):
        walk(root, None)
    return gates


class Window:
    """How many builds the run may have at once: ``most`` (--jobs), lowered when E2B says the
    team's slots are full, raised again as builds end (additive increase, multiplicative decrease
    as TCP does: one more slot after a window's worth of builds ended without a refusal)."""

    def __init__(self, most: int):
        self.most = self.size = most
        self._ended = 0

    def refused(self, running: int) -> None:
        """E2B answered 429 with ``running`` of this run's builds counted: that is what fits now."""
        self.size = max(1, min(self.size, running))
        self._ended = 0

    def ended(self) -> None:
        self._ended += 1
        if self._ended >= self.size and self.size < self.most:
            self.size += 1
            self._ended = 0


@attrs.define(eq=False)
class _Task:
    """A job as the loop tracks it."""

    job: Job
    spec: BuildSpec
    attempts: int = 0               # build attempts made (a refusal for the team's slots is none)
    first_start: float | None = None
    not_before: float = 0.0         # a retry waits until then
    alias_lock: files.FileLock | None = None  # held from the start to the landing
    alias_checked: float = 0.0      # when the alias was last found busy
    rebased: bool = False
    told: str = ""                  # the last waiting reason reported


@attrs.define(slots=False)  # run() keeps its state on the instance
class Scheduler:
    backend: object
    lock_path: Path
    state_dir: Path                      # .e2b-matrix/: one lock file per alias being built
    logs: object = None                  # logs.RunLogs (None: nothing will build)
    reporter: Reporter = attrs.field(factory=Silent)
    jobs: int = 20
    force: bool = False
    fail_fast: bool = False
    wait_for_alias: bool = True
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    verify: bool = False
    promote: str | None = None           # channel to point at what built or was fresh
    share: bool = True                   # start a build when the steps it shares are published (above)
    secrets: tuple[str, ...] = ()
    clock: Clock = attrs.field(factory=Clock)
    cancel: threading.Event = attrs.field(factory=threading.Event)
    fatal: MatrixError | None = None
    interrupted: bool = False
    window: Window | None = None

    def run(self, jobs: Iterable[Job]) -> list[BuildResult]:
        """Build every job that is not fresh; each result, in the order of ``jobs``."""
        jobs = list(jobs)
        self.window = Window(max(1, self.jobs))
        self._events: queue.Queue = queue.Queue()
        self._results: dict[str, BuildResult] = {}
        self._published: dict[str, int] = {}      # alias -> deepest step its build published
        self._ended: set[str] = set()             # aliases whose build of this run ended
        self._elsewhere: set[str] = set()         # aliases waiting for another process's build of them
        self._tasks: dict[str, _Task] = {}        # alias -> its task, for the events about it
        self._running: dict[str, _Task] = {}
        self._landing: list = []                  # (task, outcome, report) built, waiting for a write
        self._writing: list | None = None         # the batch being written
        self._signalled = False                   # SIGINT or SIGTERM arrived
        self._changed = True                      # something a pending job may wait for happened
        self._building = building = set()        # aliases this run builds (not fresh)
        fresh = []
        for job in jobs:
            if job.fresh and job.parent not in building:
                fresh.append(job)
            else:
                building.add(job.spec.alias)
        self._gates = {}
        todo = [j for j in jobs if j.spec.alias in building]
        if todo and self.share and not self.force and not self.backend.shares_in_flight():
            # a child of a parent built in this run starts on the parent's new build: its own trie
            self._gates = share_gates(j.spec for j in todo if j.parent not in building)
        self._pending = [_Task(j, j.spec) for j in self._owners_first(todo)]
        self._tasks = {t.spec.alias: t for t in self._pending}
        self._finish_fresh([(j.spec, j.entry, None) for j in fresh], "unchanged since its lock entry")
        for t in self._pending:
            self.reporter.started(t.spec.name, t.spec.alias)
        if self._pending:
            with self._signals():
                self._loop()
        return [self._results[j.spec.name] for j in jobs]

    # -- the loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        # Never more workers than the window's most: a submitted job always runs at once.
        self._pool = ThreadPoolExecutor(max_workers=self.window.most, thread_name_prefix="build")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lock")
        try:
            while self._busy():
                try:
                    if self._changed:  # a log line changes nothing a pending job waits for
                        self._changed = False
                        self._start_ready()
                        if not self._busy():
                            break
                    event = self.clock.next_event(self._events, self._timeout())
                    self._changed |= event is None  # a retry or an alias check may be due
                    while event is not None:  # everything that happened meanwhile, then one landing
                        self._handle(event)
                        event = self._next_now()
                    self._land()
                except KeyboardInterrupt:  # no handler of ours (a caller's thread, or a signal before it)
                    self._stop("interrupted", interrupted=True)
        finally:
            if self._running:  # only after a bug in the loop: stop the workers, then wait for them
                self.cancel.set()
            self._pool.shutdown(wait=True)
            self._writer.shutdown(wait=True)

    def _busy(self) -> bool:
        return bool(self._pending or self._running or self._landing or self._writing)

    def _next_now(self):
        try:
            return self._events.get_nowait()
        except queue.Empty:
            return None

    def _timeout(self) -> float:
        """Until the next retry or alias check is due (or a tick: a pending job may wait for time)."""
        now = self.clock.now()
        due = [t.not_before - now for t in self._pending if t.not_before > now]
        due += [t.alias_checked + ALIAS_RECHECK_S - now for t in self._pending
                if t.alias_checked + ALIAS_RECHECK_S > now]  # a check that is past waits for its turn
        return max(0.0, min([TICK_S, *due]))

    def _start_ready(self) -> None:
        if self._signalled:  # before anything starts, though the event may still be queued
            self._stop("interrupted", interrupted=True)
        for task in list(self._pending):
            why = self._blocked(task)
            if why is None:
                self._pending.remove(task)
                self._submit(task)
            elif why and why != task.told:
                task.told = why
                self.reporter.progress(task.spec.name, State.WAITING, why)

    def _blocked(self, task: _Task) -> str | None:
        """Why ``task`` cannot start now ("" : no news worth telling), or None: it started or ended."""
        spec = task.spec
        if self.cancel.is_set():
            self._end(task, State.SKIPPED, "not started: the run was stopped")
            return ""
        parent = task.job.parent if task.job.parent in self._building else None
        if parent is not None and parent not in self._ended:
            return f"for its base template {parent}"
        if parent is not None and not task.rebased:
            result = self._result_of(parent)
            if not result.status.ok:
                self._end(task, State.SKIPPED, f"not started: its base template {parent} did not build")
                return ""
            task.spec, task.rebased = resolve.rebase(spec, result.build_id), True
        gate = self._gates.get(spec.alias)
        if (gate is not None and gate[0] not in self._ended and gate[0] not in self._elsewhere
                and self._published.get(gate[0], -1) < gate[1]):
            return f"for {gate[0]} to publish the {gate[1] + 1} steps they share"
        if task.not_before > self.clock.now():
            return ""
        if len(self._running) >= self.window.size:
            return ""
        if task.alias_lock is None:
            return self._take_alias(task)
        return None

    def _take_alias(self, task: _Task) -> str | None:
        now = self.clock.now()
        if task.alias_checked and now < task.alias_checked + ALIAS_RECHECK_S:
            return ""
        path = alias_lock_file(self.state_dir, task.spec.alias)
        lock = files.FileLock(path)
        try:
            files.ensure_dir(path.parent, inside=self.state_dir.parent)  # checked before the run: made now
            lock.acquire(wait=False)
        except files.Busy as busy:
            if not self.wait_for_alias:
                self._end(task, State.FAILED, f"{task.spec.alias} is being built by {busy.holder} (--no-wait)")
                return ""
            task.alias_checked = now
            self._elsewhere.add(task.spec.alias)  # those waiting on its steps compute them themselves
            return f"{task.spec.alias} is being built by {busy.holder}"
        except files.FileError as exc:  # made a link since the preflight: not built, nothing written through it
            self._end(task, State.FAILED, str(exc))
            return ""
        task.alias_lock = lock
        self._elsewhere.discard(task.spec.alias)
        done = self._built_meanwhile(task)
        if done is not None:
            self._finish_fresh([(task.spec, done, task)], f"built meanwhile by another run (build {done.build_id})")
            return ""
        return None

    def _built_meanwhile(self, task: _Task) -> LockEntry | None:
        """The lock's entry when another run built this very spec before this one took the alias.

        Read under the alias's lock, after the other run released it: its build is in the lock
        by then. Two runs started together then build each variant once, and history never
        fills with builds of one spec.
        """
        if self.force:
            return None
        try:
            entry = store.read_entry(self.lock_path, task.spec.alias)
        except MatrixError:
            return None  # the landing will say what is wrong with the lock
        job = task.job
        if entry is None or (job.entry is not None and entry.build_id == job.entry.build_id):
            return None
        if entry.fingerprint != task.spec.fingerprint or self.backend.staleness(entry) is not None:
            return None
        return entry

    def _submit(self, task: _Task) -> None:
        task.attempts += 1
        if task.first_start is None:
            task.first_start = self.clock.now()
        self._running[task.spec.alias] = task
        self.reporter.progress(task.spec.name, State.BUILDING,
                               f"attempt {task.attempts}" if task.attempts > 1 else "submitting")

        self._pool.submit(self._work, task.spec, task.attempts)

    # -- a worker: builds and verifies one spec, tells the loop everything ----------------

    def _work(self, spec: BuildSpec, attempt: int) -> None:
        alias, put = spec.alias, self._events.put
        try:  # everything, the log's setup too: an exception left in the future would never reach the loop
            vlog = self.logs.variant(alias) if self.logs is not None else _NO_LOG

            def sink(lines: list[str]) -> None:
                lines = [printable(line) for line in lines]  # a backend's line is text from elsewhere: one line each
                if lines:
                    vlog.info("\n".join(lines))
                    put(("log", alias, lines[-1]))

            vlog.info("--- %s: build %s (attempt %d) ---", dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"), alias, attempt)
            outcome = self.backend.build(spec, force=self.force, log=sink, cancel=self.cancel,
                                         progress=lambda depth: put(("published", alias, depth)))
            report = None
            if self.verify:
                put(("state", alias, State.VERIFYING, "running smoke checks"))
                report = self.backend.verify(spec, outcome)
                if report.failed:
                    raise BuildError(report.failure("lock entry not written"))
            put(("built", alias, outcome, report))
        except BaseException as exc:  # every end reaches the loop; the loop decides what it means
            if isinstance(exc, TransientError) and self.logs is not None:
                self.logs.variant(alias).info("transient error: %s", exc)
            put(("error", alias, exc))

    # -- events --------------------------------------------------------------------------

    def _handle(self, event) -> None:
        kind, alias, *rest = event
        self._changed |= kind not in ("log", "state")
        if kind == "stop":
            self._stop(*rest)
            return
        if kind == "landed":
            self._landed(*rest)
            return
        task = self._tasks.get(alias)
        if kind == "published":
            self._published[alias] = max(rest[0], self._published.get(alias, -1))
        elif kind == "log" and task is not None:
            self.reporter.log(task.spec.name, rest[0])
        elif kind == "state" and task is not None:
            self.reporter.progress(task.spec.name, *rest)
        elif kind == "built":
            self._landing.append((self._running.pop(alias), *rest))
            self.window.ended()
        elif kind == "error":
            self._failed(self._running.pop(alias), rest[0])

    def _failed(self, task: _Task, exc: BaseException) -> None:
        name = task.spec.name
        if isinstance(exc, SlotsFull) and self._running:
            # E2B counts the team's builds: what runs of ours is what fits. Start again when one ends.
            self.window.refused(len(self._running))
            task.attempts -= 1
            self._pending.insert(0, task)
            self.reporter.progress(name, State.WAITING, f"for a team build slot ({len(self._running)} of ours "
                                   "running; E2B says the rest are taken)")
            return
        if isinstance(exc, TransientError):
            now = self.clock.now()
            delay = None if self.cancel.is_set() else self.retry.next_delay(task.attempts, exc, task.first_start, now)
            if delay is not None:
                if isinstance(exc, SlotsFull):
                    self.window.refused(1)
                task.not_before = now + delay
                self._pending.insert(0, task)
                self.reporter.progress(name, State.RETRYING, f"{exc}; retry {task.attempts} in {delay:.1f}s")
                return
            if not self.cancel.is_set():
                exc = BuildError(gave_up(task.attempts, exc))
        self.window.ended()
        if isinstance(exc, Cancelled):
            self._end(task, State.CANCELLED, str(exc))
        elif isinstance(exc, TransientError):  # given up because the run was stopped
            self._end(task, State.CANCELLED, f"stopped while retrying: {exc}")
        elif isinstance(exc, CredentialsError):
            self.fatal = exc
            self._end(task, State.FAILED, str(exc))
            self._stop("E2B refused the API key")
        elif isinstance(exc, MatrixError):
            self._end(task, State.FAILED, str(exc))
        elif isinstance(exc, Exception):  # a bug or an SDK surprise: one variant, not the run
            (self.logs.run if self.logs is not None else log).error("[%s] unexpected error", name, exc_info=exc)
            self._end(task, State.FAILED, f"{type(exc).__name__}: {exc}")
        else:  # KeyboardInterrupt or SystemExit inside a worker
            self._end(task, State.CANCELLED, f"{type(exc).__name__}")

    def _stop(self, reason: str, interrupted: bool = False) -> None:
        """Start nothing more; the running builds stop at their next look at ``cancel``."""
        self.interrupted = self.interrupted or interrupted
        if not self.cancel.is_set():
            self.cancel.set()
            self.reporter.stopped(reason)

    # -- landing: the lock, promotion, the alias, the reporter ------------------------------

    def _land(self) -> None:
        """Hand every build that ended to the writer, unless a write is under way (then the next)."""
        if self._writing is not None or not self._landing:
            return
        batch, self._landing = self._landing, []
        self._writing = batch
        future = self._writer.submit(self._write, batch)
        future.add_done_callback(lambda f: self._events.put(
            ("landed", None, batch, f.exception() if f.exception() is not None else f.result())))

    def _write(self, batch: list) -> dict[str, str]:
        """(In the writer thread.) The batch in the lock with one write, then promoted; alias -> why
        its build failed after all (not recorded, not promoted)."""
        entries = [self._entry(task.spec, outcome) for task, outcome, _ in batch]
        try:
            lock = store.record_builds(self.lock_path, entries, self.backend.regenerate, self.secrets)
        except MatrixError as exc:
            return {task.spec.alias: f"built as {outcome.build_id} but not recorded: {exc}"
                    for task, outcome, _ in batch}
        for task, outcome, report in batch:
            if report is not None:
                self._record_inventory(task.spec, outcome, report)
        if not self.promote:
            return {}
        for task, _, _ in batch:
            self._events.put(("state", task.spec.alias, State.PROMOTING, f"{self.promote} -> its new build"))
        errors = {}
        for task, _, _ in batch:  # each moved, then recorded: a failure leaves the others promoted
            try:
                release.promote_entries(self.backend, self.lock_path, [lock.entries[task.spec.alias]], self.promote,
                                        self.secrets)
            except MatrixError as exc:
                errors[task.spec.alias] = f"built and recorded, but not promoted to {self.promote}: {exc}"
        return errors

    def _landed(self, batch: list, errors) -> None:
        """The writer is done with ``batch``: each build ends, built or (not recorded) failed."""
        self._writing = None
        if isinstance(errors, BaseException):  # a bug in the write: those builds are not in the lock
            errors = {task.spec.alias: f"built as {outcome.build_id} but not recorded: "
                      f"{type(errors).__name__}: {errors}" for task, outcome, _ in batch}
        for task, outcome, _ in batch:
            error = errors.get(task.spec.alias, "")
            self._end(task, State.FAILED if error else State.BUILT, error, outcome)

    def _record_inventory(self, spec: BuildSpec, outcome: Outcome, report) -> None:
        """What the verified build holds, beside the lock; a failure to record it is a warning (the build stands)."""
        from e2b_matrix import inventory

        try:
            inventory.record(self.lock_path, spec.alias, outcome.build_id, report)
        except MatrixError as exc:
            self._events.put(("state", spec.alias, State.VERIFYING, f"warning: {exc}"))

    def _finish_fresh(self, found: list[tuple[BuildSpec, LockEntry, _Task | None]], why: str) -> None:
        """Variants whose locked build stands (spec, its entry, its task if it had one): promoted
        when asked (one lock write), then finished as fresh."""
        if not found:
            return
        errors = {}
        if self.promote:
            for spec, entry, _ in found:
                self.reporter.progress(spec.name, State.PROMOTING, f"{self.promote} -> {entry.build_id}")
                try:
                    release.promote_entries(self.backend, self.lock_path, [entry], self.promote, self.secrets)
                except MatrixError as exc:
                    errors[spec.alias] = f"not promoted to {self.promote}: {exc}"
        for spec, entry, task in found:
            self.reporter.progress(spec.name, State.FRESH, why)
            error = errors.get(spec.alias, "")
            self._end(task or _Task(Job(spec, entry, True), spec), State.FAILED if error else State.FRESH, error,
                      Outcome(entry.template_id, entry.build_id, entry.image))

    def _end(self, task: _Task, state: State, error: str = "", outcome: Outcome | None = None) -> None:
        """The task's result: recorded, its alias released, the reporter told; --fail-fast stops here."""
        spec = task.spec
        if task.alias_lock is not None:
            task.alias_lock.release()
            task.alias_lock = None
        if task in self._pending:
            self._pending.remove(task)
        elapsed = self.clock.now() - task.first_start if task.first_start is not None else 0.0
        result = BuildResult(spec.name, spec.alias, state, outcome.template_id if outcome else "",
                             outcome.build_id if outcome else "", round(elapsed, 3),
                             "" if state in (State.BUILT, State.FRESH) else error, task.attempts,
                             outcome.image if outcome else "")
        self._results[spec.name] = result
        self._ended.add(spec.alias)
        self.reporter.finished(result)
        if state in (State.FAILED, State.CANCELLED) and self.fail_fast:
            self._stop(f"--fail-fast: {spec.name} {state.value}")

    def _result_of(self, alias: str) -> BuildResult:
        return next(r for r in self._results.values() if r.alias == alias)

    # -- order and signals -------------------------------------------------------------------

    def _owners_first(self, todo: list[Job]) -> list[Job]:
        """Every job after the jobs it waits for (its parent, its gate's owner): owners take slots first."""
        graph = {j.spec.alias: [a for a in (j.parent, self._gates.get(j.spec.alias, (None,))[0]) if a]
                 for j in todo}
        position = {j.spec.alias: i for i, j in enumerate(todo)}
        by_alias = {j.spec.alias: j for j in todo}
        return [by_alias[a] for a in resolve.ordered(graph, key=position.__getitem__)]

    def _signals(self):
        """SIGINT and SIGTERM become one event for the loop while it runs (in the main thread only):
        never an exception in the middle of a lock write."""
        if threading.current_thread() is not threading.main_thread():
            return contextlib.nullcontext()

        def interrupt(signum, frame):
            self._signalled = True
            self._events.put(("stop", None, "interrupted", True))  # wakes the loop

        @contextlib.contextmanager
        def installed():
            previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

        return installed()

    @staticmethod
    def _entry(spec: BuildSpec, outcome: Outcome) -> LockEntry:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        return LockEntry(alias=spec.alias, variant=spec.name, template_id=outcome.template_id,
                         build_id=outcome.build_id, fingerprint=spec.fingerprint, layers=spec.layer_versions(),
                         built_at=now, domain=outcome.domain, api_url=outcome.api_url, image=outcome.image,
                         inputs=spec.inputs())


def exit_code(scheduler: Scheduler, results: list[BuildResult]) -> int:
    if scheduler.interrupted:
        return 130
    if scheduler.fatal is not None:
        return scheduler.fatal.exit_code
    return 0 if all(r.status.ok for r in results) else 1
