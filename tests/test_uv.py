"""uv is a child process (index.py): its options are checked, its answer is checked before anything
is written, and it is stopped, its folder removed, on every signal.

Fake uv executables (tests/fake_uv.py) are found through E2B_MATRIX_UV, as the product finds its uv.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import fake_uv
from conftest import ROOT, one_line_error, run, sigint_default, snapshot
from e2b_matrix import pins
from e2b_matrix.settings import Settings
from test_reliability import assert_refused


@pytest.fixture
def bare(tmp_path) -> Path:
    """The shipped variants without any requirements file."""
    shutil.copytree(ROOT / "variants", tmp_path / "variants")
    return tmp_path


@pytest.fixture
def recorded(tmp_path_factory, monkeypatch) -> Path:
    """The real uv behind a recording one (E2B_MATRIX_UV): the log of every command line it ran."""
    exe, log = fake_uv.recording(tmp_path_factory.mktemp("fake-uv"))
    monkeypatch.setenv("E2B_MATRIX_UV", str(exe))
    return log


# -- E2B_MATRIX_UV_ARGS: options and their values, nothing else --------------------------

BAD_UV_ARGS = [
    (
        "/tmp/extra-requirements.txt",
        "'/tmp/extra-requirements.txt' is not an option, and uv would read it as one more requirements file",
    ),
    ("extra", "'extra' is not an option"),
    ("--exclude-newer 2026-01-01 constraints.txt", "'constraints.txt' is not an option"),
    ("--no-index ./extra.txt", "'./extra.txt' is not an option"),  # a flag takes no value: a path after it is one
    ("-", "'-' is not an option"),  # uv's stdin
    ("-r extra.txt", "-r is set by e2b-matrix itself"),
    ("--requirement=extra.txt", "--requirement is set by e2b-matrix itself"),
    ("--no-deps", "--no-deps is set by e2b-matrix itself"),
    ("--offline", "--offline is set by e2b-matrix itself"),
    ("--python-version=3.9", "--python-version is set by e2b-matrix itself"),
    ("--index-url", "--index-url needs a value"),  # a value missing at the end
    ("--index-url --no-index", "--index-url needs a value"),
    ("--find-links=", "--find-links needs a value"),
    ("--no-index=yes", "--no-index takes no value"),
    ("--directory /tmp", "'--directory' is not one of the index, resolver and cache options"),
    ("--emit-index-url", "'--emit-index-url' is not one of the index, resolver and cache options"),
    ("-ihttp://127.0.0.1:9/simple", "'-ihttp://127.0.0.1:9/simple' is not one of the index"),
    ("--find-links 'unterminated", "cannot split it into words"),
]


@pytest.mark.parametrize("value,expected", BAD_UV_ARGS, ids=[v for v, _ in BAD_UV_ARGS])
def test_uv_args_are_options_only(project, emu, recorded, value, expected):
    """Refused when the settings are read: exit 2, one line naming the variable, before anything runs."""
    for command in (["plan"], ["compile"], ["build-all"], ["list"]):
        line = assert_refused(
            project,
            emu,
            command,
            f"e2b-matrix: error: E2B_MATRIX_UV_ARGS: {expected}",
            env={"E2B_MATRIX_UV_ARGS": value},
        )
        assert line.count("E2B_MATRIX_UV_ARGS") == 1
    assert fake_uv.calls(recorded) == []  # uv never ran


def test_a_bare_url_is_refused_without_what_it_carries(project, emu):
    line = assert_refused(
        project, emu, ["plan"], "is not an option", env={"E2B_MATRIX_UV_ARGS": "https://user:s3cret@127.0.0.1:9/simple"}
    )
    assert "s3cret" not in line and "user" not in line


def test_index_resolver_and_cache_options_pass(wheels):
    words = (
        "--index-url",
        "file:///x/simple",
        "--extra-index-url=http://127.0.0.1:9/simple",
        "-f",
        "/wheels",
        "--no-index",
        "--exclude-newer",
        "2026-01-01T00:00:00Z",
        "--prerelease=allow",
        "-qq",
        "-v",
        "--no-cache",
        "--cache-dir",
        "/tmp/c",
        "--keyring-provider",
        "subprocess",
        "-C",
        "k=v",
        "--no-build",
    )
    env = {"E2B_MATRIX_UV_ARGS": " ".join(words)}
    assert Settings.from_env(env).uv_args == words


def test_a_bad_uv_binary_is_one_line_naming_it(project, emu, tmp_path):
    assert_refused(
        project, emu, ["plan"], "E2B_MATRIX_UV: contains a control character", env={"E2B_MATRIX_UV": "uv\x01"}
    )
    missing = tmp_path / "no-such-uv"
    one_line_error(
        run(project, "plan", env={"E2B_MATRIX_UV": str(missing)}),
        2,
        "E2B_MATRIX_UV: cannot run uv: No such file or directory",
    )


# -- uv's answer, checked before it is written -------------------------------------------


def fake_compile(folder: Path, body: str) -> Path:
    """A uv that answers "latest" as the real one does and compiles by running ``body``."""
    return fake_uv.script(
        folder,
        f"""
