"""The scheduler's rules, tested directly: a fake backend whose builds the test holds and
releases, a fake clock for retry waits, and a reporter that records every event.

Nothing here goes through the CLI or the network; test_build.py and test_share.py run the
same rules end to end against the E2B emulator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import signal
import threading
import uuid

import attrs
import pytest

from conftest import wait_for
from e2b_matrix import files, resolve
from e2b_matrix.clock import Clock
from e2b_matrix.errors import BuildError, CredentialsError, SlotsFull, TransientError
from e2b_matrix.lock import TemplateLock, store
from e2b_matrix.model import Base, BuildSpec, Outcome, State, Step, Variant
from e2b_matrix.retry import RetryPolicy
from e2b_matrix.runner import Job, Scheduler, Window, alias_lock_file
from e2b_matrix.runner.writer import entry_of

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
WAIT = 20  # seconds a test waits for a thread before it fails (never reached when the code is right)


def spec(name: str, steps=(), parent: str | None = None) -> BuildSpec:
    s = BuildSpec(
        Variant(name, f"t-{name}", ()),
        "fake",
        (),
        Base("template", f"t-{parent}" if parent else "code-interpreter-v1", "3.13"),
        tuple(Step("run_cmd", (c,)) for c in steps),
        (),
    )
    return attrs.evolve(s, fingerprint=resolve.fingerprint(s))


def job(s: BuildSpec, entry=None, fresh=False, parent=None) -> Job:
    return Job(s, entry, fresh, f"t-{parent}" if parent else None)


class Backend:
    """Builds that end when the test says (``hold``), fail as scripted, and publish their base at
    once and further steps on request."""

    regenerate = "make build-all BACKEND=fake"

    def __init__(self, shares: bool = False):
        self.shares = shares
        self.held: dict[str, threading.Event] = {}
        self.script: dict[str, list] = {}  # alias -> exceptions to raise, one per attempt (None: build)
        self.started: list[str] = []
        self.running: set[str] = set()
        self.peak = 0
        self.specs: dict[str, BuildSpec] = {}
        self.publish: dict[str, queue.Queue] = {}
        self.points: list[tuple[str, str, str]] = []
        self.capacity: int | None = None  # the team's free slots: past it, SlotsFull
        self.refusals = 0
        self._lock = threading.Lock()
        self.began = threading.Condition(self._lock)

    def hold(self, *names: str) -> None:
        for n in names:
            self.held[f"t-{n}"] = threading.Event()
            self.publish[f"t-{n}"] = queue.Queue()

    def release(self, *names: str) -> None:
        for n in names:
            self.held[f"t-{n}"].set()

    def wait_started(self, name: str) -> None:
        with self.began:
            assert self.began.wait_for(lambda: f"t-{name}" in self.started, WAIT), f"{name} never started"

    def shares_in_flight(self) -> bool:
        return self.shares

    def staleness(self, entry):
        return None

    def build(self, spec, *, force, log, cancel, progress=None) -> Outcome:
        alias = spec.alias
        with self.began:
            if self.capacity is not None and len(self.running) >= self.capacity:
                self.refusals += 1
                raise SlotsFull("you have reached the maximum number of concurrent template builds")
            self.started.append(alias)
            self.running.add(alias)
            self.peak = max(self.peak, len(self.running))
            self.specs[alias] = spec
            self.began.notify_all()
        try:
            if progress is not None:
                progress(0)  # its base is ready, as E2B's first step says
            script = self.script.get(alias)
            if script:
                exc = script.pop(0)
                if exc is not None:
                    raise exc
            held = self.held.get(alias)
            while held is not None and not held.is_set():
                with contextlib.suppress(queue.Empty):  # a depth the test asks this build to publish
                    progress(self.publish[alias].get(timeout=0.01))
                if cancel.is_set():
                    from e2b_matrix.errors import Cancelled

                    raise Cancelled("stopped")
            log([f"built {alias}"])
            return Outcome(f"tpl-{alias}", str(uuid.uuid4()))
        finally:
            with self.began:
                self.running.discard(alias)

    def verify(self, spec, outcome):
        raise AssertionError("not asked")

    def point(self, entry, channel, build_id):
        self.points.append((entry.alias, channel, build_id))


class Recorder:
    def __init__(self):
        self.events: list[tuple] = []

    def started(self, name, alias):
        self.events.append(("started", name))

    def progress(self, name, state, message=""):
        self.events.append(("progress", name, state, message))

    def log(self, name, line):
        self.events.append(("log", name, line))

    def finished(self, result):
        self.events.append(("finished", result.name, result.status))

    def stopped(self, reason):
        self.events.append(("stopped", reason))

    def of(self, name):
        return [e for e in self.events if len(e) > 1 and e[1] == name]


class Logs:
    """RunLogs' shape without files."""

    class _Log:
        def info(self, *a, **k):
            pass

        warning = error = exception = info

    run = _Log()

    def variant(self, alias):
        return self._Log()


