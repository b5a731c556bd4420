"""Bounded retries of transient failures: exponential backoff with full jitter.

Above the SDK's own retries (which honour ``Retry-After`` on 429/502/503/504
before giving up). One rule (``RetryPolicy.next_delay``), two drivers: the
runner's scheduler retries a build without holding a slot while it waits;
``retrying`` here retries the E2B backend's status poll in place (keeping the
build and its log offset), so a blip while polling never starts a second
build of the alias.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TypeVar

import attrs

from e2b_matrix.clock import Clock
from e2b_matrix.errors import BuildError, Cancelled, TransientError

T = TypeVar("T")


@attrs.frozen
class RetryPolicy:
    """Bounded twice: in attempts and in total time. ``rng`` draws the jitter (a test's is fixed)."""

    attempts: int = 5
    base_s: float = 1.0
    max_delay_s: float = 30.0
    total_s: float = 300.0
    rng: Callable[[], float] = attrs.field(default=random.random, eq=False, repr=False)

    def delay(self, attempt: int) -> float:
        """The backoff after attempt ``attempt`` (counted from 1): exponential, capped, full jitter."""
        # the exponent is capped: 2.0 ** 1024 overflows, and any cap past max_delay_s gives the same delay
        return min(self.max_delay_s, self.base_s * 2.0 ** min(attempt - 1, 64)) * (0.5 + self.rng() / 2)

    def next_delay(self, attempt: int, started: float, now: float) -> float | None:
        """The wait before another attempt after attempt ``attempt`` failed, or None: give up (every
        attempt made, or the wait would pass ``total_s`` since ``started``). The one rule both
        ``retrying`` and the runner's policy follow."""
        delay = self.delay(attempt)
        if attempt >= self.attempts or now + delay > started + self.total_s:
            return None
        return delay


def gave_up(attempts: int, exc: TransientError) -> str:
    return f"gave up after {attempts} attempts: {exc}"


def retrying(
    call: Callable[[int], T],
    policy: RetryPolicy,
    cancel: threading.Event,
    clock: Clock,
    on_retry: Callable[[int, TransientError, float], None] = lambda a, e, d: None,
) -> T:
    """``call(attempt)`` until it returns; a TransientError waits (on ``clock``, the caller's) and tries again.

    Gives up (BuildError) after ``policy.attempts`` tries, or when the wait would
    pass ``policy.total_s``.
    """
    started = clock.now()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call(attempt)
        except TransientError as exc:
            delay = policy.next_delay(attempt, started, clock.now())
            if delay is None:
                raise BuildError(gave_up(attempt, exc)) from None
            on_retry(attempt, exc, delay)
            if clock.wait(cancel, delay):
                raise Cancelled("stopped while waiting to retry") from None
