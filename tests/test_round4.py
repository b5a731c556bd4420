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

from conftest import KEY, cli_runner, snapshot, write
from e2b_matrix import names, secrets, settings
from e2b_matrix.cli import cli
from e2b_matrix.retry import RetryPolicy
from test_reliability import assert_refused
from test_trust import ALIAS, UUID, good_lock

PASSWORD = "hunter2pw0rd"


def run(project: Path, *args: str, env=None):
    return cli_runner().invoke(cli, ["-C", str(project), *args], env=env)


# ------------------------------------------------------------------ 1. a secret inside a URL

URL_VARS = sorted(name for name, var in settings.VARS.items()
                  if var.parse in (names.check_url, names.check_http_url))
CREDENTIAL_URLS = [f"http://user:{PASSWORD}@127.0.0.1:9", f"https://:{PASSWORD}@api.example.com",
                   f"http://user:{PASSWORD}%40x@127.0.0.1", "http://ghp0123456789abcdefghij@127.0.0.1"]


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


@pytest.mark.parametrize("text", [
    f'[[steps]]\nrun = "pip install --index-url https://u:{PASSWORD}@idx.example/simple x"\n',
    f'[[steps]]\nenv = {{ PIP_INDEX_URL = "https://u:{PASSWORD}@idx.example/simple" }}\n',
    f'[[checks]]\nname = "c"\ncommand = "curl https://u:{PASSWORD}@example.com"\n',
])
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
    emu.configure(ALIAS.replace("latest", "minimal"), fail_at_step=1,
                  fail_message=f"cannot fetch https://deploy:{PASSWORD}@registry.example/x")
    r = run(project, "-v", "build", "minimal")
    assert r.exit_code == 1
    assert "https://deploy:***@registry.example/x" in r.output and PASSWORD not in r.output
    assert PASSWORD.encode() not in b"".join(snapshot(project).values())


@pytest.mark.parametrize("text,masked", [
    (f"http://user:{PASSWORD}@host/x", "http://user:***@host/x"),
    (f"git+https://x-access-token:{PASSWORD}@github.com/o/r", "git+https://x-access-token:***@github.com/o/r"),
    ("https://ghp0123456789abcdefghij@github.com/o/r", "https://***@github.com/o/r"),
    ("ssh://git@github.com/o/r", "ssh://git@github.com/o/r"),                   # a user name, no secret
    ("fake://nexus-sandbox-latest@0f1c2d3e4f5a6b7c", "fake://nexus-sandbox-latest@0f1c2d3e4f5a6b7c"),
])
def test_the_redactor_masks_url_credentials_and_looks_secret_agrees(text, masked):
    assert secrets.Redactor().redact(text) == masked
    assert secrets.looks_secret("value", text) == (masked != text)


# ------------------------------------------------------------------ 4. numbers at their edges

@pytest.mark.parametrize("when", ["0001-01-01 00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                                  "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z"])
def test_a_lock_time_outside_what_a_build_could_have_is_one_line(project, emu, when):
    (project / "templates.lock").write_text(good_lock(built_at=when))
    for args in (["plan"], ["lock", "show"], ["resolve", "latest"], ["status"], ["rollback", "latest"]):
        line = assert_refused(project, emu, args, f"templates.{ALIAS}.built_at: ")
        assert "outside the times e2b-matrix records" in line


def test_a_history_time_outside_the_range_is_one_line(project, emu):
    text = good_lock() + (f'\n[[templates.{ALIAS}.history]]\nbuild_id = "{UUID}"\nfingerprint = "sha256:{"1" * 64}"\n'
                          'built_at = 0001-01-01 00:00:00+05:00\n')
    (project / "templates.lock").write_text(text)
    assert_refused(project, emu, ["lock", "show"], f"templates.{ALIAS}.history[0].built_at: ")


def test_the_edges_of_the_time_range_are_accepted():
    assert names.check_timestamp(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)).year == 1970
    latest = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
    assert names.check_timestamp(latest) == latest
    ahead = dt.datetime(1970, 1, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    assert names.check_timestamp(ahead) == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


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
    assert_refused(project, emu, ["build", "minimal"], "E2B_MATRIX_RETRY_ATTEMPTS: expected a number >= 1 and <= 100",
                   env={"E2B_MATRIX_RETRY_ATTEMPTS": "1100"})


@pytest.mark.parametrize("attempt", [1, 5, 64, 1025, 10**6])
def test_a_retry_delay_never_overflows(attempt):
    policy = RetryPolicy(attempts=100, base_s=3600.0, max_delay_s=3600.0, total_s=86400.0)
    delay = policy.delay(attempt, None, rng=lambda: 1.0)
    assert math.isfinite(delay) and 0 <= delay <= 3600.0


@pytest.mark.parametrize("domain", ["e2b.app:99999", "e2b.app:65536", "e2b.app:0", "e2b.app:00000"])
def test_a_domain_with_an_impossible_port_is_refused(project, emu, domain):
    assert_refused(project, emu, ["build", "minimal"], "E2B_DOMAIN: port ", env={"E2B_DOMAIN": domain})


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://[::1]:70000"])
def test_an_api_url_with_an_impossible_port_is_refused(project, emu, url):
    assert_refused(project, emu, ["build", "minimal"], "E2B_API_URL: ", env={"E2B_API_URL": url})


@pytest.mark.parametrize("key,value", [("memory_mb", str(2**31)), ("memory_mb", str(2**64)), ("cpu_count", str(2**70)),
                                       ("memory_mb", "inf"), ("cpu_count", "nan")])
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


@pytest.mark.parametrize("args,setup", [
    (["plan"], lambda p: write(p / "variants/bad.toml", "[variant\n")),
    (["resolve", "latest"], lambda p: write(p / "templates.lock", "schema = \n")),
    (["lock", "show"], lambda p: write(p / "templates.lock", "\ufeffschema = 2\n")),
    (["build", "minimal"], lambda p: (p / ".e2b-matrix").write_text("a file where the state folder goes")),
    (["verify", "latest"], lambda p: None),
])
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
    emu.configure(ALIAS.replace("latest", "minimal"), fail_at_step=1,
                  fail_message="boom \x1b]0;title\x07\x1b[2J\x9b31m\rend")
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

    emu.configure("nexus-sandbox-minimal", log_lines=20000)
    emu.configure("nexus-sandbox-pinned", log_lines=20000)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run([sys.executable, "-m", "e2b_matrix", "-C", str(project), "build", "minimal", "pinned"],
                       env=env, capture_output=True, text=True, timeout=120, preexec_fn=_file_size_limit(512 * 1024))
    assert p.returncode == 0, p.stdout + p.stderr
    warnings = [line for line in p.stderr.splitlines() if "cannot write the log file" in line]
    assert len(warnings) == 1, p.stderr
    assert "the run goes on without log files" in warnings[0]
    assert "Logging error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    lock = TemplateLock.load(project / "templates.lock")  # intact, and holding both builds
    assert {e.variant for e in lock} == {"minimal", "pinned"}
