"""progress.py and logs.RunLogReporter: every reporter driven by one scripted run, its output asserted.

The events are what the runner sends (events.Reporter): a variant fresh at plan time (``finished``
alone), four started, progress and log lines, a build that retried and built, one whose smoke checks
failed, ``stopped`` by --fail-fast, then one cancelled and one skipped. No runner, no backend.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
import sys

import pytest

from conftest import KEY, cli_runner, fp
from e2b_matrix import progress
from e2b_matrix.cli import cli
from e2b_matrix.events import Broadcast
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.logs import RunLogReporter, RunLogs
from e2b_matrix.model import BuildResult, State
from e2b_matrix.secrets import Redactor
from e2b_matrix.verify import CheckResult, VerifyReport

CHECKS = VerifyReport(
    [
        CheckResult(
            "fuse.conf", "fuse", False, "expected 'user_allow_other' in: #\n# /etc/fuse.conf\n#mount_max = 1000"
        ),
        CheckResult("nexus --version", "nexus", True, "nexus, version 0.5.6"),
        CheckResult("python3 --version", "base", False, "the template has Python 3.12.8, the base declares 3.13"),
    ]
)
FAILED_CHECKS = [
    "smoke checks failed (2 of 3); lock entry not written:",
    "fuse.conf: expected 'user_allow_other' in: # # /etc/fuse.conf #mount_max = 1000",
    "python3 --version: the template has Python 3.12.8, the base declares 3.13",
]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


EVENTS = [
    ("finished", BuildResult("minimal", "nexus-sandbox-minimal", State.FRESH, "tmpl-m", "b-m0")),
    ("started", "latest", "nexus-sandbox-latest"),
    ("started", "pinned", "nexus-sandbox-pinned"),
    ("started", "tools", "nexus-tools"),
    ("started", "full", "nexus-sandbox-full"),
    ("progress", "tools", State.BUILDING, "submitting"),
    ("progress", "latest", State.BUILDING, "submitting"),
    ("progress", "pinned", State.WAITING, "for nexus-sandbox-latest to publish the 3 steps they share"),
    ("tick", 2.0),
    ("log", "tools", "[builder 1/2] RUN apt-get install -y [jq]"),
    ("progress", "tools", State.RETRYING, "429: too many builds; retry 1 in 0.5s"),
    ("progress", "tools", State.BUILDING, "attempt 2"),
    ("tick", 1.25),
    ("finished", BuildResult("tools", "nexus-tools", State.BUILT, "tmpl-t", "b-t1", 3.25, attempts=2)),
    ("progress", "latest", State.VERIFYING, "running smoke checks"),
    ("tick", 8.0),
    (
        "finished",
        BuildResult(
            "latest",
            "nexus-sandbox-latest",
            State.FAILED,
            duration_s=11.25,
            error=CHECKS.failure("lock entry not written"),
            attempts=1,
        ),
    ),
    ("stopped", "--fail-fast: latest failed"),
    (
        "finished",
        BuildResult(
            "pinned",
            "nexus-sandbox-pinned",
            State.CANCELLED,
            duration_s=11.25,
            error="stopped while building (--fail-fast)",
        ),
    ),
    ("finished", BuildResult("full", "nexus-sandbox-full", State.SKIPPED, error="not started: the run was stopped")),
]
RESULTS = [e[1] for e in EVENTS if e[0] == "finished"]


def play(reporter, events=EVENTS, clock: Clock | None = None) -> None:
    for kind, *args in events:
        if kind == "tick":
            if clock is not None:
                clock.now += args[0]
        else:
            getattr(reporter, kind)(*args)


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


# -- plain lines ------------------------------------------------------------------------

PLAIN = [
    "[minimal] fresh: build b-m0",
    "[latest] queued: alias nexus-sandbox-latest",
    "[pinned] queued: alias nexus-sandbox-pinned",
    "[tools] queued: alias nexus-tools",
    "[full] queued: alias nexus-sandbox-full",
    "[tools] building: submitting",
    "[latest] building: submitting",
    "[pinned] waiting: for nexus-sandbox-latest to publish the 3 steps they share",
    "[tools] log: [builder 1/2] RUN apt-get install -y [jq]",  # -v only
    "[tools] retrying: 429: too many builds; retry 1 in 0.5s",
    "[tools] building: attempt 2",
    "[tools] built: tmpl-t (build b-t1) in 3.2s after 2 attempts",
    "[latest] verifying: running smoke checks",
    f"[latest] failed: {FAILED_CHECKS[0]}",
    f"  {FAILED_CHECKS[1]}",
    f"  {FAILED_CHECKS[2]}",
    "stopped: --fail-fast: latest failed",
    "[pinned] cancelled: stopped while building (--fail-fast)",
    "[full] skipped: not started: the run was stopped",
]


@pytest.mark.parametrize(
    "verbose, quiet, expected",
    [
        (0, False, [line for line in PLAIN if "log:" not in line]),
        (1, False, PLAIN),
        (2, False, PLAIN),
        (0, True, PLAIN[13:16]),  # only the failure, each failed check on its own line
    ],
)
def test_plain_lines(verbose, quiet, expected):
    out = io.StringIO()
    play(progress.PlainReporter(verbose, quiet, stream=out))
    assert lines_of(out.getvalue()) == expected


# -- the live table ---------------------------------------------------------------------

TABLE_MIDWAY = [
    "variant  state     time    last line",
    "minimal  fresh             build b-m0",
    "latest   building      2s  submitting",
    "pinned   waiting           for nexus-sandbox-latest to publish the 3 steps they share",
    "tools    building      2s  [builder 1/2] RUN apt-get install -y [jq]",
    "full     queued",
]
TABLE_END = [
    "variant  state      time    last line",
    "minimal  fresh              build b-m0",
    "latest   failed        11s  smoke checks failed (2 of 3); lock entry not written: fuse.conf: expected 'user…",
    "pinned   cancelled          stopped while building (--fail-fast)",
    "tools    built          3s  tmpl-t (build b-t1) in 3.2s after 2 attempts",
    "full     skipped            not started: the run was stopped",
    "stopped: --fail-fast: latest failed",
]


def test_the_live_table_midway_and_as_it_ends():
    """Rendered by rich to a file: no terminal. The table that stays on screen is the last one."""
    from rich.console import Console

    clock, screen = Clock(), io.StringIO()
    live = progress.LiveReporter(console=Console(file=screen, width=110), clock=clock)
    with live:
        play(live, EVENTS[:10], clock)
        midway = io.StringIO()
        Console(file=midway, width=110).print(live.render())
        play(live, EVENTS[10:], clock)
    assert_table(lines_of(midway.getvalue()), TABLE_MIDWAY)  # a log line's brackets are text, not markup
    assert_table(lines_of(screen.getvalue()), TABLE_END)


def assert_table(lines: list[str], expected: list[str]) -> None:
    """The table as expected; a cell rich cut with "…" may keep one character more or less (rich 14.0,
    our floor, cuts one character later than rich 15)."""

    def cut(line: str) -> str:
        return line.split("…")[0]

    assert len(lines) == len(expected), lines
    for line, want in zip(lines, expected, strict=True):
        if "…" in want and "…" in line:
            got, wanted = cut(line), cut(want)
            assert (got.startswith(wanted) or wanted.startswith(got)) and abs(len(got) - len(wanted)) <= 1, (line, want)
        else:
            assert line == want


def test_a_run_where_all_is_fresh_imports_no_rich_and_prints_nothing():
    code = """if True:
        import sys
        from e2b_matrix.model import BuildResult, State
        from e2b_matrix.progress import LiveReporter
        with LiveReporter() as live:
            live.finished(BuildResult("a", "alias-a", State.FRESH, "t", "b"))
            live.stopped("nothing to build")
        fresh = "rich" in sys.modules
        with LiveReporter() as live:
            live.started("a", "alias-a")
            live.progress("a", State.BUILDING, "submitting")
            print(fresh, "rich" in sys.modules, file=sys.stderr)
    """
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr.split() == ["False", "True"]
    assert lines_of(p.stdout) == ["variant  state     time    last line", "a        building      0s  submitting"]


# -- --json -----------------------------------------------------------------------------


def test_json_comes_from_the_events_and_plain_lines_go_to_stderr():
    out, err = io.StringIO(), io.StringIO()
    with progress.make_reporter(0, False, as_json=True, out=out, err=err) as reporter:
        play(reporter)
    assert out.getvalue() == ""
    assert lines_of(err.getvalue()) == [line for line in PLAIN if "log:" not in line]
    assert reporter.json() == [
        {
            "name": "minimal",
            "alias": "nexus-sandbox-minimal",
            "status": "fresh",
            "template_id": "tmpl-m",
            "build_id": "b-m0",
            "duration_s": 0.0,
            "attempts": 0,
            "image": "",
            "error": "",
        },
        {
            "name": "latest",
            "alias": "nexus-sandbox-latest",
            "status": "failed",
            "template_id": "",
            "build_id": "",
            "duration_s": 11.25,
            "attempts": 1,
            "image": "",
            "error": "\n".join(FAILED_CHECKS),
        },
        {
            "name": "pinned",
            "alias": "nexus-sandbox-pinned",
            "status": "cancelled",
            "template_id": "",
            "build_id": "",
            "duration_s": 11.25,
            "attempts": 0,
            "image": "",
            "error": "stopped while building (--fail-fast)",
        },
        {
            "name": "tools",
            "alias": "nexus-tools",
            "status": "built",
            "template_id": "tmpl-t",
            "build_id": "b-t1",
            "duration_s": 3.25,
            "attempts": 2,
            "image": "",
            "error": "",
        },
        {
            "name": "full",
            "alias": "nexus-sandbox-full",
            "status": "skipped",
            "template_id": "",
            "build_id": "",
            "duration_s": 0.0,
            "attempts": 0,
            "image": "",
            "error": "not started: the run was stopped",
        },
    ]  # in the order the run first named them: the fresh one, then as started
    json.dumps(reporter.json())


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "out, quiet, as_json, display",
    [
        (Tty(), False, False, progress.LiveReporter),
        (Tty(), True, False, progress.PlainReporter),
        (Tty(), False, True, progress.PlainReporter),
        (io.StringIO(), False, False, progress.PlainReporter),
    ],
)
def test_make_reporter_picks_the_table_only_for_a_terminal(out, quiet, as_json, display):
    reporter = progress.make_reporter(0, quiet, as_json, out=out, err=io.StringIO())
    assert type(reporter.display) is display
    assert (reporter.collected is not None) is as_json


# -- the summary ------------------------------------------------------------------------

SUMMARY = [  # the table and the counts the scripted run ends with
    "VARIANT  ALIAS                  STATUS     TEMPLATE ID  BUILD ID  TIME",
    "minimal  nexus-sandbox-minimal  fresh      tmpl-m       b-m0",
    "tools    nexus-tools            built      tmpl-t       b-t1      3.2s",
    "latest   nexus-sandbox-latest   failed                            11.2s",
    "pinned   nexus-sandbox-pinned   cancelled                         11.2s",
    "full     nexus-sandbox-full     skipped",
    "1 built, 1 cancelled, 1 failed, 1 fresh, 1 skipped",
]


def test_the_summary_shows_each_failed_check_on_its_own_line():
    out, err = io.StringIO(), io.StringIO()
    progress.summary(RESULTS, out=out, err=err)
    assert lines_of(out.getvalue()) == SUMMARY
    assert lines_of(err.getvalue()) == [
        f"latest: failed: {FAILED_CHECKS[0]}",
        f"  {FAILED_CHECKS[1]}",
        f"  {FAILED_CHECKS[2]}",
        "pinned: cancelled: stopped while building (--fail-fast)",
        "full: skipped: not started: the run was stopped",
    ]


def test_a_report_with_one_failure_names_it_alone():
    report = VerifyReport([CheckResult("a", "x", True, "fine"), CheckResult("b", "x", False, "exit 1: \n  no\n")])
    assert report.failure() == "smoke checks failed (1 of 2):\nb: exit 1: no"


# -- the run log ------------------------------------------------------------------------

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ")


def run_log_lines(folder) -> list[str]:
    """The run log's lines, their time stamps cut (a record of several lines has one, on its first)."""
    text = (folder / "build.log").read_text()
    assert all(STAMP.match(line) or line.startswith("  ") for line in text.splitlines()), text
    return [STAMP.sub("", line) for line in text.splitlines()]