class FakeClock(Clock):
    """Time moves only when the loop has nothing to do but wait for it: a 30 s retry wait takes no real time."""

    def __init__(self):
        self.t = 1000.0

    def now(self):
        return self.t

    def next_event(self, events, timeout):
        try:
            return events.get(timeout=0.01)
        except queue.Empty:
            self.t += timeout
            return None


@pytest.fixture
def make(tmp_path):
    def make(backend, **kw):
        kw.setdefault("reporter", Recorder())
        return Scheduler(
            backend=backend,
            lock_path=tmp_path / "templates.lock",
            state_dir=tmp_path / "state",
            logs=Logs(),
            clock=kw.pop("clock", FakeClock()),
            **kw,
        )

    (tmp_path / "state" / "locks").mkdir(parents=True)
    return make


def run_in_thread(scheduler, jobs):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("results", scheduler.run(jobs).results), daemon=True)
    t.start()
    return t, out


def finish(t, out):
    t.join(WAIT)
    assert not t.is_alive(), "the run never ended"
    return {r.name: r for r in out["results"]}


def test_a_child_takes_no_slot_until_its_parent_built_and_starts_on_that_build(make):
    backend = Backend()
    backend.hold("base")
    s = make(backend, jobs=4)
    t, out = run_in_thread(s, [job(spec("base", ["a"])), job(spec("child", ["b"], parent="base"), parent="base")])
    backend.wait_started("base")
    assert backend.started == ["t-base"]
    backend.release("base")
    results = finish(t, out)
    assert backend.started == ["t-base", "t-child"]
    assert backend.specs["t-child"].parent_build == results["base"].build_id
    assert [r.status for r in results.values()] == [State.BUILT, State.BUILT]
    assert ("progress", "child", State.WAITING, "for its base template t-base") in s.reporter.events


def test_a_parent_that_fails_skips_its_child_which_never_starts(make):
    backend = Backend()
    backend.script["t-base"] = [BuildError("E2B build failed")]
    s = make(backend)
    outcome = s.run([job(spec("base", ["a"])), job(spec("child", parent="base"), parent="base")])
    results = {r.name: r for r in outcome.results}
    assert backend.started == ["t-base"]
    assert results["child"].status is State.SKIPPED
    assert results["child"].error == "not started: its base template t-base did not build"
    assert outcome.exit_code == 1


