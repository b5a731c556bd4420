"""Round 4: secrets inside URLs, numbers at their edges, output that stays one line.

Each class is tried beyond the example that found it, as ``assert_refused`` does: exit 2, one
line naming the file, key or variable, no traceback, nothing on disk changed, no request sent.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import pytest

from conftest import KEY, run, snapshot, write
from e2b_matrix import names, secrets, settings
from e2b_matrix.retry import RetryPolicy
from test_reliability import assert_refused
from test_trust import ALIAS, UUID, good_lock

PASSWORD = "hunter2pw0rd"


# ------------------------------------------------------------------ 1. a secret inside a URL

URL_VARS = sorted(name for name, var in settings.VARS.items() if var.parse in (names.check_url, names.check_http_url))
CREDENTIAL_URLS = [
    f"http://user:{PASSWORD}@127.0.0.1:9",
    f"https://:{PASSWORD}@api.example.com",
    f"http://user:{PASSWORD}%40x@127.0.0.1",
    "http://ghp0123456789abcdefghij@127.0.0.1",
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
@pytest.mark.parametrize("var", URL_VARS)
def test_a_url_variable_with_credentials_is_refused_without_showing_them(project, emu, var, url):
    for args in (["plan"], ["build", "minimal"], ["lock", "check"], ["resolve", "latest"]):
        line = assert_refused(project, emu, args, f"{var}: ", env={var: url})
        assert "holds a user name or password (not shown)" in line
        assert PASSWORD not in line and "ghp0123456789" not in line


def test_the_api_url_variable_exists_among_the_checked_ones():
    assert "E2B_API_URL" in URL_VARS  # the example that found the class


def test_a_lock_recording_a_url_with_credentials_is_refused_on_read(project, emu):
    (project / "templates.lock").write_text(good_lock(api_url=f'"http://u:{PASSWORD}@127.0.0.1:9"'))
    for args in (["plan"], ["lock", "show"], ["resolve", "latest"]):
        line = assert_refused(project, emu, args, f"templates.{ALIAS}.api_url: ")
        assert PASSWORD not in line


@pytest.mark.parametrize(
    "text",
    [
        f'[[steps]]\nrun = "pip install --index-url https://u:{PASSWORD}@idx.example/simple x"\n',
        f'[[steps]]\nenv = {{ PIP_INDEX_URL = "https://u:{PASSWORD}@idx.example/simple" }}\n',
        f'[[checks]]\nname = "c"\ncommand = "curl https://u:{PASSWORD}@example.com"\n',
    ],
)
def test_a_url_with_a_password_in_a_layer_is_refused_as_a_secret(project, emu, text):
    write(project / "layers/l.toml", f'[layer]\nname = "l"\nversion = "1"\n{text}')
    write(project / "variants/x.toml", '[variant]\nname = "x"\nalias = "x"\nlayers = ["base", "l"]\n')
    line = assert_refused(project, emu, ["plan"], "layers/l.toml: ")
    assert "looks like a secret (not shown)" in line and PASSWORD not in line


def test_a_url_with_a_password_in_a_set_is_refused(project, emu):
    line = assert_refused(project, emu, ["plan", "--set", f"base.start_cmd=curl http://u:{PASSWORD}@h"], "--set")
    assert PASSWORD not in line


def test_a_password_in_a_url_from_e2b_is_masked_in_every_output(project, emu):
    """What a library or E2B says passes the one redactor: a URL's password never reaches a screen or a log."""
    emu.configure(
        ALIAS.replace("latest", "minimal"),
        fail_at_step=1,
        fail_message=f"cannot fetch https://deploy:{PASSWORD}@registry.example/x",
    )
    r = run(project, "-v", "build", "minimal")
    assert r.exit_code == 1
    assert "https://deploy:***@registry.example/x" in r.output and PASSWORD not in r.output
    assert PASSWORD.encode() not in b"".join(v for v in snapshot(project).values() if isinstance(v, bytes))


@pytest.mark.parametrize(
    "text,masked",
    [
        (f"http://user:{PASSWORD}@host/x", "http://user:***@host/x"),
        (f"git+https://x-access-token:{PASSWORD}@github.com/o/r", "git+https://x-access-token:***@github.com/o/r"),
        ("https://ghp0123456789abcdefghij@github.com/o/r", "https://***@github.com/o/r"),
        ("ssh://git@github.com/o/r", "ssh://git@github.com/o/r"),  # a user name, no secret
        ("fake://nexus-sandbox-latest@0f1c2d3e4f5a6b7c", "fake://nexus-sandbox-latest@0f1c2d3e4f5a6b7c"),
    ],
)
def test_the_redactor_masks_url_credentials_and_looks_secret_agrees(text, masked):
    assert secrets.Redactor().redact(text) == masked
    assert secrets.looks_secret("value", text) == (masked != text)


