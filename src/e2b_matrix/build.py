"""The concurrent runner: jobs, retries, one build per alias, results, the lock.

Each selected variant builds in its own worker thread. A variant whose
fingerprint equals its lock entry makes no call at all (fresh). Each success
is written to the lock at once (merged with what is on disk, atomically), so
a failure, --fail-fast or Ctrl-C never loses a finished result; a failure
never touches its variant's old entry.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from e2b_matrix.backends import Backend, BuildError, Cancelled, Outcome, TransientError
from e2b_matrix.errors import ConfigError, CredentialsError, MatrixError
from e2b_matrix.lock import LockEntry, update_lock
from e2b_matrix.model import BuildResult, BuildSpec, Status
from e2b_matrix.retry import RetryPolicy, retrying

log = logging.getLogger(__name__)

MAX_JOBS = 20      # E2B's default concurrent-build limit per team
DEFAULT_JOBS = 8


def default_jobs(n: int) -> int:
    return max(1, min(n, DEFAULT_JOBS))


@attrs.frozen(slots=False)
class Job:
    spec: BuildSpec
    entry: LockEntry | None  # its lock entry when the run started
    parent: str | None = None  # alias of a variant in this run it is built on (from_template)


def make_jobs(specs: Iterable[BuildSpec], lock) -> list[Job]:
    """Jobs in an order where a variant built on another (from_template on its
    alias) comes after it: E2B resolves the parent's build ID at submit time.
    """
    specs = list(specs)
    aliases = {s.alias for s in specs}
    parent = {s.alias: s.base.ref for s in specs if s.base.kind == "template" and s.base.ref in aliases}
    ordered: list[BuildSpec] = []
    placed: set[str] = set()

    def place(s: BuildSpec, trail: tuple[str, ...]) -> None:
        if s.alias in placed:
            return
        if s.alias in trail:
            loop = " -> ".join(trail[trail.index(s.alias):] + (s.alias,))
            raise ConfigError(f"variants are built on each other in a loop: {loop}", path=s.variant.source,
                              key="params.base.template")
        p = parent.get(s.alias)
        if p:
            place(next(x for x in specs if x.alias == p), trail + (s.alias,))
        placed.add(s.alias)
        ordered.append(s)

    for s in specs:
        place(s, ())
    return [Job(s, lock.entries.get(s.alias) if lock is not None else None, parent.get(s.alias)) for s in ordered]


Reporter = Callable[[str, str, str], None]  # (variant name, state, message)


class AliasLock:
    """One build of an alias at a time across processes (E2B cancels the older one).

    An flock on .e2b-matrix/locks/<alias>.lock under the project directory;
    released when the process dies, so a crash never leaves it held.
    """

    def __init__(self, directory: Path, alias: str):
        self.path = directory / f"{alias}.lock"
        self.fd: int | None = None

    def acquire(self, wait: bool, on_wait: Callable[[str], None], cancel: threading.Event) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                if not wait:
                    os.close(fd)
                    raise BuildError(f"{self.path.stem} is being built by {holder} (--no-wait)") from None
                if not told:
                    on_wait(f"waiting: {self.path.stem} is being built by {holder}")
                    told = True
                if cancel.wait(0.2):
                    os.close(fd)
                    raise Cancelled("cancelled while waiting for another build of the same alias") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@attrs.define(slots=False)
class Runner:
    backend: Backend
    lock_path: Path
    state_dir: Path                      # .e2b-matrix/ for alias locks
    logs: object                         # logs.RunLogs
    report: Reporter
    jobs: int = DEFAULT_JOBS
    force: bool = False
    fail_fast: bool = False
    wait_for_alias: bool = True
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    verify: Callable[[BuildSpec, Outcome], list] | None = None  # returns failed check names
    # re-resolves a spec against the lock as it is now (after its parent built)
    respec: Callable[[BuildSpec], BuildSpec] | None = None
    cancel: threading.Event = attrs.field(factory=threading.Event)
    fatal: MatrixError | None = None
    interrupted: bool = False
    _finished: dict = attrs.field(factory=dict)  # alias -> (threading.Event, [BuildResult])

    def run(self, jobs: Iterable[Job]) -> list[BuildResult]:
        jobs = list(jobs)
        results: dict[str, BuildResult] = {}
        todo = []
        building: set[str] = set()
        for job in jobs:
            if self._fresh(job) and job.parent not in building:
                results[job.spec.name] = BuildResult(job.spec.name, job.spec.alias, Status.FRESH,
                                                     job.entry.template_id, job.entry.build_id)
                self.report(job.spec.name, "fresh", "unchanged since its lock entry")
            else:
                todo.append(job)
                building.add(job.spec.alias)
                self._finished[job.spec.alias] = (threading.Event(), [])
                self.report(job.spec.name, "queued", "")
        if todo:
            from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

            workers = max(1, min(self.jobs, len(todo), MAX_JOBS))
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="build")
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
            for f, job in futures.items():
                if job.spec.name not in results:
                    results[job.spec.name] = BuildResult(job.spec.name, job.spec.alias, Status.SKIPPED,
                                                         error="not started")
        return [results[j.spec.name] for j in jobs]

    def _fresh(self, job: Job) -> bool:
        return (not self.force and job.entry is not None and job.entry.fingerprint == job.spec.fingerprint
                and self.backend.is_current(job.spec, job.entry))

    def _one(self, job: Job) -> BuildResult:
        result = self._one_inner(job)
        done = self._finished.get(job.spec.alias)
        if done is not None:
            done[1].append(result)
            done[0].set()
        return result

    def _after_parent(self, job: Job) -> BuildSpec | str:
        """Wait for the parent built in this run; the spec re-resolved on its new build, or why not."""
        done = self._finished.get(job.parent) if job.parent else None
        if done is None:
            return job.spec
        self.report(job.spec.name, "waiting", f"for its base template {job.parent}")
        while not done[0].wait(0.2):
            if self.cancel.is_set():
                return "not started: the run was stopped"
        if done[1][0].status is not Status.BUILT:
            return f"not started: its base template {job.parent} did not build"
        return self.respec(job.spec) if self.respec else job.spec

    def _one_inner(self, job: Job) -> BuildResult:
        spec = job.spec
        start = time.monotonic()
        vlog = self.logs.variant(spec.alias)

        tries = [0]

        def result(status: Status, error: str = "", outcome: Outcome | None = None):
            if status in (Status.FAILED, Status.CANCELLED) and self.fail_fast:
                self.cancel.set()  # before this worker can take the next job
            return BuildResult(spec.name, spec.alias, status, outcome.template_id if outcome else "",
                               outcome.build_id if outcome else "", round(time.monotonic() - start, 3),
                               error, tries[0], outcome.image if outcome else "")

        if self.cancel.is_set():
            return result(Status.SKIPPED, "not started: the run was stopped")
        try:
            after = self._after_parent(job)
        except MatrixError as exc:
            self.report(spec.name, "failed", str(exc))
            return result(Status.FAILED, str(exc))
        if isinstance(after, str):
            return result(Status.SKIPPED, after)
        spec = after
        alias_lock = AliasLock(self.state_dir / "locks", spec.alias)
        try:
            alias_lock.acquire(self.wait_for_alias, lambda m: self.report(spec.name, "waiting", m), self.cancel)
        except Cancelled as exc:
            return result(Status.SKIPPED, str(exc))
        except BuildError as exc:
            self.report(spec.name, "failed", str(exc))
            return result(Status.FAILED, str(exc))
        try:
            outcome = self._attempts(spec, vlog, tries)
            if self.verify is not None:
                self.report(spec.name, "verifying", "running smoke checks")
                failed = self.verify(spec, outcome)
                if failed:
                    raise BuildError(f"smoke checks failed: {', '.join(failed)} (lock entry not written)")
            update_lock(self.lock_path, {spec.alias: self._entry(spec, outcome)},
                        regenerate=self.backend.lock_header)
            self.report(spec.name, "built", outcome.template_id)
            self.logs.run.info("[%s] built %s (build %s)", spec.name, outcome.template_id, outcome.build_id)
            return result(Status.BUILT, outcome=outcome)
        except Cancelled as exc:
            self.report(spec.name, "cancelled", str(exc))
            return result(Status.CANCELLED, str(exc))
        except CredentialsError as exc:
            self.fatal = exc
            self.cancel.set()  # 401/403 stops the whole run at once
            self.report(spec.name, "failed", str(exc))
            return result(Status.FAILED, str(exc))
        except MatrixError as exc:
            self.report(spec.name, "failed", str(exc))
            self.logs.run.error("[%s] failed: %s", spec.name, exc)
            return result(Status.FAILED, str(exc))
        except Exception as exc:  # a bug or an SDK surprise: one variant, not the run
            self.report(spec.name, "failed", f"{type(exc).__name__}: {exc}")
            self.logs.run.exception("[%s] unexpected error", spec.name)
            return result(Status.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            alias_lock.release()

    def _attempts(self, spec: BuildSpec, vlog: logging.Logger, tries: list[int]) -> Outcome:
        def sink(lines: list[str]) -> None:
            if lines:
                vlog.info("\n".join(lines))
                self.report(spec.name, "log", lines[-1])

        def attempt(n: int) -> Outcome:
            tries[0] = n
            self.report(spec.name, "building", f"attempt {n}" if n > 1 else "submitting")
            vlog.info("--- %s: build %s (attempt %d) ---", dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"), spec.alias, n)
            return self.backend.build(spec, force=self.force, log=sink, cancel=self.cancel, retry=self.retry)

        def on_retry(n: int, exc: TransientError, delay: float) -> None:
            self.report(spec.name, "retrying", f"{exc}; retry {n} in {delay:.1f}s")
            vlog.info("transient error: %s; retrying in %.1fs", exc, delay)

        return retrying(attempt, self.retry, self.cancel, on_retry)

    def _entry(self, spec: BuildSpec, outcome: Outcome) -> LockEntry:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        return LockEntry(alias=spec.alias, variant=spec.name, template_id=outcome.template_id,
                         build_id=outcome.build_id, fingerprint=spec.fingerprint,
                         layers=spec.layer_versions(), built_at=now, domain=outcome.domain,
                         image=outcome.image, inputs=spec.inputs())


def exit_code(runner: Runner, results: list[BuildResult]) -> int:
    if runner.interrupted:
        return 130
    if runner.fatal is not None:
        return runner.fatal.exit_code
    return 0 if all(r.status.ok for r in results) else 1
