"""What a person (or CI) sees while builds run, and the summary at the end.

Every console rendering is a Reporter (events.py) of the same events: on a
terminal, a live table (rich) of each variant's state and last line
(``LiveReporter``); otherwise ``[variant] state: message`` lines fit for CI
logs (``PlainReporter``); with --json, the finished results kept for stdout
(``JsonReporter``) while the plain lines go to stderr. ``make_reporter``
picks; the run log (logs.RunLogReporter) hears the same events beside them.
The CLI redacts what reaches the console (secrets.RedactedStream), so
nothing here handles secrets. rich is imported when the live table first shows
(``LiveReporter._show``): a run where everything is fresh, and every command that
prints a plain table, pays nothing for it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import attrs

from e2b_matrix.events import Broadcast, Silent
from e2b_matrix.model import BuildResult, BuildResultJSON, State
from e2b_matrix.names import printable

if TYPE_CHECKING:
    from rich.console import Console  # rich: imported when the table first shows (above)
    from rich.live import Live
    from rich.table import Table

    from e2b_matrix.lock.model import LockEntry  # `list` prints a table and reads no lock

# -- the words every rendering shares -----------------------------------------------


def event_line(name: str, state: str, message: str = "") -> str:
    """``[name] state: message``; a message of several lines continues on lines indented by two."""
    return f"[{name}] {state}" + (f": {indent(message)}" if message else "")


def indent(text: str) -> str:
    """Every line after the first indented by two: an error that names one failed check a line.
    Control characters in it are escaped (a build's log line, a library's error)."""
    return printable(text, lines=True).replace("\n", "\n  ")


def one_line(text: str) -> str:
    """An error of several lines on one (a table cell): its first line, then the rest joined by "; "."""
    first, *rest = printable(text, lines=True).split("\n")
    return printable(f"{first} {'; '.join(rest)}" if rest else first)


def outcome(result: BuildResult) -> str:
    """What a finished variant's state is followed by: the build it has, or why not (``error``)."""
    if result.status is State.BUILT:
        took = f" in {result.duration_s:.1f}s" if result.duration_s else ""
        tries = f" after {result.attempts} attempts" if result.attempts > 1 else ""
        return f"{result.template_id} (build {result.build_id}){took}{tries}"
    if result.status is State.FRESH:
        return f"build {result.build_id}" if result.build_id else ""
    return result.error


def promoted(entry: LockEntry, channel: str) -> str:
    """What promote says of each entry: ``alias: channel -> build``."""
    return f"{entry.alias}: {channel} -> {entry.build_id}"


def rolled_back(before: LockEntry, after: LockEntry) -> str:
    """What rollback says: ``alias: build -> previous build`` and the channels that followed it back."""
    moved = [ch for ch, bid in after.channels.items() if bid == after.build_id and before.channels.get(ch) != bid]
    return f"{after.alias}: {before.build_id} -> {after.build_id}" + (
        f" (channels moved back: {', '.join(moved)})" if moved else ""
    )


# -- the renderings ----------------------------------------------------------------------


class PlainReporter:
    """One line per event, for CI logs: a variant's states, its end and why, and why the run stopped.

    ``verbose``: each build log line too; ``quiet``: only the variants that failed.
    """

    def __init__(self, verbose: int = 0, quiet: bool = False, stream: TextIO | None = None):
        self.verbose = verbose
        self.quiet = quiet
        self.stream = stream  # None: sys.stdout when the line is printed (the CLI's redacted stream)

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def started(self, name: str, alias: str) -> None:
        if not self.quiet:
            self._print(event_line(name, State.QUEUED.value, f"alias {alias}"))

    def progress(self, name: str, state: State, message: str = "") -> None:
        if not self.quiet:
            self._print(event_line(name, state.value, message))

    def log(self, name: str, line: str) -> None:
        if self.verbose >= 1 and not self.quiet:
            self._print(event_line(name, "log", line))

    def finished(self, result: BuildResult) -> None:
        if not self.quiet or result.status is State.FAILED:
            self._print(event_line(result.name, result.status.value, outcome(result)))

    def stopped(self, reason: str) -> None:
        if not self.quiet:
            self._print(f"stopped: {reason}")

    def __enter__(self) -> PlainReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@attrs.define
class _Row:
    state: State
    line: str = ""
    since: float | None = None  # when it started building
    ended: float | None = None


STYLES = {
    State.BUILT: "green",
    State.FRESH: "cyan",
    State.FAILED: "red",
    State.CANCELLED: "yellow",
    State.SKIPPED: "dim",
}


