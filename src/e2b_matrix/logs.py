"""Where build output goes: logs/<alias>.log per variant and logs/build.log, the run log.

The run log records what each run and command did: the events a run's
reporters hear (``RunLogReporter``: each variant queued, its states, how it
ended, why the run stopped) and the promote and rollback commands.

Files rotate (size-bounded, a few backups) through concurrent-log-handler,
safe when two processes build at once. Every handler this module installs
redacts secrets (secrets.Redactor) from what it writes.

A file is opened (and concurrent-log-handler imported) at the first record
that goes to it, so a run that builds nothing — every variant fresh — writes
no file and pays nothing for logging. ``RunLogs(None)`` writes no files at
all (``E2B_MATRIX_NO_LOG_FILES=1``, or a logs folder that cannot be written).
concurrent-log-handler opens its files itself: a log file, or the lock file
it keeps beside it, that is a symbolic link is never opened (one warning,
and that file is not written), as a logs folder that cannot be written.
Importing it costs as much as the rest of a ``resolve`` (bench/run.py's
resolve_ratio), so it is imported at the first record, not with this module.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from e2b_matrix import files, progress
from e2b_matrix.errors import ConfigError
from e2b_matrix.model import BuildResult, State
from e2b_matrix.names import printable
from e2b_matrix.secrets import Redactor

if TYPE_CHECKING:  # `list` reads no lock, and its console handler's formatter is ours
    from e2b_matrix.lock.model import LockEntry

log = logging.getLogger(__name__)

MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3
RUN_LOGGER = "e2b_matrix.run"

OnError = Callable[[BaseException | None], None]  # told when a log file cannot be written


class RedactingFormatter(logging.Formatter):
    """Formats, then redacts the whole line (tracebacks included); control characters in the message
    (a build's log line, a path) are escaped, its line breaks kept.

    A formatter, not a filter: a filter would rewrite the record that every
    other handler of the logger sees too.
    """

    def __init__(self, fmt: str, redactor: Redactor, datefmt: str | None = "%Y-%m-%dT%H:%M:%S"):
        super().__init__(fmt, datefmt=datefmt)
        self.redactor = redactor

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record), lines=True)

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(super().format(record))


def _lock_file_of(path: Path) -> Path:
    """The lock file concurrent-log-handler keeps beside ``path``: ``x.log`` -> ``.__x.lock``, the rule of
    every version from our floor (0.9.3, ``_open_lockfile``) on (``baseLockFilename``, which 0.9.3 lacks)."""
    stem = path.name[:-4] if path.name.endswith(".log") else path.name
    return path.with_name(f".__{stem}.lock")


class _Broken:
    """Log files that can no longer be written (a full disk, a read-only mount): said once, in one
    line, for the whole run, which goes on without its log files."""

    def __init__(self) -> None:
        self.reason = ""
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.reason)

    def failed(self, path: Path, exc: BaseException | None) -> None:
        why = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) if exc is not None else "unknown error"
        with self._lock:
            if self.reason:
                return
            self.reason = why
        log.warning("cannot write the log file %s (%s); the run goes on without log files", printable(str(path)), why)


@functools.cache
def _rotating_class() -> Callable[[str, OnError], logging.Handler]:
    """concurrent-log-handler's rotating handler (MAX_BYTES, BACKUPS) of a path, whose write errors go to
    ``on_error`` instead of logging's ``--- Logging error ---`` traceback on stderr (imported at the
    first record: the module docstring)."""
    from concurrent_log_handler import ConcurrentRotatingFileHandler

    class Rotating(ConcurrentRotatingFileHandler):
        def __init__(self, path: str, on_error: OnError) -> None:
            super().__init__(path, "a", maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
            self.on_error = on_error

        def handleError(self, record: logging.LogRecord) -> None:
            self.on_error(sys.exc_info()[1])

    return Rotating


def _file_handler(path: Path, redactor: Redactor, fmt: str, on_error: OnError) -> logging.Handler:
    """A rotating handler for ``path``; FileError (nothing opened) when it or its lock file is a link."""
    for p in (path, _lock_file_of(path)):  # backups are only renamed onto: a rename follows no link
        try:
            files.refuse_link(p, in_place=True)
        except files.FileError as exc:
            raise files.FileError(f"{printable(str(p))}: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _rotating_class()(str(path), on_error)
    handler.setFormatter(RedactingFormatter(fmt, redactor))
    return handler


class _LazyFileHandler(logging.Handler):
    """Opens its rotating file handler at the first record (secrets redacted there); once the run's
    log files cannot be written (``broken``), it writes nothing more."""

    def __init__(self, path: Path, redactor: Redactor, fmt: str, broken: _Broken):
        super().__init__()
        self.path, self.redactor, self.fmt, self.broken = path, redactor, fmt, broken
        self._inner: logging.Handler | None = None
        self._refused = False
        self._opening = threading.Lock()

    def _target(self) -> logging.Handler | None:
        inner = self._inner
        if inner is None and not self._refused:
            with self._opening:
                if self._inner is None and not self._refused:
                    try:
                        self._inner = _file_handler(self.path, self.redactor, self.fmt, self._failed)
                    except files.FileError as exc:
                        self._refused = True
                        log.warning("%s; writing no log file %s", exc, printable(str(self.path)))
                    except OSError as exc:  # the folder or the file cannot be made: a full disk
                        self._refused = True
                        self.broken.failed(self.path, exc)
                inner = self._inner
        return inner

    def _failed(self, exc: BaseException | None) -> None:
        self.broken.failed(self.path, exc)

    def handle(self, record: logging.LogRecord) -> bool:
        # The inner handler filters (redacts), locks and formats; this one only forwards.
        if self.broken or not self.filter(record):
            return False
        target = self._target()
        return target.handle(record) if target is not None else False

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() forwards
        target = self._target()
        if target is not None:
            target.emit(record)

    def close(self) -> None:
        with self._opening:
            inner, self._inner = self._inner, None
            self._refused = True  # closed: a later record opens nothing
        if inner is not None:
            try:
                inner.close()
            except OSError as exc:  # its last flush: the disk is still full
                self.broken.failed(self.path, exc)
        super().close()


def _private_logger(name: str, handler: logging.Handler) -> logging.Logger:
    """A logger of one run only: made here, not through ``logging.getLogger``, so it is in no tree
    of the process (no other run, host application or test sees it, nor it theirs), at INFO."""
    logger = logging.Logger(name, logging.INFO)  # noqa: LOG001 - outside the logging tree on purpose (docstring)
    logger.propagate = False
    logger.addHandler(handler)
    return logger


class RunLogs:
    """The log files of one run: ``run`` (logs/build.log) and ``variant(alias)`` (logs/<alias>.log).

    Its loggers belong to it alone (``_private_logger``): two runs in one process write only their
    own files, and nothing of the process's logging is changed. What other code wants in the run
    log it is handed explicitly (uv's output: index.Uv.record).
    """

    def __init__(self, directory: Path | None, redactor: Redactor | None = None):
        self.directory = directory
        self.redactor = redactor or Redactor()
        self.broken = _Broken()
        self._handlers: list[logging.Handler] = []
        self.run = _private_logger(RUN_LOGGER, self._handler("build.log", "%(asctime)s %(levelname)s %(message)s"))
        self._variants: dict[str, logging.Logger] = {}

    def _handler(self, name: str, fmt: str) -> logging.Handler:
        handler: logging.Handler = (
            logging.NullHandler()
            if self.directory is None
            else _LazyFileHandler(self.directory / name, self.redactor, fmt, self.broken)
        )
        self._handlers.append(handler)
        return handler

    def variant(self, alias: str) -> logging.Logger:
        """The logger of ``alias``'s build output (its own file), made once per run."""
        if alias not in self._variants:
            self._variants[alias] = _private_logger(
                f"e2b_matrix.variant.{alias}", self._handler(f"{alias}.log", "%(message)s")
            )
        return self._variants[alias]

    def close(self) -> None:
        for handler in self._handlers:
            handler.close()
        self._handlers.clear()

    def __enter__(self) -> RunLogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunLogReporter:
    """The run log's ear: a Reporter (events.py) writing each event but the build log lines (those are
    in the variant's own file) as ``[variant] state: message``, and the promote and rollback commands.

    A failure is an ERROR, a variant cancelled or skipped and a run stopped a WARNING, the rest INFO. A
    variant found fresh before anything ran is not written: nothing happened to it, and a run where
    everything is fresh writes no file.
    """

    def __init__(self, run_logs: RunLogs):
        self.logger = run_logs.run
        self._started: set[str] = set()

    def started(self, name: str, alias: str) -> None:
        self._started.add(name)
        self.logger.info("%s", progress.event_line(name, "queued", f"alias {alias}"))

    def progress(self, name: str, state: State, message: str = "") -> None:
        self.logger.info("%s", progress.event_line(name, state.value, message))

    def log(self, name: str, line: str) -> None:
        pass  # the variant's log file has it

    def finished(self, result: BuildResult) -> None:
        if result.status is State.FRESH and result.name not in self._started:
            return
        level = (
            logging.INFO if result.status.ok else logging.ERROR if result.status is State.FAILED else logging.WARNING
        )
        self.logger.log(level, "%s", progress.event_line(result.name, result.status.value, progress.outcome(result)))

    def stopped(self, reason: str) -> None:
        self.logger.warning("stopped: %s", reason)

    def promoted(self, entry: LockEntry, channel: str, before: str | None) -> None:
        """promote pointed ``channel`` at ``entry``'s build; ``before``: where it pointed."""
        was = " (new)" if not before else " (already there)" if before == entry.build_id else f" (was {before})"
        self.logger.info("promote: %s%s", progress.promoted(entry, channel), was)

    def rolled_back(self, before: LockEntry, after: LockEntry) -> None:
        self.logger.info("rollback: %s", progress.rolled_back(before, after))

    def pruned(self, kind: str, target: str, why: str, why_not: str) -> None:
        """prune removed ``target`` (``why`` no one needs it), or could not (``why_not``)."""
        if why_not:
            self.logger.error("prune: %s %s not removed: %s", kind, target, why_not)
        else:
            self.logger.info("prune: removed %s %s: %s", kind, target, why)

    def refused(self, command: str, name: str, error: Exception) -> None:
        """``command`` (promote, rollback) failed for ``name``, for ``error`` (what the CLI shows).
        Bad input (a ConfigError: exit 2) is not written: it changes nothing on disk, this log included."""
        if isinstance(error, ConfigError):
            return
        self.logger.error("%s: %s failed: %s", command, name, error)