def test_a_build_waiting_for_its_shared_prefix_holds_no_slot(make):
    """Two slots, the follower first in the plan: it waits for the owner to publish the steps they
    share without taking a slot, so the independent build takes the second slot at once. Once
    the prefix is published and a slot frees, it starts while the owner still builds."""
    backend = Backend()
    backend.hold("owner", "indep")
    s = make(backend, jobs=2)
    owner, follower, indep = (
        spec("owner", ["a", "b", "c", "d"]),
        spec("follower", ["a", "b", "x"]),
        spec("indep", ["z"]),
    )
    t, out = run_in_thread(s, [job(follower), job(owner), job(indep)])
    backend.wait_started("owner")
    backend.wait_started("indep")
    backend.publish["t-owner"].put(2)  # base and steps a, b: what they share
    backend.release("indep")
    backend.wait_started("follower")
    assert "t-owner" in backend.running
    assert backend.started == ["t-owner", "t-indep", "t-follower"]
    backend.release("owner")
    results = finish(t, out)
    assert {r.status for r in results.values()} == {State.BUILT}
    assert backend.peak == 2
    waits = [e for e in s.reporter.of("follower") if e[0] == "progress" and e[2] is State.WAITING]
    assert waits == [("progress", "follower", State.WAITING, "for t-owner to publish the 3 steps they share")]


def test_jobs_bounds_the_builds_at_once(make):
    backend = Backend()
    names = [f"v{i}" for i in range(6)]
    backend.hold(*names)
    s = make(backend, jobs=2)
    t, out = run_in_thread(s, [job(spec(n, [n])) for n in names])
    backend.wait_started("v0")
    backend.wait_started("v1")
    for n in names:
        backend.release(n)
    results = finish(t, out)
    assert backend.peak == 2 and len(backend.started) == 6
    assert {r.status for r in results.values()} == {State.BUILT}


def test_a_retry_waits_without_its_slot_and_counts_attempts(make):
    """One slot: while x waits 30 s to retry, y builds in that slot; x then builds on attempt 2."""
    backend = Backend()
    backend.script["t-x"] = [TransientError("503: busy")]
    clock = FakeClock()
    s = make(backend, jobs=1, clock=clock, retry=RetryPolicy(attempts=3, base_s=30, total_s=300, rng=lambda: 1.0))
    start = clock.t
    results = {r.name: r for r in s.run([job(spec("x", ["x"])), job(spec("y", ["y"]))]).results}
    assert backend.started == ["t-x", "t-y", "t-x"]
    assert results["x"].status is State.BUILT and results["x"].attempts == 2
    assert clock.t - start >= 30
    assert ("progress", "x", State.RETRYING, "503: busy; retry 1 in 30.0s") in s.reporter.events


def test_retries_are_bounded_by_the_policy(make):
    backend = Backend()
    backend.script["t-x"] = [TransientError("503")] * 5
    s = make(backend, retry=RetryPolicy(attempts=3, base_s=1))
    (r,) = s.run([job(spec("x", ["x"]))]).results
    assert r.status is State.FAILED and r.error == "gave up after 3 attempts: 503" and r.attempts == 3


def test_when_the_team_is_full_the_run_lowers_its_concurrency_instead_of_retrying_into_the_wall(make):
    """Another process holds the team's slots but 3: E2B refuses the 4th build at once; the run
    keeps to 3 and every build lands, with few refusals and no attempt spent on them."""
    backend = Backend()
    backend.capacity = 3
    names = [f"v{i}" for i in range(12)]
    s = make(backend, jobs=8)
    results = s.run([job(spec(n, [n])) for n in names]).results
    assert {r.status for r in results} == {State.BUILT}
    assert all(r.attempts == 1 for r in results)
    assert backend.peak <= 3
    assert backend.refusals <= 5, backend.refusals  # one burst, then a probe now and then


def test_window_halves_on_refusal_and_grows_back_one_per_window():
    w = Window(20)
    w.refused(12)
    assert w.size == 12
    for _ in range(11):
        w.ended()
    assert w.size == 12
    w.ended()
    assert w.size == 13
    w.refused(0)
    assert w.size == 1


def test_fail_fast_cancels_what_runs_and_starts_nothing_more(make):
    backend = Backend()
    backend.hold("slow")
    backend.script["t-bad"] = [BuildError("E2B build failed")]
    s = make(backend, jobs=2, fail_fast=True)
    results = {
        r.name: r for r in s.run([job(spec("slow", ["s"])), job(spec("bad", ["b"])), job(spec("later", ["l"]))]).results
    }
    assert results["bad"].status is State.FAILED
    assert results["slow"].status is State.CANCELLED
    assert results["later"].status is State.SKIPPED and "t-later" not in backend.started
    assert [e for e in s.reporter.events if e[0] == "stopped"] == [("stopped", "--fail-fast: bad failed")]