def test_the_run_log_hears_the_same_events_beside_the_console(tmp_path):
    """Broadcast as the workflow does it: the console's lines and the run log's from one stream of events."""
    screen = io.StringIO()
    with RunLogs(tmp_path / "logs", Redactor([KEY])) as logs:
        play(Broadcast(progress.PlainReporter(stream=screen), RunLogReporter(logs)))
    assert lines_of(screen.getvalue()) == [line for line in PLAIN if "log:" not in line]
    assert run_log_lines(tmp_path / "logs") == [  # no build log lines (the variant's file has them), no fresh
        "INFO [latest] queued: alias nexus-sandbox-latest",
        "INFO [pinned] queued: alias nexus-sandbox-pinned",
        "INFO [tools] queued: alias nexus-tools",
        "INFO [full] queued: alias nexus-sandbox-full",
        "INFO [tools] building: submitting",
        "INFO [latest] building: submitting",
        "INFO [pinned] waiting: for nexus-sandbox-latest to publish the 3 steps they share",
        "INFO [tools] retrying: 429: too many builds; retry 1 in 0.5s",
        "INFO [tools] building: attempt 2",
        "INFO [tools] built: tmpl-t (build b-t1) in 3.2s after 2 attempts",
        "INFO [latest] verifying: running smoke checks",
        f"ERROR [latest] failed: {FAILED_CHECKS[0]}",
        f"  {FAILED_CHECKS[1]}",
        f"  {FAILED_CHECKS[2]}",
        "WARNING stopped: --fail-fast: latest failed",
        "WARNING [pinned] cancelled: stopped while building (--fail-fast)",
        "WARNING [full] skipped: not started: the run was stopped",
    ]


