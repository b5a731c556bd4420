"""The loop: one thread owns the plan, starts each build when the policy says it may, lands results.

As the parallel runners of tox and nox: ``Scheduler.run`` makes a ``Run`` (all per-run state)
whose loop, in the caller's thread, keeps every job that has not started; its ``Starter`` submits
one to the worker pool only when ``policy.decide`` says it may start. Workers only build and verify
(worker.py); what they learn comes back as typed events on one queue (events.py). Finished
builds land through the lock writer (writer.py) while the loop goes on; once a batch is
written, the loop releases its aliases and tells the reporter (events.Reporter). A failure
never touches its variant's entry; --fail-fast, Ctrl-C, SIGTERM and a refused key stop starting
builds and cancel the running ones, and everything that finished stays in the lock.

Sharing (jobs.share_gates): E2B looks its layer cache up as a build reaches each step and does
not merge identical steps of builds running at once, so variants that start with the same steps
would each run them. Each node of the step trie gets one owner, so one build computes each
shared prefix; every other variant starts when that prefix is published and meets it as cache
hits. Where the engine merges identical steps itself (BuildKit), with --force or with
--no-share, every build may start at once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from e2b_matrix import files, release, resolve
from e2b_matrix.backends import Backend
from e2b_matrix.clock import Clock
from e2b_matrix.errors import MatrixError
from e2b_matrix.events import Reporter, Silent
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.logs import RunLogs
from e2b_matrix.model import BuildResult, BuildSpec, Outcome, State
from e2b_matrix.retry import RetryPolicy
from e2b_matrix.runner import policy
from e2b_matrix.runner.aliases import AliasLocks, built_meanwhile
from e2b_matrix.runner.events import Built, Errored, Event, Landed, Landing, Log, Progress, Published, Stop
from e2b_matrix.runner.jobs import Job, building, owners_first, share_gates
from e2b_matrix.runner.policy import Then, Verdict, Window
from e2b_matrix.runner.worker import work
from e2b_matrix.runner.writer import LockWriter

log = logging.getLogger(__name__)


@attrs.frozen
class RunOutcome:
    """How a run ended: each job's result, in the order given, and why it stopped, if it did."""

    results: tuple[BuildResult, ...]
    interrupted: bool = False
    fatal: MatrixError | None = None  # what stopped the whole run (the key refused)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.fatal is not None:
            return self.fatal.exit_code
        return 0 if all(r.status.ok for r in self.results) else 1


@attrs.frozen
class Scheduler:
    """How runs go: their settings. Each ``run`` keeps its own state: two runs never meet."""

    backend: Backend
    lock_path: Path
    state_dir: Path  # .e2b-matrix/: one lock file per alias being built
    logs: RunLogs | None = None  # None: no log files
    reporter: Reporter = attrs.field(factory=Silent)
    jobs: int = 20
    force: bool = False
    fail_fast: bool = False
    wait_for_alias: bool = True
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    verify: bool = False
    promote: str | None = None  # the channel to point at what built or was fresh
    share: bool = True  # start a build when the steps it shares are published (above)
    secrets: tuple[str, ...] = ()
    clock: Clock = attrs.field(factory=Clock)

    def run(self, jobs: Iterable[Job]) -> RunOutcome:
        """Build every job that is not fresh; each result, in the order of ``jobs``."""
        return Run(self, list(jobs)).go()


@attrs.define(eq=False)
class Task:
    """A job as the loop tracks it."""

    job: Job
    spec: BuildSpec
    attempts: int = 0  # build attempts made (a refusal for the team's slots is none)
    first_start: float | None = None
    not_before: float = 0.0  # a retry waits until then
    alias_checked: float | None = None  # when its alias was last found busy
    told: str = ""  # the last waiting reason reported


