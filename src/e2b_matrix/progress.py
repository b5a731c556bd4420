"""What a person (or CI) sees while builds run, and the summary at the end.

On a terminal: a live table (rich) of each variant's state and last log
line. Otherwise: ``[variant] message`` lines, one per state change (and per
log page at -v), fit for CI logs. The CLI redacts what reaches the console
(secrets.RedactedStream), so nothing here handles secrets.
"""

from __future__ import annotations

import sys
import threading
import time

from e2b_matrix.model import BuildResult

QUIET_STATES = {"log"}
FINAL_STATES = {"built", "failed", "cancelled", "fresh", "skipped"}


class PlainReporter:
    def __init__(self, verbose: int = 0, quiet: bool = False, stream=None):
        self.verbose = verbose
        self.quiet = quiet
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, name: str, state: str, message: str) -> None:
        if self.quiet and state not in ("failed",):
            return
        if state in QUIET_STATES and self.verbose < 1:
            return
        text = f"[{name}] {state}" + (f": {message}" if message else "")
        with self._lock:
            print(text, file=self.stream or sys.stdout, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class LiveReporter:
    """A rich Live table: variant, state, elapsed, last line.

    rich is imported and the display started at the first report that is not
    "fresh": a run where everything is fresh pays for neither.
    """

    def __init__(self):
        self.rows: dict[str, list] = {}  # name -> [state, line, start, end], in the order first reported
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self.live = None

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.live = Live(console=Console(), refresh_per_second=4, transient=False, get_renderable=self._render)
        self.live.__enter__()

    def _render(self):
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for col in ("variant", "state", "time", "last line"):
            table.add_column(col, overflow="ellipsis", no_wrap=True, max_width=None if col != "last line" else 80)
        now = time.monotonic()
        with self._lock:
            for name, (state, line, started, ended) in self.rows.items():
                style = {"built": "green", "fresh": "cyan", "failed": "red", "cancelled": "yellow"}.get(state, "")
                elapsed = "" if state in ("queued", "fresh") else f"{(ended or now) - started:5.0f}s"
                table.add_row(name, f"[{style}]{state}[/]" if style else state, elapsed, line)
        return table

    def __call__(self, name: str, state: str, message: str) -> None:
        if self.live is None and state not in ("fresh", "queued"):
            with self._start_lock:  # workers report at once: start one display only
                if self.live is None:
                    self._start()
        with self._lock:
            row = self.rows.setdefault(name, ["queued", "", time.monotonic(), None])
            if state == "log":
                row[1] = message
                return
            if state == "building" and row[0] == "queued":
                row[2] = time.monotonic()
            row[0] = state
            row[1] = message
            if state in FINAL_STATES:
                row[3] = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
        return False


def make_reporter(verbose, quiet, as_json=False, out=None, err=None):
    """A live table on a terminal; else plain lines to ``out`` (to ``err`` when
    stdout carries JSON). ``out``/``err`` default to sys.stdout/sys.stderr."""
    out, err = out or sys.stdout, err or sys.stderr
    if out.isatty() and not quiet and not as_json:
        return LiveReporter()
    return PlainReporter(verbose, quiet, stream=err if as_json else out)


def print_table(headers: list[str], rows: list[list[str]], file=None) -> None:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=file or sys.stdout)


def summary(results: list[BuildResult], out=None, err=None) -> None:
    print_table(["VARIANT", "ALIAS", "STATUS", "TEMPLATE ID", "BUILD ID", "TIME"],
                [[r.name, r.alias, r.status.value, r.template_id, r.build_id,
                  f"{r.duration_s:.1f}s" if r.duration_s else ""] for r in results], file=out)
    for r in results:
        if r.error and not r.status.ok:
            print(f"{r.name}: {r.status.value}: {r.error}", file=err or sys.stderr)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out or sys.stdout)


def results_json(results: list[BuildResult]) -> list[dict]:
    return [{"name": r.name, "alias": r.alias, "status": r.status.value, "template_id": r.template_id,
             "build_id": r.build_id, "duration_s": r.duration_s, "attempts": r.attempts, "image": r.image,
             "error": r.error} for r in results]