def test_the_run_log_records_an_interrupt_and_a_variant_fresh_after_waiting_and_redacts(tmp_path):
    with RunLogs(tmp_path / "logs", Redactor([KEY])) as logs:
        play(
            RunLogReporter(logs),
            [
                ("started", "a", "alias-a"),
                ("started", "b", "alias-b"),
                ("progress", "b", State.WAITING, "alias-b is being built by pid 42"),
                ("progress", "a", State.BUILDING, f"submitting with {KEY}"),
                ("stopped", "interrupted"),
                ("finished", BuildResult("a", "alias-a", State.CANCELLED, error="interrupted while building")),
                ("finished", BuildResult("b", "alias-b", State.FRESH, "t-b", "b-b7")),
            ],
        )
    assert run_log_lines(tmp_path / "logs") == [
        "INFO [a] queued: alias alias-a",
        "INFO [b] queued: alias alias-b",
        "INFO [b] waiting: alias-b is being built by pid 42",
        "INFO [a] building: submitting with ***",
        "WARNING stopped: interrupted",
        "WARNING [a] cancelled: interrupted while building",
        "INFO [b] fresh: build b-b7",  # started, then found built by the other run: news
    ]


def test_a_run_where_all_is_fresh_writes_no_run_log(tmp_path):
    with RunLogs(tmp_path / "logs") as logs:
        play(RunLogReporter(logs), EVENTS[:1])
    assert not (tmp_path / "logs").exists()