class Run:
    """One run's state and its loop: events in, what built handed to the writer, each end to the ledger.
    What may start, and starting it, is the ``Starter``'s."""

    def __init__(self, s: Scheduler, jobs: list[Job]):
        self.s, self.jobs = s, jobs
        self.cancel = threading.Event()
        self.window = Window(max(1, s.jobs))
        self.events: queue.Queue[Event] = queue.Queue()
        self.published: dict[str, int] = {}  # alias -> deepest step its build published
        self.running: dict[str, Task] = {}
        self.landing: list[Landing] = []  # built, waiting for the writer
        self.aliases = AliasLocks(s.state_dir)
        self.ledger = Ledger(s, self.aliases, self.forget, self.stop)
        self.writer = LockWriter(s.backend, s.lock_path, s.secrets, s.promote, self.events.put)
        self.interrupted, self.signalled, self.changed = False, False, True
        self.fatal: MatrixError | None = None
        self.building = building(jobs)
        todo = [j for j in jobs if j.spec.alias in self.building]
        share = s.share and not s.force and not s.backend.shares_in_flight()
        self.gates = share_gates(j.spec for j in todo if j.parent not in self.building) if share else {}
        self.pending = [Task(j, j.spec) for j in owners_first(todo, self.gates)]
        self.tasks = {t.spec.alias: t for t in self.pending}
        self.starter = Starter(self)

    def go(self) -> RunOutcome:
        self.ledger.finish_fresh(
            [(j.spec, j.entry, None) for j in self.jobs if j.spec.alias not in self.building],
            "unchanged since its lock entry",
        )
        for t in self.pending:
            self.s.reporter.started(t.spec.name, t.spec.alias)
        if self.pending:
            with interrupts(self.interrupt):
                self.loop()
        return RunOutcome(tuple(self.ledger.results[j.spec.name] for j in self.jobs), self.interrupted, self.fatal)

    def interrupt(self) -> None:
        """SIGINT or SIGTERM (in the signal handler): one event for the loop."""
        self.signalled = True
        self.events.put(Stop("interrupted", True))  # wakes the loop

    def loop(self) -> None:
        # Never more workers than the window's most: a submitted job always runs at once.
        pool = ThreadPoolExecutor(max_workers=self.window.most, thread_name_prefix="build")
        try:
            while self.busy():
                try:
                    self.turn(pool)
                except KeyboardInterrupt:  # no handler of ours (a caller's thread, or a signal before it)
                    self.stop("interrupted", interrupted=True)
        finally:
            if self.running:  # only after a bug in the loop: stop the workers, then wait for them
                self.cancel.set()
            pool.shutdown(wait=True)
            self.writer.close()
            self.aliases.release_all()

    def turn(self, pool: ThreadPoolExecutor) -> None:
        """Start what may start, wait for an event, handle everything that happened, land what built."""
        if self.changed:  # a log line changes nothing a pending job waits for
            self.changed = False
            if self.signalled:  # before anything starts, though the event may still be queued
                self.stop("interrupted", interrupted=True)
            self.starter.start_ready(pool)
            if not self.busy():
                return
        wake = policy.next_wake(map(self.starter.view, self.pending), self.s.clock.now())
        event: Event | None = self.s.clock.next_event(self.events, wake)
        self.changed |= event is None  # a retry or an alias check may be due
        while event is not None:
            self.handle(event)
            event = self.next_now()
        self.land()

    def busy(self) -> bool:
        return bool(self.pending or self.running or self.landing or self.writer.busy)

    def next_now(self) -> Event | None:
        try:
            return self.events.get_nowait()
        except queue.Empty:
            return None

    def forget(self, task: Task) -> None:
        """The task ended: it waits for nothing any more."""
        if task in self.pending:
            self.pending.remove(task)

    def handle(self, event: Event) -> None:
        self.changed |= not isinstance(event, (Log, Progress))
        task = self.tasks.get(getattr(event, "alias", ""))
        match event:
            case Stop(reason, interrupted):
                self.stop(reason, interrupted)
            case Landed(batch, errors):
                self.writer.busy = False
                self.ledger.landed(batch, errors, self.tasks)
            case Published(alias, depth):
                self.published[alias] = max(depth, self.published.get(alias, -1))
            case Log(_, line) if task is not None:
                self.s.reporter.log(task.spec.name, line)
            case Progress(_, state, message) if task is not None:
                self.s.reporter.progress(task.spec.name, state, message)
            case Built(alias, outcome, report):
                self.running.pop(alias)
                self.landing.append(Landing(self.tasks[alias].spec, outcome, report))
                self.window.ended()
            case Errored(alias, error):
                self.failed(self.running.pop(alias), error)

    def failed(self, task: Task, exc: BaseException) -> None:
        """An attempt failed: retried, requeued for a slot, or ended (policy.after_error judges)."""
        now = self.s.clock.now()
        nxt = policy.after_error(
            exc,
            attempts=task.attempts,
            first_start=task.first_start or now,
            now=now,
            retry=self.s.retry,
            running=len(self.running),
            stopped=self.cancel.is_set(),
        )
        if nxt.window is not None:
            self.window.refused(nxt.window)
        if nxt.then in (Then.REQUEUE, Then.RETRY):
            task.attempts -= nxt.then is Then.REQUEUE  # a refusal for the team's slots is no attempt
            task.not_before = nxt.at
            self.pending.insert(0, task)
            self.s.reporter.progress(task.spec.name, nxt.state or State.WAITING, nxt.message)
            return
        self.window.ended()
        if nxt.then is Then.STOP:
            self.fatal = exc if isinstance(exc, MatrixError) else None
        elif nxt.state is State.FAILED and not isinstance(exc, MatrixError):
            (self.s.logs.run if self.s.logs is not None else log).error(
                "[%s] unexpected error", task.spec.name, exc_info=exc
            )
        self.ledger.end(task, nxt.state or State.FAILED, nxt.message)
        if nxt.then is Then.STOP:
            self.stop("E2B refused the API key")

    def stop(self, reason: str, interrupted: bool = False) -> None:
        """Start nothing more; the running builds stop at their next look at ``cancel``."""
        self.interrupted = self.interrupted or interrupted
        if not self.cancel.is_set():
            self.cancel.set()
            self.s.reporter.stopped(reason)

    def land(self) -> None:
        """Hand every build that ended to the writer, unless a write is under way (then the next)."""
        if self.landing and not self.writer.busy:
            batch, self.landing = self.landing, []
            self.writer.submit(batch)