# ------------------------------------------------------------------ 4. numbers at their edges


@pytest.mark.parametrize(
    "when", ["0001-01-01 00:00:00+05:00", "9999-12-31T23:59:59-05:00", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z"]
)
def test_a_lock_time_outside_what_a_build_could_have_is_one_line(project, emu, when):
    (project / "templates.lock").write_text(good_lock(built_at=when))
    for args in (["plan"], ["lock", "show"], ["resolve", "latest"], ["status"], ["rollback", "latest"]):
        line = assert_refused(project, emu, args, f"templates.{ALIAS}.built_at: ")
        assert "outside the times e2b-matrix records" in line


def test_a_history_time_outside_the_range_is_one_line(project, emu):
    text = good_lock() + (
        f'\n[[templates.{ALIAS}.history]]\nbuild_id = "{UUID}"\nfingerprint = "sha256:{"1" * 64}"\n'
        "built_at = 0001-01-01 00:00:00+05:00\n"
    )
    (project / "templates.lock").write_text(text)
    assert_refused(project, emu, ["lock", "show"], f"templates.{ALIAS}.history[0].built_at: ")


def test_the_edges_of_the_time_range_are_accepted():
    assert names.check_timestamp(dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).year == 1970
    latest = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert names.check_timestamp(latest) == latest
    ahead = dt.datetime(1970, 1, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    assert names.check_timestamp(ahead) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


NUMBER_VARS = sorted(name for name, var in settings.VARS.items() if var.parse.__qualname__.startswith("_number"))


@pytest.mark.parametrize("value", ["1100000", "1e999", "inf", "-inf", "nan", "9" * 5000, "-1", "1e308"])
@pytest.mark.parametrize("var", NUMBER_VARS)
def test_every_number_setting_is_bounded_where_it_is_read(project, emu, var, value):
    try:
        settings.VARS[var].parse(value)
    except ValueError:
        line = assert_refused(project, emu, ["plan"], f"{var}: ", env={var: value})
        assert len(line) < 300
    else:  # inside this variable's bounds: only values any bound must refuse are asserted refused
        assert value in ("1100000", "-1") and math.isfinite(float(value))


def test_the_retry_attempts_of_the_example_are_refused(project, emu):
    assert_refused(
        project,
        emu,
        ["build", "minimal"],
        "E2B_MATRIX_RETRY_ATTEMPTS: expected a number >= 1 and <= 100",
        env={"E2B_MATRIX_RETRY_ATTEMPTS": "1100"},
    )


@pytest.mark.parametrize("attempt", [1, 5, 64, 1025, 10**6])
def test_a_retry_delay_never_overflows(attempt):
    policy = RetryPolicy(attempts=100, base_s=3600.0, max_delay_s=3600.0, total_s=86400.0, rng=lambda: 1.0)
    delay = policy.delay(attempt)
    assert math.isfinite(delay) and 0 <= delay <= 3600.0


@pytest.mark.parametrize("domain", ["e2b.app:99999", "e2b.app:65536", "e2b.app:0", "e2b.app:00000"])
def test_a_domain_with_an_impossible_port_is_refused(project, emu, domain):
    assert_refused(project, emu, ["build", "minimal"], "E2B_DOMAIN: port ", env={"E2B_DOMAIN": domain})


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://[::1]:70000"])
def test_an_api_url_with_an_impossible_port_is_refused(project, emu, url):
    assert_refused(project, emu, ["build", "minimal"], "E2B_API_URL: ", env={"E2B_API_URL": url})


@pytest.mark.parametrize(
    "key,value",
    [
        ("memory_mb", str(2**31)),
        ("memory_mb", str(2**64)),
        ("cpu_count", str(2**70)),
        ("memory_mb", "inf"),
        ("cpu_count", "nan"),
    ],
)
def test_a_variant_number_past_what_e2b_reads_is_one_line(project, emu, key, value):
    write(project / "variants/x.toml", f'[variant]\nname = "x"\nalias = "x"\nlayers = ["base"]\n{key} = {value}\n')
    line = assert_refused(project, emu, ["plan"], f"variants/x.toml: variant.{key}: ")
    assert len(line) < 300


# ------------------------------------------------------------------ 5. output that stays one line


@pytest.fixture
def odd_project(tmp_path, project) -> Path:
    """The project in a folder whose name holds a newline, a tab and an escape sequence."""
    odd = tmp_path / "one\ntwo\t\x1b[2Jthree"
    odd.mkdir()
    for name in ("variants", "requirements"):
        os.rename(project / name, odd / name)
    return odd


@pytest.mark.parametrize(
    "args,setup",
    [
        (["plan"], lambda p: write(p / "variants/bad.toml", "[variant\n")),
        (["resolve", "latest"], lambda p: write(p / "templates.lock", "schema = \n")),
        (["lock", "show"], lambda p: write(p / "templates.lock", "\ufeffschema = 2\n")),
        (["build", "minimal"], lambda p: (p / ".e2b-matrix").write_text("a file where the state folder goes")),
        (["verify", "latest"], lambda p: None),
    ],
)
def test_an_error_about_a_path_with_a_newline_is_one_line(odd_project, emu, args, setup):
    setup(odd_project)
    before = snapshot(odd_project)
    r = run(odd_project, *args, env={"E2B_API_KEY": KEY})
    err = r.stderr.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(err) == 1 and err[0].startswith("e2b-matrix: error: "), r.stderr
    assert "\x1b" not in r.output and "\t" not in err[0]
    assert "two" not in err[0] or "one\\ntwo\\t\\x1b[2Jthree" in err[0]  # the folder, where named, escaped
    assert snapshot(odd_project) == before


def test_a_success_line_naming_a_path_with_a_newline_stays_one_line(odd_project, emu):
    assert run(odd_project, "build-all").exit_code == 0
    r = run(odd_project, "lock", "check")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("\n") == 1 and "one\\ntwo\\t\\x1b[2Jthree" in r.stdout


@pytest.mark.parametrize("where", ["templates.lock", "variants/latest.toml", "layers/l.toml"])
def test_a_byte_order_mark_is_named(project, emu, where):
    path = project / where
    if where.startswith("layers/"):
        write(path, '[layer]\nname = "l"\nversion = "1"\n')
    elif where == "templates.lock":
        path.write_text(good_lock())
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert_refused(project, emu, ["plan"], f"{where}: starts with a UTF-8 byte-order mark (an invisible U+FEFF)")


def test_a_byte_order_mark_in_the_e2b_config_is_named(project, emu, monkeypatch):
    monkeypatch.delenv("E2B_API_KEY")
    config = Path(os.environ["HOME"]) / ".e2b/config.json"
    write(config, "")
    config.write_bytes(b"\xef\xbb\xbf" + json.dumps({"teamApiKey": KEY}).encode())
    assert_refused(project, emu, ["build", "minimal"], f"{config}: starts with a UTF-8 byte-order mark")


def test_a_utf16_file_is_named_as_such(project, emu):
    (project / "templates.lock").write_bytes(good_lock().encode("utf-16"))
    assert_refused(project, emu, ["plan"], "templates.lock: starts with a UTF-16 byte-order mark (it is UTF-16")


def test_control_characters_from_e2b_never_reach_the_screen(project, emu):
    """A build's failure reason (text from elsewhere) is printed with its escape sequences escaped
    and its line breaks inside one line of the summary's error."""
    emu.configure(
        ALIAS.replace("latest", "minimal"), fail_at_step=1, fail_message="boom \x1b]0;title\x07\x1b[2J\x9b31m\rend"
    )
    for args in (["build", "minimal"], ["build", "minimal", "--json"], ["-v", "build", "minimal"]):
        r = run(project, *args)
        assert r.exit_code == 1, r.output
        for c in "\x1b\x07\x9b\r":
            assert c not in r.output, (args, c)
        assert "\\x1b[2J" in r.output or "\\u001b[2J" in r.output
    log = (project / "logs" / "build.log").read_text()
    assert "\x1b" not in log and "\\x1b[2J" in log


def test_printable_escapes_and_keeps_lines_when_asked():
    assert names.printable("a\nb\x1b[2J\x9b") == "a\\nb\\x1b[2J\\x9b"
    assert names.printable("a\nb\tc\rd", lines=True) == "a\nb\tc\\rd"
    assert names.printable("plain") == "plain"


# ------------------------------------------------------------------ 6. a full disk


def _file_size_limit(limit: int):
    """preexec_fn: files this process writes may grow to ``limit`` bytes, then every write fails
    with EFBIG, as writes fail with ENOSPC on a full disk (SIGXFSZ ignored: an error, not a kill)."""

    def apply() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_log_files_that_cannot_be_written_say_so_once_and_the_run_goes_on(project, emu):
    import subprocess
    import sys

    from e2b_matrix.lock import TemplateLock

    emu.configure("nexus-sandbox-minimal", log_lines=16000)
    emu.configure("nexus-sandbox-pinned", log_lines=16000)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "e2b_matrix", "-C", str(project), "build", "minimal", "pinned"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_file_size_limit(512 * 1024),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    warnings = [line for line in p.stderr.splitlines() if "cannot write the log file" in line]
    assert len(warnings) == 1, p.stderr
    assert "the run goes on without log files" in warnings[0]
    assert "Logging error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    lock = TemplateLock.load(project / "templates.lock")  # intact, and holding both builds
    assert {e.variant for e in lock} == {"minimal", "pinned"}


# ------------------------------------------------------------------ 8. a refused command writes nothing

LOOP = ["--set", "base.template=nexus-sandbox-minimal"]  # minimal built on itself: a loop of parents


@pytest.mark.parametrize(
    "args,expected",
    [
        (["build", "minimal", *LOOP], "variants are built on each other in a loop"),
        (["build-all", *LOOP], "variants are built on each other in a loop"),
        (["build", "minimal", *LOOP, "--verify", "--promote", "stable"], "variants are built on each other in a loop"),
    ],
)
def test_a_request_refused_for_a_loop_writes_nothing(project, emu, args, expected):
    """The example: the parent loop was refused after a requirements file, logs/ and the lock's lock
    file were written. Now the whole request is checked first."""
    for f in (project / "requirements").iterdir():  # a compile would be needed: it must not run
        f.unlink()
    assert_refused(project, emu, args, expected)
    assert not (project / "logs").exists() and not (project / ".e2b-matrix").exists()


def _refusals(project: Path) -> list[tuple[list[str], str, dict, object]]:
    """(args, what the line names, env, setup) for each command: one bad input of each kind it reads."""

    def lock(text):
        return lambda: (project / "templates.lock").write_text(text)

    def variant(text):
        return lambda: write(project / "variants/zz.toml", text)

    def nothing():
        return None

    return [
        (["list"], "variants/zz.toml: ", {}, variant("[variant]\nname = 1\n")),
        (["plan"], "variants/zz.toml: ", {}, variant("[variant\n")),
        (["plan", "--offline"], "E2B_MATRIX_RETRY_BASE_S", {"E2B_MATRIX_RETRY_BASE_S": "-1"}, nothing),
        (["render", "minimal", "--set", "nope"], "--set", {}, nothing),
        (["compile", "minimal", "-U", "-P", "x"], "--upgrade-package", {}, nothing),
        (["compile", "--check", "-U"], "--check", {}, nothing),
        (["build", "minimal"], "E2B_DOMAIN", {"E2B_DOMAIN": "e2b.app:70000"}, nothing),
        (["build", "minimal", "--jobs", "21"], "--jobs", {}, nothing),
        (["build", "minimal", "--promote", "Bad Tag"], "--promote", {}, nothing),
        (["build-all", "--set", "nexus.version=latest; rm -rf /"], "--set", {}, nothing),
        (
            ["build", "minimal", "--locked"],
            "--locked",
            {},
            lambda: [f.write_text("# cut\n") for f in (project / "requirements").glob("nexus-*.txt")],
        ),
        (["verify", "minimal"], "templates.lock: ", {}, lock(good_lock(built_at="0001-01-01 00:00:00+05:00"))),
        (["promote", "latest", "--channel", "Bad Tag"], "--channel", {}, lock(good_lock())),
        (["rollback", "latest"], f"templates.{ALIAS}.variant", {}, lock(good_lock(variant='"a b"'))),
        (["status"], "E2B_API_URL", {"E2B_API_URL": f"http://u:{PASSWORD}@h"}, nothing),
        (["lock", "check"], "templates.lock: starts with a UTF-8 byte-order mark", {}, lock("\ufeffschema = 2\n")),
        (["lock", "show"], "templates.lock: ", {}, lock("schema = 9\n")),
        (["diff", "latest", "nope"], "FROM: ", {}, lock(good_lock())),
        (["resolve", "nothing-like-it"], "templates.lock: no template", {}, lock(good_lock())),
    ]


def test_every_command_refused_for_bad_input_writes_nothing(project, emu):
    """One refusal per command and kind of input, each against a snapshot of the project that holds
    every file, folder and link (conftest.snapshot): no requirements file, no log, no lock file."""
    cases = _refusals(project)
    assert {c[0][0] for c in cases} >= {
        "list",
        "plan",
        "render",
        "compile",
        "build",
        "build-all",
        "verify",
        "promote",
        "rollback",
        "status",
        "lock",
        "diff",
        "resolve",
    }
    clean = snapshot(project)
    for args, expected, env, setup in cases:
        setup()
        assert_refused(project, emu, args, expected, env=env)
        for path in set(snapshot(project)) - set(clean):  # the case's own bad file goes
            p = project / path
            p.unlink() if p.is_file() else None
        for path, content in clean.items():
            if isinstance(content, bytes) and (project / path).read_bytes() != content:
                (project / path).write_bytes(content)
        (project / "templates.lock").unlink(missing_ok=True)
        assert snapshot(project) == clean


# ------------------------------------------------------------------ 7. acting on what no longer exists

GONE = "0f1c2d3e-0000-4000-8000-00000000dead"


def _lock_text(project: Path) -> str:
    return (project / "templates.lock").read_text()


def test_rollback_to_a_build_e2b_no_longer_has_changes_nothing(project, emu):
    assert run(project, "build", "minimal").exit_code == 0
    assert run(project, "build", "minimal", "--force", "--promote", "stable").exit_code == 0
    from e2b_matrix.lock import TemplateLock

    entry = TemplateLock.load(project / "templates.lock").entry("minimal")
    edited = _lock_text(project).replace(entry.history[0].build_id, GONE)  # an edited history
    (project / "templates.lock").write_text(edited)
    tags_before = emu.count("assign_tags")
    r = run(project, "rollback", "minimal")
    err = r.stderr.strip().splitlines()
    assert r.exit_code == 1 and len(err) == 1, r.output
    assert err[0] == (
        f"e2b-matrix: error: nexus-sandbox-minimal: build {GONE} is gone from E2B: cannot roll back "
        "to its previous build; nothing was changed"
    )
    assert _lock_text(project) == edited and emu.count("assign_tags") == tags_before
    assert not (project / "logs" / "build.log").exists() or "rollback" not in (project / "logs/build.log").read_text()


@pytest.mark.parametrize("command", [["promote", "minimal", "--channel", "stable"], ["promote", "minimal"]])
def test_promote_of_a_build_e2b_no_longer_has_changes_nothing(project, emu, command):
    assert run(project, "build", "minimal").exit_code == 0
    edited = _lock_text(project).replace(
        __import__("e2b_matrix.lock", fromlist=["x"])
        .TemplateLock.load(project / "templates.lock")
        .entry("minimal")
        .build_id,
        GONE,
    )
    (project / "templates.lock").write_text(edited)
    r = run(project, *command)
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == (
        f"e2b-matrix: error: nexus-sandbox-minimal: build {GONE} is gone from E2B: "
        f"{command[-1] if len(command) > 2 else 'default'} cannot point at it; "
        "nothing was changed"
    )
    assert _lock_text(project) == edited and emu.count("assign_tags") == 0


def test_promote_of_several_checks_every_target_before_moving_any(project, emu):
    assert run(project, "build", "minimal", "pinned").exit_code == 0
    from e2b_matrix.lock import TemplateLock

    pinned = TemplateLock.load(project / "templates.lock").entry("pinned")
    edited = _lock_text(project).replace(pinned.build_id, GONE)
    (project / "templates.lock").write_text(edited)
    r = run(project, "promote", "minimal", "pinned", "--channel", "stable")
    assert r.exit_code == 1 and "nexus-sandbox-pinned: build" in r.stderr
    assert _lock_text(project) == edited and emu.count("assign_tags") == 0


def test_a_build_that_failed_on_e2b_is_no_target_either(project, emu):
    assert run(project, "build", "minimal").exit_code == 0
    emu.configure("nexus-sandbox-minimal", fail_at_step=1)
    assert run(project, "build", "minimal", "--force").exit_code == 1  # its build ID never reached the lock
    failed = next(b.build_id for b in emu.builds if b.status == "error")
    from e2b_matrix.lock import TemplateLock

    current = TemplateLock.load(project / "templates.lock").entry("minimal").build_id
    (project / "templates.lock").write_text(_lock_text(project).replace(current, failed))
    r = run(project, "promote", "minimal")
    assert r.exit_code == 1 and f"build {failed} is error on E2B, not ready" in r.stderr


# ------------------------------------------------------------------ 9. found by reading the code


@pytest.mark.parametrize(
    "status,message,drift",
    [
        (400, "logsOffset and limit must be integers", False),  # another 400: not "gone"
        (404, "Not found", False),  # another 404: not "gone"
        (400, f"Build '{GONE}' not found", True),  # E2B's own words: gone
    ],
)
def test_only_e2bs_own_not_found_is_gone(project, emu, status, message, drift):
    assert run(project, "build", "minimal").exit_code == 0
    emu.inject("status", status, body={"code": status, "message": message})
    r = run(project, "status", "minimal", "--json")
    assert r.exit_code == 1
    if drift:
        assert json.loads(r.stdout)[0]["state"] == "gone"
    else:  # an error says what E2B said; no false drift is reported
        assert r.stdout == "" and r.stderr.strip() == f"e2b-matrix: error: {status}: {message}"


def test_a_template_gone_is_gone_and_another_404_is_not(project, emu):
    assert run(project, "build", "minimal").exit_code == 0
    emu.inject("get_tags", 404, body={"code": 404, "message": "no such route"})
    r = run(project, "status", "minimal")
    assert r.exit_code == 1 and r.stderr.strip() == "e2b-matrix: error: 404: no such route"


@pytest.mark.parametrize(
    "exc,transient",
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (OSError(__import__("errno").ENETUNREACH, "Network is unreachable"), True),
        (FileNotFoundError(2, "No such file or directory", "/tmp/x/requirements.txt"), False),
        (PermissionError(13, "Permission denied"), False),
        (OSError(__import__("errno").ENOSPC, "No space left on device"), False),
        (IsADirectoryError(21, "Is a directory"), False),
    ],
)
def test_only_network_errors_are_retried(exc, transient):
    from e2b_matrix.backends.e2b_sdk import classify
    from e2b_matrix.errors import BuildError, TransientError

    with pytest.raises(TransientError if transient else BuildError) as info, classify():
        raise exc
    assert type(info.value) is (TransientError if transient else BuildError)


def test_a_refused_key_at_verify_stops_the_run_once(project, emu):
    """A 401 when the sandbox is created is the key, not the build: one stop, not a failed check per variant."""
    assert run(project, "build", "minimal", "pinned").exit_code == 0
    emu.inject("create_sandbox", 401, count=20)
    r = run(project, "verify", "minimal")
    assert r.exit_code == 2 and r.stderr.strip().startswith("e2b-matrix: error: E2B refused the API key (401)")
    assert "FAILED" not in r.stdout
    r = run(project, "build", "minimal", "pinned", "--force", "--verify", "--json")
    assert r.exit_code == 2, r.output
    assert "E2B refused the API key" in r.stderr and "no sandbox" not in r.output
    assert emu.count("create_sandbox") < 20


def test_a_worker_whose_log_cannot_be_made_reaches_the_loop(tmp_path):
    """With logs=None (a library call) a worker once failed before its try, its exception lost in the
    future, and the run never ended. It ends now, each variant with its result."""
    import threading

    import fake_backend
    from e2b_matrix.model import State
    from e2b_matrix.runner import Job, Scheduler
    from test_runner import spec

    class Backend(fake_backend.FakeBackend):
        def __init__(self):
            super().__init__(None)

        def shares_in_flight(self):
            return True

    (tmp_path / "state" / "locks").mkdir(parents=True)
    scheduler = Scheduler(
        backend=Backend(), lock_path=tmp_path / "templates.lock", state_dir=tmp_path / "state", logs=None, jobs=2
    )
    out: list = []
    t = threading.Thread(
        target=lambda: out.append(
            scheduler.run([Job(spec("a", ["x"]), None, False), Job(spec("b", ["y"]), None, False)]).results
        )
    )
    t.start()
    t.join(60)
    assert not t.is_alive(), "the run never ended"
    assert [r.status for r in out[0]] == [State.BUILT, State.BUILT]


class FakeTime:
    """One clock for the backend's waits and the emulator's builds: waiting moves it, nothing sleeps."""

    def __init__(self):
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def wait(self, event, timeout: float) -> bool:
        self.t += timeout
        return event.is_set()


def test_status_polls_back_off_as_a_build_ages(project, monkeypatch):
    """A three-minute build asked 900 times (every 0.2 s); now 0.2 s while young, then up to 2 s."""
    import threading

    from e2b_matrix import workflow
    from e2b_matrix.backends.e2b import E2BBackend
    from e2b_matrix.emulator import E2BEmulator
    from e2b_matrix.settings import Settings

    fake = FakeTime()
    with E2BEmulator(api_key=KEY, clock=fake.now, default_duration=180.0) as emu:
        for k, v in emu.env().items():
            monkeypatch.setenv(k, v)
        session = workflow.Session.open(workflow.Options(root=project, names=("minimal",)))
        spec = workflow.planned(session)[2][0].spec
        lines: list[str] = []
        outcome = E2BBackend(Settings.from_env(), clock=fake).build(
            spec, force=False, log=lines.extend, cancel=threading.Event()
        )
        polls = emu.count("status")
    assert outcome.build_id and any("line 5/5" in line for line in lines)
    assert 120 <= polls <= 160, polls  # 50 in the first 10 s, then growing to one every 2 s (900 before)


def test_a_status_retry_waits_on_the_backends_clock(project, monkeypatch):
    """A blip while polling is retried after the policy's backoff, waited on the backend's clock (the
    fake one here: it moves, nothing sleeps), as every other wait of the backend."""
    import threading

    from e2b_matrix import workflow
    from e2b_matrix.backends.e2b import E2BBackend
    from e2b_matrix.emulator import E2BEmulator
    from e2b_matrix.settings import Settings

    fake = FakeTime()
    monkeypatch.setenv("E2B_MATRIX_RETRY_BASE_S", "100")
    monkeypatch.setenv("E2B_MATRIX_RETRY_MAX_DELAY_S", "100")
    with E2BEmulator(api_key=KEY, clock=fake.now, default_duration=5.0) as emu:
        for k, v in emu.env().items():
            monkeypatch.setenv(k, v)
        session = workflow.Session.open(workflow.Options(root=project, names=("minimal",)))
        spec = workflow.planned(session)[2][0].spec
        emu.inject("status", status=500, count=1)
        lines: list[str] = []
        started = fake.t
        outcome = E2BBackend(Settings.from_env(), clock=fake).build(
            spec, force=False, log=lines.extend, cancel=threading.Event()
        )
        assert emu.pending_faults == 0 and emu.count("request_build") == 1
    assert outcome.build_id and any(line.startswith("status check failed") for line in lines)
    assert fake.t - started >= 50  # the backoff (100 s, half of it at least: full jitter) went by on the clock


def test_the_poll_schedule():
    from e2b_matrix.backends.e2b import poll_delay

    assert [poll_delay(a) for a in (0, 5, 9.9)] == [0.2, 0.2, 0.2]
    assert poll_delay(10) == pytest.approx(0.2) and poll_delay(20) == pytest.approx(1.2)
    assert [poll_delay(a) for a in (28, 60, 3600)] == [2.0, 2.0, 2.0]
    assert poll_delay(100, first=0.05) == 2.0 and poll_delay(1, first=0.05) == 0.05


def test_every_import_of_src_is_a_declared_dependency():
    """rich and httpx were imported but not declared (they came with e2b)."""
    import ast
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    optional = {canonicalize_name(Requirement(r).name) for rs in project["optional-dependencies"].values() for r in rs}
    dists = packages_distributions()
    imported = set()
    # kernel_driver.py runs inside a sandbox's container (its Python, its jupyter-client), never here
    shipped = [p for p in (ROOT / "src" / "e2b_matrix").rglob("*.py") if p.name != "kernel_driver.py"]
    for path in shipped:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else []
            )
            imported |= {n.split(".")[0] for n in names}
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "e2b_matrix"}
    for module in sorted(third_party):
        owners = {canonicalize_name(d) for d in dists.get(module, [module])}
        assert owners & (declared | optional), f"{module} is imported by src/ but no dependency declares it"
    assert {"rich", "httpx"} <= {canonicalize_name(d) for m in third_party for d in dists.get(m, [])} & declared