def test_a_refused_key_stops_the_run_with_its_exit_code(make):
    backend = Backend()
    backend.script["t-a"] = [CredentialsError("E2B refused the API key (401)")]
    s = make(backend, jobs=1)
    outcome = s.run([job(spec("a", ["a"])), job(spec("b", ["b"]))])
    results = outcome.results
    assert [r.status for r in results] == [State.FAILED, State.SKIPPED]
    assert outcome.exit_code == 2 and outcome.fatal is not None


def test_an_interrupt_is_one_event_finished_builds_stay_in_the_lock(make, tmp_path):
    """SIGINT while one build runs and one has landed: the running one is cancelled, the rest
    skipped, the landed one is in the lock, and the exit code is 130."""
    backend = Backend()
    backend.hold("slow")
    s = make(backend, jobs=2, clock=Clock())
    done = threading.Event()

    class Interrupting(Recorder):
        def finished(self, result):
            super().finished(result)
            if result.name == "quick":
                os.kill(os.getpid(), signal.SIGINT)
                done.set()

    s = attrs.evolve(s, reporter=Interrupting())
    outcome = s.run(
        [job(spec("slow", ["s"])), job(spec("quick", ["q"])), job(spec("after", ["a"], parent="quick"), parent="quick")]
    )
    results = {r.name: r for r in outcome.results}
    assert done.is_set()
    assert results["quick"].status is State.BUILT
    assert results["slow"].status is State.CANCELLED
    assert results["after"].status is State.SKIPPED
    assert outcome.exit_code == 130
    assert TemplateLock.load(tmp_path / "templates.lock").entries["t-quick"].build_id == results["quick"].build_id
    assert ("stopped", "interrupted") in s.reporter.events


def test_an_alias_another_process_builds_waits_then_builds(make, tmp_path):
    backend = Backend()
    other = files.FileLock(alias_lock_file(tmp_path / "state", "t-a"))
    other.acquire()
    s = make(backend)
    t, out = run_in_thread(s, [job(spec("a", ["a"])), job(spec("b", ["b"]))])
    backend.wait_started("b")
    assert "t-a" not in backend.started
    other.release()
    results = finish(t, out)
    assert results["a"].status is State.BUILT
    waits = [e for e in s.reporter.of("a") if e[0] == "progress" and e[2] is State.WAITING]
    assert len(waits) == 1 and waits[0][3] == f"t-a is being built by pid {os.getpid()}"


def test_no_wait_fails_an_alias_another_process_builds(make, tmp_path):
    other = files.FileLock(alias_lock_file(tmp_path / "state", "t-a"))
    other.acquire()
    try:
        backend = Backend()
        (r,) = make(backend, wait_for_alias=False).run([job(spec("a", ["a"]))]).results
    finally:
        other.release()
    assert r.status is State.FAILED and r.error.endswith("(--no-wait)") and backend.started == []


def test_a_spec_another_run_built_meanwhile_is_fresh_not_built_again(make, tmp_path):
    s_a = spec("a", ["a"])
    other = files.FileLock(alias_lock_file(tmp_path / "state", "t-a"))
    other.acquire()
    backend = Backend()
    s = make(backend)
    t, out = run_in_thread(s, [job(s_a)])
    entry = entry_of(s_a, Outcome("tpl-t-a", str(uuid.uuid4())), NOW)
    store.record_build(tmp_path / "templates.lock", entry)
    other.release()
    results = finish(t, out)
    assert results["a"].status is State.FRESH and results["a"].build_id == entry.build_id
    assert backend.started == []