if "--generate-hashes" not in sys.argv:
    os.execv({fake_uv.REAL!r}, [{fake_uv.REAL!r}] + sys.argv[1:])
{body}""",
    )


FUSEPY = "fusepy==3.0.1 \\\n    --hash=sha256:" + "0" * 64 + "\n"
BAD_ANSWERS = [
    ("sys.exit(0)", "uv exited 0 but wrote no answer"),
    ("open('requirements.txt', 'w').write('x' * (5 * 1024 * 1024))", "uv's answer is larger than"),
    ("open('requirements.txt', 'wb').write(b'\\xff\\xfe')", "uv's answer is not UTF-8 text"),
    ("os.mkfifo('requirements.txt')", "uv's answer is a FIFO, not a regular file"),
    ("os.symlink('/etc/hostname', 'requirements.txt')", "uv's answer is a symbolic link"),
    ("open('requirements.txt', 'w').write('not a requirement\\n')", "uv's answer line 6: 'not' is not a pinned"),
    ("open('requirements.txt', 'w').write('fusepy==3.0.1\\n')", "uv's answer line 6: fusepy has no hash"),
    (
        f"open('requirements.txt', 'w').write({FUSEPY!r}.replace('fusepy', 'other'))",
        "uv's answer does not pin fusepy, which the step asks for",
    ),
    (
        "sys.stderr.write('error: the index went away\\n' * 200000); sys.exit(2)",
        "requirements/fuse-72a5665cc83f.txt: the index went away the index went away",
    ),
]


@pytest.mark.parametrize("body,expected", BAD_ANSWERS, ids=[e.split(": ", 1)[-1][:30] for _, e in BAD_ANSWERS])
def test_uvs_answer_is_checked_before_it_is_written(bare, tmp_path_factory, monkeypatch, body, expected):
    monkeypatch.setenv("E2B_MATRIX_UV", str(fake_compile(tmp_path_factory.mktemp("fake-uv"), body)))
    line = one_line_error(run(bare, "compile", "latest"), 1, "requirements/fuse-72a5665cc83f.txt: ", expected)
    assert len(line) < 1000
    assert not (bare / "requirements").exists() or list((bare / "requirements").iterdir()) == []
    log = bare / "logs" / "build.log"
    assert log.stat().st_size < 2 * 1024 * 1024  # uv's output, at most its last 256 KiB, is in the run log


def test_an_answer_left_as_the_seed_is_no_answer(project, tmp_path_factory, monkeypatch):
    """A file is upgraded from itself (the seed): a uv that exits 0 without writing gave no answer."""
    monkeypatch.setenv("E2B_MATRIX_UV", str(fake_compile(tmp_path_factory.mktemp("fake-uv"), "sys.exit(0)")))
    before = snapshot(project)
    one_line_error(run(project, "compile", "pinned", "-P", "fusepy"), 1, "uv exited 0 but wrote no answer")
    assert {k: v for k, v in snapshot(project).items() if k != "logs" and not k.startswith("logs/")} == before


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("", "it pins nothing"),
        ("nexus-ai-fs==0.9.26\ntinydep==1.0\n", "it pins nexus-ai-fs, tinydep"),
        ("nexus-ai-fs>=0.9\n", "line 1: 'nexus-ai-fs>=0.9' is not a pinned requirement"),
    ],
)
def test_an_answer_to_latest_is_one_pin(project, emu, tmp_path_factory, monkeypatch, answer, expected):
    exe = fake_uv.script(tmp_path_factory.mktemp("fake-uv"), f"open('requirements.txt', 'w').write({answer!r})")
    monkeypatch.setenv("E2B_MATRIX_UV", str(exe))
    said = "params.nexus.version: uv cannot say the newest nexus-ai-fs for Python 3.13: uv's answer to nexus-ai-fs"
    assert_refused(project, emu, ["plan"], f"{said} is not one pin of nexus-ai-fs: {expected}")


# -- uv stopped on every signal ------------------------------------------------------------


def announced(fifo: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    """What the fake uv writes into ``fifo`` when it starts (its pid and folder); waits on the FIFO."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader now: the fake's open for writing goes through
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"uv never started: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}"
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_during_compile_stops_uv_and_removes_its_folder(bare, tmp_path_factory, sig):
    scratch = tmp_path_factory.mktemp("scratch")
    tmpdir, fifo = scratch / "tmp", scratch / "started"
    tmpdir.mkdir()
    os.mkfifo(fifo)
    exe = fake_compile(
        scratch,
        f"""
import signal
with open({str(fifo)!r}, "w") as f:
    f.write(f"{{os.getpid()}} {{os.getcwd()}}")
signal.pause()  # resolving, for ever""",
    )
    env = {**os.environ, "E2B_MATRIX_UV": str(exe), "TMPDIR": str(tmpdir)}
    p = subprocess.Popen(
        [sys.executable, "-m", "e2b_matrix", "-C", str(bare), "compile", "latest"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    uv = None
    try:
        pid, folder = announced(fifo, p).split(" ", 1)
        uv = int(pid)
        assert Path(folder).parent == tmpdir and Path(folder).name.startswith("e2b-matrix-compile-")
        p.send_signal(sig)
        _out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        left_running = uv is not None and running(uv)
        if left_running:  # the failure this test finds: do not leave it behind
            os.kill(uv, signal.SIGKILL)
    assert not left_running, "uv still runs: stopped and reaped before e2b-matrix exits"
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == "e2b-matrix: interrupted" and "Traceback" not in err
    assert list(tmpdir.iterdir()) == []  # no e2b-matrix-compile-* folder left
    assert not (bare / "requirements").exists() or list((bare / "requirements").iterdir()) == []


def test_compile_in_a_thread_runs_uv_without_touching_signals(bare):
    """Only the main thread may set signal handlers: elsewhere (a library caller's thread) uv runs as is."""
    import threading

    from e2b_matrix import workflow

    before = signal.getsignal(signal.SIGTERM)
    got = []

    def compile_latest():
        session = workflow.Session.open(workflow.Options(root=bare, names=("latest",)))
        got.append(workflow.compile_requirements(session)[1])

    t = threading.Thread(target=compile_latest)
    t.start()
    t.join(120)
    assert [c.status for c in got[0]] == ["written", "written"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_signal_handlers_are_put_back_after_uv(bare):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert run(bare, "compile", "latest").exit_code == 0
    assert {s: signal.getsignal(s) for s in before} == before
    for path in (bare / "requirements").iterdir():  # and what uv answered is whole
        assert pins.unsealed(path.read_bytes()) == ""


def test_offline_passes_offline_to_uv(project, recorded):
    """The CLI's --offline is uv's: every question asked of uv carries it (and is answered here: the
    tests' index is a file:// one, which needs no network)."""
    assert run(project, "plan", "--offline").exit_code == 0
    assert run(project, "plan").exit_code == 0
    offline, online = fake_uv.calls(recorded)[:2], fake_uv.calls(recorded)[2:]
    assert len(offline) == len(online) == 2  # "latest" and 0.5.6 for Python 3.13, each once
    assert all("--offline" in c for c in offline) and not any("--offline" in c for c in online)
