"""The concurrent runner: jobs, sharing, retries, one build per alias, results, the lock.

Each variant to build runs in its own worker thread. Each success is written
to the lock at once (merged with what is on disk, atomically), so a failure,
--fail-fast or Ctrl-C never loses a finished result; a failure never touches
its variant's entry. A variant built on another one of this run (from_template
on its alias) starts after it, on the build ID its result carries.

Sharing (``share_gates``): E2B looks its layer cache up as a build reaches
each step and does not merge identical steps of builds running at once, so
variants that start with the same steps would each run them. Each node of
the step trie (plan.step_trie) gets one owner: the variant through it with
the most steps (the parent's owner where it passes), so one build computes
each shared prefix. Every other variant waits until that prefix is published
(``progress`` from the owner's build, or the owner's end; at once if the
owner fails or is cancelled) and then meets it as cache hits. Branches that
share nothing start together. Owners are submitted before those waiting on
them, so --jobs never deadlocks. Where the engine merges identical steps
itself (BuildKit) or with --force, every build starts at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import attrs

from e2b_matrix import files, resolve
from e2b_matrix.errors import BuildError, Cancelled, CredentialsError, MatrixError, TransientError
from e2b_matrix.lock import store
from e2b_matrix.model import BuildResult, BuildSpec, LockEntry, Outcome, State
from e2b_matrix.retry import RetryPolicy, retrying

log = logging.getLogger(__name__)

MAX_JOBS = 20      # E2B's default concurrent-build limit per team
DEFAULT_JOBS = 8


def alias_lock_file(state_dir: Path, alias: str) -> Path:
    """The file whose flock says ``alias`` is being built, across processes (see DESIGN: never twice at once)."""
    return state_dir / "locks" / f"{alias}.lock"


def default_jobs(n: int) -> int:
    return max(1, min(n, DEFAULT_JOBS))


Reporter = Callable[[str, str, str], None]  # (variant name, state, message)


@attrs.frozen
class Job:
    spec: BuildSpec
    entry: LockEntry | None     # its lock entry when the run started
    fresh: bool                 # unchanged since that entry (the plan said so)
    parent: str | None = None   # alias of a variant of this run it is built on


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


class Published:
    """How far each build of this run has published its steps, for the builds waiting on it."""

    def __init__(self):
        self._depth: dict[str, int] = {}
        self._ended: set[str] = set()
        self._changed = threading.Condition()

    def advance(self, alias: str, depth: int) -> None:
        with self._changed:
            self._depth[alias] = max(depth, self._depth.get(alias, -1))
            self._changed.notify_all()

    def end(self, alias: str) -> None:
        with self._changed:
            self._ended.add(alias)
            self._changed.notify_all()

    def wait(self, alias: str, depth: int, cancel: threading.Event) -> bool:
        """Until ``alias`` published through ``depth`` or ended (True), or the run was stopped (False)."""
        with self._changed:
            while self._depth.get(alias, -1) < depth and alias not in self._ended:
                if cancel.is_set():
                    return False
                self._changed.wait(0.2)
        return not cancel.is_set()


def make_jobs(items, force: bool = False) -> list[Job]:
    """Plan items -> jobs, parents first (graphlib)."""
    by_alias = {i.alias: i for i in items}
    specs = resolve.build_order(i.spec for i in items)
    aliases = set(by_alias)
    return [Job(s, by_alias[s.alias].entry, by_alias[s.alias].state is State.FRESH and not force,
                resolve.parent_alias(s, aliases)) for s in specs]


@attrs.define
class Runner:
    backend: object
    lock_path: Path
    state_dir: Path                      # .e2b-matrix/: one lock file per alias being built
    logs: object                         # logs.RunLogs
    report: Reporter
    jobs: int = DEFAULT_JOBS
    force: bool = False
    fail_fast: bool = False
    wait_for_alias: bool = True
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    verify: bool = False
    promote: str | None = None           # channel to point at what built
    share: bool = True                   # wait for shared steps another build computes (see above)
    secrets: tuple[str, ...] = ()
    cancel: threading.Event = attrs.field(factory=threading.Event)
    fatal: MatrixError | None = None
    interrupted: bool = False
    _done: dict = attrs.field(factory=dict)  # alias -> (Event, [BuildResult, spec])
    _gates: dict = attrs.field(factory=dict)  # alias -> (alias it waits for, depth)
    _published: Published = attrs.field(factory=Published)

    def run(self, jobs: Iterable[Job]) -> list[BuildResult]:
        jobs = list(jobs)
        results: dict[str, BuildResult] = {}
        todo, building = [], set()
        for job in jobs:
            if job.fresh and job.parent not in building:
                results[job.spec.name] = BuildResult(job.spec.name, job.spec.alias, State.FRESH,
                                                     job.entry.template_id, job.entry.build_id)
                self.report(job.spec.name, "fresh", "unchanged since its lock entry")
            else:
                todo.append(job)
                building.add(job.spec.alias)
                self._done[job.spec.alias] = (threading.Event(), [])
                self.report(job.spec.name, "queued", "")
        if todo:
            if self.share and not self.force and not self.backend.shares_in_flight():
                # a child of a parent built in this run starts on the parent's new build: its own trie
                self._gates = share_gates(j.spec for j in todo if j.parent not in building)
            self._run_pool(self._owners_first(todo), results)
        return [results[j.spec.name] for j in jobs]

    def _owners_first(self, todo: list[Job]) -> list[Job]:
        """Every job after the jobs it waits for (its parent, its gate's owner): FIFO workers never deadlock."""
        graph = {j.spec.alias: [a for a in (j.parent, self._gates.get(j.spec.alias, (None,))[0]) if a]
                 for j in todo}
        position = {j.spec.alias: i for i, j in enumerate(todo)}
        by_alias = {j.spec.alias: j for j in todo}
        return [by_alias[a] for a in resolve.ordered(graph, key=position.__getitem__)]

    def _run_pool(self, todo: list[Job], results: dict[str, BuildResult]) -> None:
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.jobs, len(todo), MAX_JOBS)),
                                  thread_name_prefix="build")
        futures = {pool.submit(self._one, job): job for job in todo}
        try:
            pending = set(futures)
            while pending:  # short waits keep the main thread able to take Ctrl-C
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for f in done:
                    r = f.result()
                    results[r.name] = r
        except KeyboardInterrupt:
            # Stop starting and polling; what finished is already in the lock.
            self.interrupted = True
            self.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for f in futures:
                if f.done() and not f.cancelled():
                    r = f.result()
                    results[r.name] = r
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for job in todo:
            results.setdefault(job.spec.name, BuildResult(job.spec.name, job.spec.alias, State.SKIPPED,
                                                          error="not started"))

    def _one(self, job: Job) -> BuildResult:
        try:
            result = self._one_inner(job)
        finally:
            self._published.end(job.spec.alias)  # built, failed or cancelled: nobody waits on it any more
        event, slot = self._done[job.spec.alias]
        slot.append(result)
        event.set()
        return result

    def _after_shared_steps(self, job: Job) -> bool:
        """Wait until the steps this job shares with another build of the run are published (False: stopped)."""
        gate = self._gates.get(job.spec.alias)
        if gate is None:
            return True
        owner, depth = gate
        self.report(job.spec.name, "waiting", f"for {owner} to publish the {depth + 1} steps they share")
        return self._published.wait(owner, depth, self.cancel)

    def _after_parent(self, job: Job) -> BuildSpec | str:
        """Wait for the parent built in this run: the spec on its new build, or why not."""
        if job.parent not in self._done:
            return job.spec
        event, slot = self._done[job.parent]
        self.report(job.spec.name, "waiting", f"for its base template {job.parent}")
        while not event.wait(0.2):
            if self.cancel.is_set():
                return "not started: the run was stopped"
        parent = slot[0]
        if not parent.status.ok:
            return f"not started: its base template {job.parent} did not build"
        return resolve.rebase(job.spec, parent.build_id)

    def _one_inner(self, job: Job) -> BuildResult:
        spec = job.spec
        start = time.monotonic()
        tries = [0]

        def result(status: State, error: str = "", outcome: Outcome | None = None) -> BuildResult:
            if status in (State.FAILED, State.CANCELLED) and self.fail_fast:
                self.cancel.set()  # before this worker can take the next job
            if error:
                self.report(spec.name, status.value, error)
            return BuildResult(spec.name, spec.alias, status, outcome.template_id if outcome else "",
                               outcome.build_id if outcome else "", round(time.monotonic() - start, 3),
                               error, tries[0], outcome.image if outcome else "")

        if self.cancel.is_set():
            return result(State.SKIPPED, "not started: the run was stopped")
        after = self._after_parent(job)
        if isinstance(after, str):
            return result(State.SKIPPED, after)
        if not self._after_shared_steps(job):
            return result(State.SKIPPED, "not started: the run was stopped")
        spec = after
        alias_lock = files.FileLock(alias_lock_file(self.state_dir, spec.alias))
        try:
            if not alias_lock.acquire(self.wait_for_alias, cancelled=self.cancel.is_set, on_busy=lambda who: self.report(
                    spec.name, "waiting", f"{spec.alias} is being built by {who}")):
                return result(State.SKIPPED, "cancelled while waiting for another build of the same alias")
        except files.Busy as busy:
            return result(State.FAILED, f"{spec.alias} is being built by {busy.holder} (--no-wait)")
        except files.FileError as exc:  # made a link since the preflight: not built, nothing written through it
            return result(State.FAILED, str(exc))
        try:
            done = self._built_meanwhile(job, spec)
            if done is not None:
                self.report(spec.name, "fresh", f"built meanwhile by another run (build {done.build_id})")
                return result(State.FRESH, outcome=Outcome(done.template_id, done.build_id, done.image))
            outcome = self._attempts(spec, tries)
            report = None
            if self.verify:
                self.report(spec.name, "verifying", "running smoke checks")
                report = self.backend.verify(spec, outcome)
                if report.failed:
                    raise BuildError(f"smoke checks failed: {'; '.join(r.line() for r in report.failed)} "
                                     "(lock entry not written)")
            entry = self._entry(spec, outcome)
            store.record_build(self.lock_path, entry, self.backend.regenerate, self.secrets)
            if report is not None:
                self._record_inventory(spec, outcome, report)
            self.logs.run.info("[%s] built %s (build %s)", spec.name, outcome.template_id, outcome.build_id)
            if self.promote:
                self.report(spec.name, "promoting", f"{self.promote} -> {outcome.build_id}")
                promote(self.backend, self.lock_path, spec.alias, self.promote, self.secrets)
            self.report(spec.name, "built", outcome.template_id)
            return result(State.BUILT, outcome=outcome)
        except Cancelled as exc:
            return result(State.CANCELLED, str(exc))
        except CredentialsError as exc:
            self.fatal = exc
            self.cancel.set()  # 401/403 stops the whole run at once
            return result(State.FAILED, str(exc))
        except MatrixError as exc:
            self.logs.run.error("[%s] failed: %s", spec.name, exc)
            return result(State.FAILED, str(exc))
        except Exception as exc:  # a bug or an SDK surprise: one variant, not the run
            self.logs.run.exception("[%s] unexpected error", spec.name)
            return result(State.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            alias_lock.release()

    def _record_inventory(self, spec: BuildSpec, outcome: Outcome, report) -> None:
        """What the verified build holds, beside the lock; a failure to record it is a warning (the build stands)."""
        from e2b_matrix import inventory

        try:
            inventory.record(self.lock_path, spec.alias, outcome.build_id, report)
        except MatrixError as exc:
            self.logs.run.warning("[%s] %s", spec.name, exc)
            self.report(spec.name, "verifying", f"warning: {exc}")

    def _built_meanwhile(self, job: Job, spec: BuildSpec) -> LockEntry | None:
        """The lock's entry when another run built this very spec while this one waited for the alias.

        Read under the alias's lock, after the other run released it: its build is in the lock
        by then. Two runs started together then build each variant once, and history never
        fills with builds of one spec.
        """
        if self.force:
            return None
        entry = store.read_entry(self.lock_path, spec.alias)
        if entry is None or (job.entry is not None and entry.build_id == job.entry.build_id):
            return None
        if entry.fingerprint != spec.fingerprint or self.backend.staleness(entry) is not None:
            return None
        return entry

    def _attempts(self, spec: BuildSpec, tries: list[int]) -> Outcome:
        vlog = self.logs.variant(spec.alias)

        def sink(lines: list[str]) -> None:
            if lines:
                vlog.info("\n".join(lines))
                self.report(spec.name, "log", lines[-1])

        def attempt(n: int) -> Outcome:
            tries[0] = n
            self.report(spec.name, "building", f"attempt {n}" if n > 1 else "submitting")
            vlog.info("--- %s: build %s (attempt %d) ---", dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"), spec.alias, n)
            return self.backend.build(spec, force=self.force, log=sink, cancel=self.cancel,
                                      progress=lambda depth: self._published.advance(spec.alias, depth))

        def on_retry(n: int, exc: TransientError, delay: float) -> None:
            self.report(spec.name, "retrying", f"{exc}; retry {n} in {delay:.1f}s")
            vlog.info("transient error: %s; retrying in %.1fs", exc, delay)

        return retrying(attempt, self.retry, self.cancel, on_retry)

    @staticmethod
    def _entry(spec: BuildSpec, outcome: Outcome) -> LockEntry:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        return LockEntry(alias=spec.alias, variant=spec.name, template_id=outcome.template_id,
                         build_id=outcome.build_id, fingerprint=spec.fingerprint, layers=spec.layer_versions(),
                         built_at=now, domain=outcome.domain, api_url=outcome.api_url, image=outcome.image, inputs=spec.inputs())


def promote(backend, lock_path, alias: str, channel: str, secrets=()) -> LockEntry:
    """Point ``channel`` at the alias's locked build on the backend and record it in the lock.

    Under the lock's file lock, so the build pointed at is the one recorded.
    """
    def change(entries):
        entry = entries[alias]
        backend.point(entry, channel, entry.build_id)
        entries[alias] = entry.promoted(channel)
        return entries

    return store.update(lock_path, change, backend.regenerate, secrets).entries[alias]


def exit_code(runner: Runner, results: list[BuildResult]) -> int:
    if runner.interrupted:
        return 130
    if runner.fatal is not None:
        return runner.fatal.exit_code
    return 0 if all(r.status.ok for r in results) else 1
