"""What a run tells the people watching it: the Reporter protocol, and one reporter for many.

The runner (runner.py) calls these methods from its one loop, never from a
worker thread, in this order for each variant: ``started`` once (queued),
``progress`` and ``log`` any number of times, ``finished`` once with its
result. A variant found fresh before anything runs gets ``finished`` alone.
``stopped`` says once why the run stops starting builds (an interrupt,
--fail-fast, the key refused); the variants it leaves still get ``finished``.

The live table, the plain lines, ``--json`` and the run log each implement it
(progress.py, logs.py), so all four hear the same events. Nothing here
prints, and no reporter handles secrets: the CLI redacts what reaches the
console, the log files redact what they write.
"""

from __future__ import annotations

from typing import Protocol

from e2b_matrix.model import BuildResult, State


class Reporter(Protocol):
    def started(self, name: str, alias: str) -> None:
        """``name`` (building ``alias``) joined the run: queued."""

    def progress(self, name: str, state: State, message: str = "") -> None:
        """It is now in ``state`` (compiling, waiting, building, retrying, verifying, promoting), or
        has news in the same state; ``message`` says what."""

    def log(self, name: str, line: str) -> None:
        """The newest line of its build's log (the whole page is in its log file)."""

    def finished(self, result: BuildResult) -> None:
        """How it ended: ``result.status`` is final; ``result.error`` says why when it is not ok."""

    def stopped(self, reason: str) -> None:
        """The run starts nothing more (interrupted, --fail-fast, the key refused)."""


class Silent:
    """A reporter that hears everything and says nothing (a library call's default)."""

    def started(self, name: str, alias: str) -> None:
        pass

    def progress(self, name: str, state: State, message: str = "") -> None:
        pass

    def log(self, name: str, line: str) -> None:
        pass

    def finished(self, result: BuildResult) -> None:
        pass

    def stopped(self, reason: str) -> None:
        pass


class Broadcast:
    """Each event to every reporter, in order (the console and the run log)."""

    def __init__(self, *reporters: Reporter):
        self.reporters = reporters

    def started(self, name: str, alias: str) -> None:
        for r in self.reporters:
            r.started(name, alias)

    def progress(self, name: str, state: State, message: str = "") -> None:
        for r in self.reporters:
            r.progress(name, state, message)

    def log(self, name: str, line: str) -> None:
        for r in self.reporters:
            r.log(name, line)

    def finished(self, result: BuildResult) -> None:
        for r in self.reporters:
            r.finished(result)

    def stopped(self, reason: str) -> None:
        for r in self.reporters:
            r.stopped(reason)
