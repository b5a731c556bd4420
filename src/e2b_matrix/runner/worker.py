"""A worker: builds (and verifies) one spec in a pool thread, and tells the loop everything.

It never waits on another job and never decides what an error means: every end, an exception
included, reaches the loop as an event (``Built`` or ``Errored``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from e2b_matrix.backends import Backend
from e2b_matrix.errors import BuildError, TransientError
from e2b_matrix.logs import RunLogs
from e2b_matrix.model import BuildSpec, State
from e2b_matrix.names import printable
from e2b_matrix.runner.events import Built, Errored, Event, Log, Progress, Published


def _no_log() -> logging.Logger:
    """A logger for a run without log files: outside logging's tree (no global state), writing nothing."""
    logger = logging.Logger("e2b_matrix.variant")  # noqa: LOG001 - outside the logging tree: no global state
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def work(
    backend: Backend,
    logs: RunLogs | None,
    spec: BuildSpec,
    attempt: int,
    *,
    force: bool,
    verify: bool,
    cancel: threading.Event,
    tell: Callable[[Event], None],
) -> None:
    """Build ``spec`` (attempt ``attempt``), verify it when asked; every line and end goes to ``tell``."""
    alias = spec.alias
    try:  # everything, the log's setup too: an exception left in the future would never reach the loop
        vlog = logs.variant(alias) if logs is not None else _no_log()

        def sink(lines: list[str]) -> None:
            lines = [printable(line) for line in lines]  # a backend's line is text from elsewhere: one line each
            if lines:
                vlog.info("\n".join(lines))
                tell(Log(alias, lines[-1]))

        vlog.info(
            "--- %s: build %s (attempt %d) ---", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), alias, attempt
        )
        outcome = backend.build(
            spec, force=force, log=sink, cancel=cancel, progress=lambda depth: tell(Published(alias, depth))
        )
        report = None
        if verify:
            tell(Progress(alias, State.VERIFYING, "running smoke checks"))
            report = backend.verify(spec, outcome)
            if report.failed:
                raise BuildError(report.failure("lock entry not written"))
        tell(Built(alias, outcome, report))
    except BaseException as exc:  # noqa: BLE001 - handed to the loop, which decides what it means
        if isinstance(exc, TransientError) and logs is not None:
            logs.variant(alias).info("transient error: %s", exc)
        tell(Errored(alias, exc))