class FakeEngine:
    """The docker CLI as the Docker backend asks it: images by tag and by ID; ``down`` makes every
    call fail as a daemon that does not answer does."""

    def __init__(self):
        self.images: dict[str, str] = {}  # tag -> image ID
        self.down = False

    def image_id(self, ref: str) -> str:
        from e2b_matrix.backends.docker_engine import DockerError, DockerNotFound

        if self.down:
            raise DockerError(
                "`docker image inspect` failed (exit 1)",
                output="Cannot connect to the Docker daemon at unix:///var/run/docker.sock.",
            )
        if ref in self.images.values():
            return ref
        if ref not in self.images:
            raise DockerNotFound(f"no image {ref!r}", output=f"Error: No such image: {ref}")
        return self.images[ref]

    def tag_image(self, source: str, target: str) -> None:
        self.images[target] = self.image_id(source)


def _docker_backend(engine: FakeEngine):
    from e2b_matrix.backends.docker import DockerBackend
    from e2b_matrix.settings import Settings

    backend = DockerBackend(Settings.from_env())
    backend._engine = engine
    return backend


def _docker_entry(**changes):
    from e2b_matrix.lock.model import Build, LockEntry

    at = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    fields = {
        "alias": "a",
        "variant": "a",
        "template_id": "sha256:new",
        "build_id": "b2",
        "fingerprint": "sha256:" + "1" * 64,
        "layers": {"base": "1"},
        "built_at": at,
        "image": "e2b-matrix/a:b2",
        "channels": {"stable": "b2"},
        "history": [Build("b1", "sha256:" + "1" * 64, at, {"base": "1"}, "e2b-matrix/a:b1", "sha256:old")],
    }
    return LockEntry(**{**fields, **changes})


