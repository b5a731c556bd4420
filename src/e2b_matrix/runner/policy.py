"""The scheduler's rules as pure functions of plain data: no I/O, no clock, no threads.

As tox's ``ready_to_run_envs``: the loop (scheduler.py) describes each job that has not started
(``Pending``) and the run (``RunState``), and ``decide`` says what may happen to the job now.
A job starts only when

- its parent template, when the run builds that too, has built (else it waits; a parent that
  failed skips it);
- the steps it shares with another build of the run are published (``gate``), or their owner
  ended, or waits for another process's build of its alias;
- its retry is due;
- a team slot is free (``window``: at most that many builds at once);
- it holds its alias's flock (the loop tries to take it: ``TAKE_ALIAS``).

``after_error`` says what a failed attempt means (retry later, wait for a slot, end so, stop
the run); ``Window`` is the run's concurrency, lowered when E2B says the team is full;
``next_wake`` how long the loop may sleep without an event.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs

from e2b_matrix.errors import Cancelled, CredentialsError, MatrixError, SlotsFull, TransientError
from e2b_matrix.model import State
from e2b_matrix.retry import RetryPolicy, gave_up
from e2b_matrix.runner.jobs import Gate

ALIAS_RECHECK_S = 0.5  # how often a job waiting for another process's build of its alias looks again
TICK_S = 0.5  # the longest the loop sleeps without an event (an interrupt is always an event)


@attrs.frozen
class Pending:
    """What the policy knows of a job that has not started."""

    alias: str
    parent: str | None = None  # the alias of a parent template this run builds
    gate: Gate | None = None  # who publishes the prefix it shares, and its depth
    not_before: float = 0.0  # a retry waits until then
    holds_alias: bool = False  # it holds its alias's flock
    alias_checked: float | None = None  # when its alias was last found busy


@attrs.frozen
class RunState:
    """What the policy knows of the run."""

    now: float
    stopped: bool = False  # an interrupt, --fail-fast, a refused key: nothing more starts
    ended: Mapping[str, bool] = attrs.field(factory=dict)  # alias -> its build of this run ended ok
    published: Mapping[str, int] = attrs.field(factory=dict)  # alias -> deepest step its build published
    elsewhere: frozenset[str] = frozenset()  # aliases another process is building
    running: int = 0
    window: int = 1


class Verdict(enum.Enum):
    START = "start"  # it may run now
    TAKE_ALIAS = "take alias"  # it may run once it holds its alias's flock (the loop tries)
    WAIT = "wait"
    SKIP = "skip"  # it will never start: it ends skipped


@attrs.frozen
class Decision:
    verdict: Verdict
    why: str = ""  # why it waits ("": nothing worth telling) or why it is skipped


def decide(job: Pending, run: RunState) -> Decision:
    """May ``job`` start now?"""
    if run.stopped:
        return Decision(Verdict.SKIP, "not started: the run was stopped")
    if job.parent is not None:
        if job.parent not in run.ended:
            return Decision(Verdict.WAIT, f"for its base template {job.parent}")
        if not run.ended[job.parent]:
            return Decision(Verdict.SKIP, f"not started: its base template {job.parent} did not build")
    if job.gate is not None:
        owner, depth = job.gate
        if owner not in run.ended and owner not in run.elsewhere and run.published.get(owner, -1) < depth:
            return Decision(Verdict.WAIT, f"for {owner} to publish the {depth + 1} steps they share")
    if job.not_before > run.now or run.running >= run.window:
        return Decision(Verdict.WAIT)
    if job.holds_alias:
        return Decision(Verdict.START)
    if job.alias_checked is not None and run.now < job.alias_checked + ALIAS_RECHECK_S:
        return Decision(Verdict.WAIT)
    return Decision(Verdict.TAKE_ALIAS)


def next_wake(jobs: Iterable[Pending], now: float) -> float:
    """Seconds until a retry or an alias check is due, at most TICK_S (a pending job may wait for time)."""
    due = [j.not_before - now for j in jobs if j.not_before > now]
    due += [
        j.alias_checked + ALIAS_RECHECK_S - now
        for j in jobs
        if j.alias_checked is not None and j.alias_checked + ALIAS_RECHECK_S > now
    ]
    return max(0.0, min([TICK_S, *due]))


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


class Then(enum.Enum):
    RETRY = "retry"  # start it again at ``at``, without a slot meanwhile
    REQUEUE = "requeue"  # start it again when one of ours ends (the team's slots are full)
    END = "end"  # it ends in ``state``, for ``message``
    STOP = "stop"  # it ends failed, and the run stops (the key was refused)


@attrs.frozen
class Next:
    then: Then
    state: State | None = None
    message: str = ""
    at: float = 0.0
    window: int | None = None  # the team is full: the run's window drops to this


def after_error(
    exc: BaseException,
    *,
    attempts: int,
    first_start: float,
    now: float,
    retry: RetryPolicy,
    running: int,
    stopped: bool,
) -> Next:
    """What attempt ``attempts`` of a build failing with ``exc`` means: the one place errors are judged.

    ``running``: this run's other builds still going (a team-limit refusal with none of ours running
    is an ordinary retry: someone else holds the slots); ``stopped``: the run is stopping.
    """
    if isinstance(exc, SlotsFull) and running:
        return Next(
            Then.REQUEUE,
            State.WAITING,
            f"for a team build slot ({running} of ours running; E2B says the rest are taken)",
            window=running,
        )
    if isinstance(exc, TransientError):
        return _transient(exc, attempts, first_start, now, retry, stopped)
    if isinstance(exc, Cancelled):
        return Next(Then.END, State.CANCELLED, str(exc))
    if isinstance(exc, CredentialsError):
        return Next(Then.STOP, State.FAILED, str(exc))
    if isinstance(exc, MatrixError):
        return Next(Then.END, State.FAILED, str(exc))
    if isinstance(exc, Exception):  # a bug or an SDK surprise: one variant, not the run
        return Next(Then.END, State.FAILED, f"{type(exc).__name__}: {exc}")
    return Next(Then.END, State.CANCELLED, type(exc).__name__)  # KeyboardInterrupt, SystemExit in a worker


def _transient(
    exc: TransientError, attempts: int, first_start: float, now: float, retry: RetryPolicy, stopped: bool
) -> Next:
    """A failure worth trying again: retried after the policy's delay, unless the run stops or the
    policy gives up (then it ends cancelled or failed). E2B's "team full" with none of ours running
    retries with a window of one."""
    delay = None if stopped else retry.next_delay(attempts, first_start, now)
    if delay is not None:
        return Next(
            Then.RETRY,
            State.RETRYING,
            f"{exc}; retry {attempts} in {delay:.1f}s",
            now + delay,
            window=1 if isinstance(exc, SlotsFull) else None,
        )
    if stopped:
        return Next(Then.END, State.CANCELLED, f"stopped while retrying: {exc}")
    return Next(Then.END, State.FAILED, gave_up(attempts, exc))