class LiveReporter:
    """A rich Live table: variant, state, build time, last line; why the run stopped below it.

    rich is imported and the display started at the first event that is news (anything but a variant
    queued, found fresh, or the run stopping): a run where everything is fresh pays for neither.
    ``render()`` is the table as it stands. ``console`` and ``clock`` are rich's Console (default: one
    on stdout) and a monotonic clock, for tests.
    """

    def __init__(
        self, console: Console | None = None, clock: Callable[[], float] = time.monotonic, stream: TextIO | None = None
    ):
        self.console = console
        self.stream = stream  # where the default Console writes (the CLI's redacted stdout)
        self.clock = clock
        self.rows: dict[str, _Row] = {}  # in the order first heard of
        self.stop_reason = ""
        self.live: Live | None = None
        self._lock = threading.Lock()  # the display's refresh thread renders while the runner's loop reports

    def _show(self) -> None:
        if self.live is None:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(
                console=self.console or Console(file=self.stream),
                refresh_per_second=4,
                transient=False,
                get_renderable=self.render,
            )
            self.live.start()

    def render(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        now = self.clock()
        table = Table(
            box=None,
            pad_edge=False,
            caption_justify="left",
            caption=Text(f"stopped: {self.stop_reason}", style="yellow") if self.stop_reason else None,
        )
        for col in ("variant", "state", "time", "last line"):
            table.add_column(col, overflow="ellipsis", no_wrap=True, max_width=80 if col == "last line" else None)
        with self._lock:
            for name, row in self.rows.items():
                took = f"{(row.ended or now) - row.since:5.0f}s" if row.since is not None else ""
                # Text, not markup: a log line's "[...]" is text
                table.add_row(
                    Text(name),
                    Text(row.state.value, style=STYLES.get(row.state, "")),
                    Text(took),
                    Text(one_line(row.line)),
                )
        return table

    def started(self, name: str, alias: str) -> None:
        with self._lock:
            self.rows[name] = _Row(State.QUEUED)

    def progress(self, name: str, state: State, message: str = "") -> None:
        self._show()
        with self._lock:
            row = self.rows.setdefault(name, _Row(state))
            row.state, row.line = state, message
            if state is State.BUILDING and row.since is None:
                row.since = self.clock()

    def log(self, name: str, line: str) -> None:
        self._show()
        with self._lock:
            self.rows.setdefault(name, _Row(State.BUILDING)).line = line

    def finished(self, result: BuildResult) -> None:
        if result.status is not State.FRESH:
            self._show()
        with self._lock:
            row = self.rows.setdefault(result.name, _Row(result.status))
            row.state, row.line = result.status, one_line(outcome(result))
            if row.since is not None:
                row.ended = self.clock()

    def stopped(self, reason: str) -> None:
        with self._lock:
            self.stop_reason = reason

    def __enter__(self) -> LiveReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()  # the table as it ended stays on the screen


class JsonReporter(Silent):
    """--json: each variant's finished result, in the order the run first named them."""

    def __init__(self) -> None:
        self._results: dict[str, BuildResult | None] = {}

    def started(self, name: str, alias: str) -> None:
        self._results.setdefault(name, None)

    def finished(self, result: BuildResult) -> None:
        self._results[result.name] = result

    def results(self) -> list[BuildResult]:
        return [r for r in self._results.values() if r is not None]

    def json(self) -> list[BuildResultJSON]:
        return results_json(self.results())


class ConsoleReporter(Broadcast):
    """What the console hears: the display (the live table or plain lines) and, with --json, the results
    kept for stdout (``json()``). A context manager: the live table ends with it."""

    def __init__(self, display: PlainReporter | LiveReporter, collect_json: bool = False):
        self.display = display
        self.collected = JsonReporter() if collect_json else None
        super().__init__(display, *([self.collected] if self.collected is not None else []))

    def json(self) -> list[BuildResultJSON]:
        """The results heard (none when made without ``collect_json``)."""
        return self.collected.json() if self.collected is not None else []

    def __enter__(self) -> ConsoleReporter:
        self.display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.display.__exit__(*exc)


def make_reporter(
    verbose: int, quiet: bool, as_json: bool = False, out: TextIO | None = None, err: TextIO | None = None
) -> ConsoleReporter:
    """A live table on a terminal; else plain lines to ``out`` (to ``err`` when stdout carries JSON).
    ``out``/``err`` default to sys.stdout/sys.stderr."""
    out, err = out or sys.stdout, err or sys.stderr
    if out.isatty() and not quiet and not as_json:
        return ConsoleReporter(LiveReporter(stream=out))
    return ConsoleReporter(PlainReporter(verbose, quiet, stream=err if as_json else out), collect_json=as_json)


# -- the end of a run ----------------------------------------------------------------------


def print_table(headers: list[str], rows: list[list[str]], file: TextIO | None = None) -> None:
    rows = [[printable(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=file or sys.stdout)


def summary(results: list[BuildResult], out: TextIO | None = None, err: TextIO | None = None) -> None:
    """The results' table and counts to ``out``; to ``err``, why each one that is not ok ended so,
    an error of several lines (each failed smoke check) indented under its first."""
    print_table(
        ["VARIANT", "ALIAS", "STATUS", "TEMPLATE ID", "BUILD ID", "TIME"],
        [
            [r.name, r.alias, r.status.value, r.template_id, r.build_id, f"{r.duration_s:.1f}s" if r.duration_s else ""]
            for r in results
        ],
        file=out,
    )
    for r in results:
        if r.error and not r.status.ok:
            print(f"{r.name}: {r.status.value}: {indent(r.error)}", file=err or sys.stderr)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out or sys.stdout)


def results_json(results: list[BuildResult]) -> list[BuildResultJSON]:
    """The results as --json prints them."""
    return [r.to_json() for r in results]