def test_without_log_files_the_run_log_prints_nothing(capfd):
    """No handler would leave its warnings and errors to logging's last resort: stderr, tearing the table."""
    with RunLogs(None) as logs:
        play(RunLogReporter(logs))
    assert capfd.readouterr() == ("", "")


# -- -v: the tool's steps, not each HTTP request ---------------------------------------------


def test_v_shows_no_http_request_and_vv_does(project, emu):
    """status asks E2B (through the SDK, over httpx) about a lock entry: httpx logs each request at INFO."""
    from e2b_matrix.lock import store

    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    store.update_lock(
        project / "templates.lock",
        [
            LockEntry(
                alias="nexus-sandbox-minimal",
                variant="minimal",
                template_id="tmplgone",
                build_id="b1",
                fingerprint=fp(1),
                layers={"base": "1"},
                built_at=now,
                domain="e2b.app",
            )
        ],
    )
    runs = {flag: cli_runner().invoke(cli, ["-C", str(project), flag, "status"]) for flag in ("-v", "-vv")}
    for r in runs.values():
        assert r.exit_code == 1 and "template tmplgone is gone" in r.stdout, r.output
    assert emu.request_count >= 2
    assert "HTTP Request" not in runs["-v"].stderr
    assert "INFO httpx: HTTP Request: GET http://127.0.0.1:" in runs["-vv"].stderr