class Starter:
    """What may start now, and starting it: each pending task described to the policy (``view``,
    ``state``), its alias taken when the policy says so (a flock, then a look at the lock for a build
    another run made meanwhile), then handed to a worker."""

    def __init__(self, run: Run):
        self.run, self.s = run, run.s
        self.elsewhere: set[str] = set()  # aliases waiting for another process's build of them

    def view(self, task: Task) -> policy.Pending:
        parent = task.job.parent if task.job.parent in self.run.building else None
        return policy.Pending(
            task.spec.alias,
            parent,
            self.run.gates.get(task.spec.alias),
            task.not_before,
            self.run.aliases.holds(task.spec.alias),
            task.alias_checked,
        )

    def state(self) -> policy.RunState:
        run = self.run
        return policy.RunState(
            self.s.clock.now(),
            run.cancel.is_set(),
            run.ledger.ended,
            run.published,
            frozenset(self.elsewhere),
            len(run.running),
            run.window.size,
        )

    def start_ready(self, pool: ThreadPoolExecutor) -> None:
        """Every pending task the policy lets start is submitted; the others end skipped or wait."""
        run = self.run
        for task in list(run.pending):
            pending = self.view(task)
            if pending.parent is not None and run.ledger.ended.get(pending.parent) and task.spec is task.job.spec:
                task.spec = resolve.rebase(task.spec, run.ledger.result_of(pending.parent).build_id)
            decision = policy.decide(pending, self.state())
            if decision.verdict is Verdict.SKIP:
                run.ledger.end(task, State.SKIPPED, decision.why)
            elif decision.verdict is Verdict.START or (decision.verdict is Verdict.TAKE_ALIAS and self.take(task)):
                self.submit(task, pool)
            else:
                self.waiting(task, decision.why)

    def take(self, task: Task) -> bool:
        """Take the task's alias (I/O: a flock); False when it cannot start now (or ended)."""
        alias, ledger = task.spec.alias, self.run.ledger
        try:
            holder = self.run.aliases.take(alias)
        except files.FileError as exc:  # made a link since the preflight: not built, nothing written through it
            ledger.end(task, State.FAILED, str(exc))
            return False
        if holder is not None:
            if not self.s.wait_for_alias:
                ledger.end(task, State.FAILED, f"{alias} is being built by {holder} (--no-wait)")
                return False
            task.alias_checked = self.s.clock.now()
            self.elsewhere.add(alias)  # those waiting on its steps compute them themselves
            self.waiting(task, f"{alias} is being built by {holder}")
            return False
        self.elsewhere.discard(alias)
        cache = self.run.writer.cache
        done = (
            None
            if self.s.force
            else built_meanwhile(self.s.lock_path, task.spec, task.job.entry, self.s.backend, cache)
        )
        if done is not None:
            ledger.finish_fresh([(task.spec, done, task)], f"built meanwhile by another run (build {done.build_id})")
            return False
        return True

    def waiting(self, task: Task, why: str) -> None:
        """Tell why ``task`` waits, once per reason ("": nothing worth telling)."""
        if why and why != task.told:
            task.told = why
            self.s.reporter.progress(task.spec.name, State.WAITING, why)

    def submit(self, task: Task, pool: ThreadPoolExecutor) -> None:
        run = self.run
        run.pending.remove(task)
        task.attempts += 1
        if task.first_start is None:
            task.first_start = self.s.clock.now()
        run.running[task.spec.alias] = task
        self.s.reporter.progress(
            task.spec.name, State.BUILDING, f"attempt {task.attempts}" if task.attempts > 1 else "submitting"
        )
        pool.submit(
            work,
            self.s.backend,
            self.s.logs,
            task.spec,
            task.attempts,
            force=self.s.force,
            verify=self.s.verify,
            cancel=run.cancel,
            tell=run.events.put,
        )