def test_every_build_lands_in_the_lock_and_a_failure_touches_nothing(make, tmp_path):
    backend = Backend()
    backend.script["t-bad"] = [BuildError("no")]
    names = ["a", "b", "c", "bad"]
    results = make(backend, jobs=4).run([job(spec(n, [n])) for n in names]).results
    lock = TemplateLock.load(tmp_path / "templates.lock")
    assert sorted(lock.entries) == ["t-a", "t-b", "t-c"]
    for r in results:
        if r.status is State.BUILT:
            assert lock.entries[r.alias].build_id == r.build_id


def test_promote_moves_the_channel_of_built_and_fresh_variants_in_one_place(make, tmp_path):
    s_old = spec("old", ["o"])
    entry = entry_of(s_old, Outcome("tpl-t-old", str(uuid.uuid4())), NOW)
    store.record_build(tmp_path / "templates.lock", entry)
    backend = Backend()
    s = make(backend, promote="stable")
    results = {r.name: r for r in s.run([job(s_old, entry, fresh=True), job(spec("new", ["n"]))]).results}
    assert results["old"].status is State.FRESH and results["new"].status is State.BUILT
    assert sorted(backend.points) == sorted(
        [("t-old", "stable", entry.build_id), ("t-new", "stable", results["new"].build_id)]
    )
    lock = TemplateLock.load(tmp_path / "templates.lock")
    assert lock.entries["t-new"].channels == {"stable": results["new"].build_id}
    assert lock.entries["t-old"].channels == {"stable": entry.build_id}


def test_each_variant_hears_started_then_finished_once_and_a_fresh_one_finished_alone(make, tmp_path):
    s_old = spec("old", ["o"])
    entry = entry_of(s_old, Outcome("tpl-t-old", str(uuid.uuid4())), NOW)
    backend = Backend()
    s = make(backend)
    s.run([job(s_old, entry, fresh=True), job(spec("new", ["n"]))])
    assert s.reporter.of("old") == [("finished", "old", State.FRESH)] or [e[0] for e in s.reporter.of("old")] == [
        "progress",
        "finished",
    ]
    kinds = [e[0] for e in s.reporter.of("new")]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("finished") == 1
    assert ("log", "new", "built t-new") in s.reporter.events


def test_a_lock_that_cannot_be_written_fails_the_build_and_says_so(make, tmp_path):
    (tmp_path / "templates.lock").write_text("not toml [")
    backend = Backend()
    (r,) = make(backend).run([job(spec("a", ["a"]))]).results
    assert r.status is State.FAILED and r.error.startswith("built as ") and "not recorded" in r.error


def test_a_job_waiting_for_a_slot_after_its_alias_was_busy_does_not_spin_the_loop(make, tmp_path):
    """a found its alias busy, then waits for the one slot b holds: the loop sleeps until
    something happens, it does not wake without pause to look at an alias check that is past."""
    turns = 20

    class Counting(FakeClock):
        def __init__(self):
            super().__init__()
            self.timeouts: list[float] = []  # of every wait of the loop, in order

        def next_event(self, events, timeout):
            self.timeouts.append(timeout)
            return super().next_event(events, timeout)

    backend = Backend()
    backend.hold("b")
    other = files.FileLock(alias_lock_file(tmp_path / "state", "t-a"))
    other.acquire()
    clock = Counting()
    s = make(backend, jobs=1, clock=clock)
    t, out = run_in_thread(s, [job(spec("a", ["a"])), job(spec("b", ["b"]))])
    backend.wait_started("b")
    other.release()
    seen = len(clock.timeouts)
    wait_for(lambda: len(clock.timeouts) >= seen + turns, what=f"{turns} turns of the loop while b builds")
    zero_waits = clock.timeouts[seen : seen + turns].count(0)
    backend.release("b")
    results = finish(t, out)
    assert {r.status for r in results.values()} == {State.BUILT}
    # a turn moves the fake clock by its wait: 20 turns of a loop that pauses span 10 s, 20 alias-check periods
    assert zero_waits <= 2, f"the loop woke {zero_waits} times of {turns} at once while a slot was taken"