def test_docker_channels_move_to_the_image_the_lock_records_not_to_a_moved_tag():
    """After a --force rebuild of the same spec the fingerprint tag moved; rollback and promote act on
    the image each build recorded (its ID), whatever a tag says now."""
    engine = FakeEngine()
    engine.images = {"e2b-matrix/a:b1": "sha256:old", "e2b-matrix/a:b2": "sha256:new"}
    backend, entry = _docker_backend(engine), _docker_entry()
    assert backend.gone(entry, "b1") is None and backend.gone(entry, "b2") is None
    backend.point(entry, "stable", "b1")  # rollback moving stable back
    assert engine.images["e2b-matrix/a:stable"] == "sha256:old"
    engine.images["e2b-matrix/a:b1"] = "sha256:new"  # a tag moved by something else: the build's image is gone
    assert backend.gone(entry, "b1") == "image e2b-matrix/a:b1 of build b1 is gone"


def test_each_docker_build_has_a_tag_of_its_own():
    from e2b_matrix.backends.docker import image_tag

    class Spec:
        alias = "a"

    assert image_tag(Spec(), "0f1c2d3e4f5a6b7c") == "e2b-matrix/a:0f1c2d3e4f5a6b7c"


def test_a_docker_daemon_that_does_not_answer_is_not_an_image_gone():
    from e2b_matrix.errors import ConfigError

    engine = FakeEngine()
    engine.images = {"e2b-matrix/a:b2": "sha256:new"}
    backend, entry = _docker_backend(engine), _docker_entry()
    assert backend.staleness(entry) is None
    engine.down = True
    with pytest.raises(ConfigError, match="cannot ask the Docker daemon about image e2b-matrix/a:b2: "):
        backend.staleness(entry)
    with pytest.raises(ConfigError, match="cannot ask the Docker daemon"):
        backend.channels(entry)
    engine.down = False
    del engine.images["e2b-matrix/a:b2"]
    assert backend.staleness(entry) == "image e2b-matrix/a:b2 of build b2 is gone"