class Ledger:
    """How each job of a run ended: its result, its alias released, the reporter told; --fail-fast."""

    def __init__(self, s: Scheduler, aliases: AliasLocks, on_end: Callable[[Task], None], stop: Callable[[str], None]):
        self.s, self.aliases, self.on_end, self.stop = s, aliases, on_end, stop
        self.results: dict[str, BuildResult] = {}
        self.ended: dict[str, bool] = {}  # alias -> its build of this run ended ok

    def finish_fresh(self, found: list[tuple[BuildSpec, LockEntry | None, Task | None]], why: str) -> None:
        """Variants whose locked build stands (spec, its entry, its task if it had one): promoted when
        asked, then finished as fresh."""
        for spec, entry, task in found:
            assert entry is not None  # a fresh job has its entry
            error = self.promote_fresh(spec, entry) if self.s.promote else ""
            self.s.reporter.progress(spec.name, State.FRESH, why)
            self.end(
                task or Task(Job(spec, entry, True), spec),
                State.FAILED if error else State.FRESH,
                error,
                Outcome(entry.template_id, entry.build_id, entry.image),
            )

    def promote_fresh(self, spec: BuildSpec, entry: LockEntry) -> str:
        """``--promote`` for a fresh variant (moved, then recorded); why it failed, or ""."""
        self.s.reporter.progress(spec.name, State.PROMOTING, f"{self.s.promote} -> {entry.build_id}")
        try:
            release.promote_entry(self.s.backend, self.s.lock_path, entry, str(self.s.promote), self.s.secrets)
        except MatrixError as exc:
            return f"not promoted to {self.s.promote}: {exc}"
        return ""

    def end(self, task: Task, state: State, error: str = "", outcome: Outcome | None = None) -> None:
        """The task's result: recorded, its alias released, the reporter told; --fail-fast stops here."""
        spec = task.spec
        self.aliases.release(spec.alias)
        self.on_end(task)
        elapsed = self.s.clock.now() - task.first_start if task.first_start is not None else 0.0
        o = outcome or Outcome("", "")
        result = BuildResult(
            spec.name,
            spec.alias,
            state,
            o.template_id,
            o.build_id,
            round(elapsed, 3),
            "" if state.ok else error,
            task.attempts,
            o.image,
        )
        self.results[spec.name] = result
        self.ended[spec.alias] = state.ok
        self.s.reporter.finished(result)
        if state in (State.FAILED, State.CANCELLED) and self.s.fail_fast:
            self.stop(f"--fail-fast: {spec.name} {state.value}")

    def landed(self, batch: tuple[Landing, ...], errors: dict[str, str], tasks: dict[str, Task]) -> None:
        """The writer is done with ``batch``: each build ends, built or (not recorded) failed."""
        for b in batch:
            error = errors.get(b.spec.alias, "")
            self.end(tasks[b.spec.alias], State.FAILED if error else State.BUILT, error, b.outcome)

    def result_of(self, alias: str) -> BuildResult:
        return next(r for r in self.results.values() if r.alias == alias)


@contextlib.contextmanager
def interrupts(on_signal: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``on_signal`` while the loop runs (in the main thread only): never an
    exception in the middle of a lock write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda signum, frame: on_signal()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