# -- the build command: what it prints of the events and the summary -----------------------------


@pytest.fixture
def scripted(monkeypatch):
    """workflow.build replaced by the scripted run: what the CLI makes of a reporter's events and a Summary
    (its exit code: ``scripted["exit"]``)."""
    from e2b_matrix import workflow

    said = {"exit": 1}

    def build(options, settings, reporter):
        play(reporter)
        return workflow.Summary(tuple(RESULTS), said["exit"])

    monkeypatch.setattr(workflow, "build", build)
    return said


def test_build_json_prints_what_the_reporter_heard(project, scripted):
    r = cli_runner().invoke(cli, ["-C", str(project), "build-all", "--json"])
    assert r.exit_code == 1
    assert [x["name"] for x in json.loads(r.stdout)] == ["minimal", "latest", "pinned", "tools", "full"]
    assert json.loads(r.stdout)[1]["error"] == "\n".join(FAILED_CHECKS)
    assert lines_of(r.stderr) == [line for line in PLAIN if "log:" not in line]


def test_build_prints_lines_then_the_summary(project, scripted):
    r = cli_runner().invoke(cli, ["-C", str(project), "-q", "build-all"])
    assert r.exit_code == 1
    assert lines_of(r.stdout) == PLAIN[13:16] + SUMMARY
    assert lines_of(r.stderr) == [
        f"latest: failed: {FAILED_CHECKS[0]}",
        f"  {FAILED_CHECKS[1]}",
        f"  {FAILED_CHECKS[2]}",
        "pinned: cancelled: stopped while building (--fail-fast)",
        "full: skipped: not started: the run was stopped",
    ]


def test_an_interrupted_build_says_so_and_exits_130(project, scripted):
    scripted["exit"] = 130
    r = cli_runner().invoke(cli, ["-C", str(project), "build-all", "--json"])
    assert r.exit_code == 130 and len(json.loads(r.stdout)) == 5
    assert r.stderr.endswith(
        "stopped: --fail-fast: latest failed\n[pinned] cancelled: stopped while building "
        "(--fail-fast)\n[full] skipped: not started: the run was stopped\n"
        "e2b-matrix: interrupted; finished builds are in the lock\n"
    )