def test_a_slow_tag_request_holds_up_no_reader_and_no_writer_of_the_lock(project, emu, monkeypatch):
    """promote moves the channel on E2B, then records it: while E2B is slow to answer, the lock's
    flock is free, so `resolve` and another writer go on."""
    import subprocess
    import sys
    import threading

    from e2b_matrix import release, workflow
    from e2b_matrix.backends.e2b import E2BBackend
    from e2b_matrix.lock import TemplateLock, store

    assert run(project, "build", "minimal", "pinned").exit_code == 0
    entered, answer = threading.Event(), threading.Event()
    real_point = E2BBackend.point

    def slow_point(self, entry, channel, build_id):
        entered.set()
        assert answer.wait(60)
        real_point(self, entry, channel, build_id)

    monkeypatch.setattr(E2BBackend, "point", slow_point)
    session = workflow.Session.open(workflow.Options(root=project))
    promoted: list = []
    t = threading.Thread(target=lambda: promoted.append(release.promote(session, ["minimal"], "stable")))
    t.start()
    try:
        assert entered.wait(60)
        p = subprocess.run(
            [sys.executable, "-m", "e2b_matrix", "-C", str(project), "resolve", "pinned"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0 and p.stdout.startswith("nexus-sandbox-pinned:")
        wrote = threading.Event()
        writer = threading.Thread(
            target=lambda: (
                store.update(
                    project / "templates.lock",
                    lambda e: {**e, "nexus-sandbox-pinned": e["nexus-sandbox-pinned"].promoted("edge")},
                ),
                wrote.set(),
            )
        )
        writer.start()
        assert wrote.wait(30), "a lock writer waited on E2B"
        assert t.is_alive()  # the tag request still has no answer
    finally:
        answer.set()
        t.join(60)
    lock = TemplateLock.load(project / "templates.lock")
    assert lock.entry("minimal").channels["stable"] == lock.entry("minimal").build_id
    assert "edge" in lock.entry("pinned").channels  # both writes landed
