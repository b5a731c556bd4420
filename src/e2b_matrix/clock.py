"""Time as the runner and the backends see it: now, and waiting. Tests hand them a fake one.

One object for both ways the tool waits: on an event that may end the wait early (a backend's
pause between status requests ends at once when the run is cancelled) and on the runner's queue
of events (``next_event``). A fake moves time forward instead of sleeping, so a three-minute
build is followed in milliseconds and its requests can be counted.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any


class Clock:
    """The real clock: ``time.monotonic`` and real waits."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``event``; True when it is set."""
        return event.wait(timeout)

    def next_event(self, events: queue.Queue[Any], timeout: float) -> Any:
        """The next event on ``events``, or None after ``timeout`` seconds without one."""
        try:
            return events.get(timeout=timeout)
        except queue.Empty:
            return None
