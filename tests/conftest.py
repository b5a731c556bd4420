"""Shared fixtures: an isolated project directory and a local package index that uv reads."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner

TESTS = Path(__file__).parent
ROOT = TESTS.parent
DATA = TESTS / "data"
sys.path.insert(0, str(TESTS))  # the emulator and helpers are plain modules here


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> Path:
    """The tests' package index: tiny wheels of what the shipped layers' pip steps ask for, and a
    simple index of them (tests/wheelhouse.py)."""
    from wheelhouse import shipped

    return shipped(tmp_path_factory.mktemp("wheels"))


def uv_args(folder: Path) -> str:
    """E2B_MATRIX_UV_ARGS that make uv answer from ``folder`` only, no network: its simple index when
    it has one (wheelhouse.simple), else the folder of wheels itself (--find-links)."""
    import shlex

    from wheelhouse import index_url

    if (folder / "simple").is_dir():
        return f"--index-url {shlex.quote(index_url(folder))}"
    return f"--no-index --find-links {shlex.quote(str(folder))}"


# For the end-to-end builds: uv resolves from the real index (pip inside the image installs what it
# pinned), as the index stood on a fixed day. The same pins every run (so Docker's layer cache holds),
# and nothing a registry's page may not show yet: one CI run's pip in the image saw xlsxwriter only up
# to 3.3.1 while uv on the host, a minute before, had pinned 3.3.4 (released two weeks earlier).
REAL_INDEX = {"E2B_MATRIX_UV_ARGS": "--exclude-newer 2026-11-01T00:00:00Z"}


@pytest.fixture(autouse=True)
def isolated_env(request, monkeypatch, tmp_path_factory, wheels):
    """No test touches the network, the user's cache or real credentials (uv answers from ``wheels``),
    nor, unless it is marked ``docker``, this machine's Docker daemon: the images an earlier ``make e2e``
    left there (the shipped aliases) are no test's business."""
    if request.node.get_closest_marker("docker") is None:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path_factory.getbasetemp()}/no-docker.sock")
    monkeypatch.setenv("E2B_MATRIX_UV_ARGS", uv_args(wheels))
    for var in ("E2B_MATRIX_UV", *(v for v in os.environ if v.startswith("UV_"))):  # uv's own settings
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for var in ("E2B_API_KEY", "E2B_TEMPLATE_ID", "E2B_MATRIX_LOCK", "E2B_DOMAIN", "E2B_API_URL"):
        monkeypatch.delenv(var, raising=False)


KEY = "e2b_" + "c4n4ry" * 6  # a canary: must appear nowhere we write
FP = "sha256:" + "0" * 64  # a well-formed fingerprint, for lock files written by hand


def fp(seed) -> str:
    """A well-formed fingerprint made from anything (distinct seeds, distinct fingerprints)."""
    import hashlib

    return "sha256:" + hashlib.sha256(str(seed).encode()).hexdigest()


T = TypeVar("T")
WAIT_S = 20.0  # how long wait_for looks before it fails the test (never reached when the code is right)
_NEVER = threading.Event()  # never set: wait_for's pause between two looks


def wait_for(condition: Callable[[], T], *, what: str | Callable[[], str], timeout: float = WAIT_S) -> T:
    """Look at ``condition`` until it returns something true, and return that; fail the test with
    ``what`` (a text, or a function that makes one then, e.g. with a log's tail) after ``timeout`` s.

    The one way a test waits for a state it cannot be told about (the emulator's builds, a file a
    child process writes, a lock another process fills): a bounded poll of that state, never a fixed
    delay before an assertion. The pause between two looks grows from 1 ms to 50 ms, so a state
    reached at once costs nothing and a long wait costs little CPU. An exception the condition
    raises (an assertion that a child is still alive) ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not (value := condition()):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"waited {timeout:g}s for {what() if callable(what) else what}", pytrace=False)
        _NEVER.wait(min(pause, left))
        pause = min(pause * 2, 0.05)
    return value


def sigint_default() -> None:
    """preexec_fn for a child the test interrupts: a shell's `cmd &` starts it with SIGINT ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_runner(**kw) -> CliRunner:
    """stdout and stderr apart on every click 8.x (8.0 and 8.1 mix them unless told; 8.2 dropped the flag)."""
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        kw.setdefault("mix_stderr", False)
    return CliRunner(**kw)


def run(project: Path, *args: str, env=None):
    """``e2b-matrix -C project ARGS`` in this process (its Result: exit code, stdout, stderr)."""
    from e2b_matrix.cli import cli

    return cli_runner().invoke(cli, ["-C", str(project), *args], env=env)


def one_line_error(r, code: int, *expected: str) -> str:
    """Exit ``code`` with one error line holding each of ``expected``, and no traceback; that line."""
    err = r.stderr.strip().splitlines()
    assert r.exit_code == code, r.output
    assert len(err) == 1 and err[0].startswith("e2b-matrix: error: "), r.stderr
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit))
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


@pytest.fixture
def emu(monkeypatch, request):
    """The E2B API emulator on 127.0.0.1, with the SDK and fast retries pointed at it.

    A test may pass the emulator's own settings through indirect parametrization:
    ``@pytest.mark.parametrize("emu", [{"upload_delay": 1.0}], indirect=True)``.
    """
    from e2b_matrix.emulator import E2BEmulator

    with E2BEmulator(api_key=KEY, **getattr(request, "param", {})) as e:
        for k, v in e.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("E2B_MATRIX_RETRY_BASE_S", "0.05")
        monkeypatch.setenv("E2B_MATRIX_RETRY_MAX_DELAY_S", "1")
        yield e


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the shipped project (variants/ and their committed requirements/) in a temporary directory."""
    shutil.copytree(ROOT / "variants", tmp_path / "variants")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file under root with its bytes, every folder and link too: to prove nothing on disk changed
    (a refused command makes no folder, no lock file, no log)."""

    def content(p: Path) -> bytes | str:
        if p.is_symlink():
            return f"-> {os.readlink(p)}"
        return p.read_bytes() if p.is_file() else "<folder>" if p.is_dir() else "<other>"

    return {str(p.relative_to(root)): content(p) for p in sorted(root.rglob("*"))}


DOCKER_BASE = os.environ.get("E2B_MATRIX_DOCKER_BASE") or "e2b-matrix/debian-base:bookworm"


def docker_required():
    """Skip without a Docker daemon and base image, except in CI (CI=true), where that fails.

    Returns the DockerCLI the settings select (E2B_MATRIX_DOCKER_CLI, E2B_MATRIX_DOCKER_BUILDKIT).
    """
    from e2b_matrix.backends.docker_discovery import discover
    from e2b_matrix.backends.docker_engine import DockerCLI
    from e2b_matrix.settings import Settings

    settings = Settings.from_env()
    docker = DockerCLI(discover(settings.docker_cli, settings.docker_buildkit))
    reason = None
    if not docker.daemon_available(timeout=10):
        reason = "no Docker daemon answers `docker info`: run scripts/docker-up.sh (make docker-up)"
    elif not docker.image_exists(DOCKER_BASE):
        reason = f"no base image {DOCKER_BASE}: run scripts/docker-up.sh (make docker-up)"
    if reason:
        unavailable(reason, ".ci/run must start dockerd and make the base image")
    return docker


def remove_images(docker, *refs: str) -> None:
    """Remove the images (by tag or ID) a test made, whatever still uses them (``docker image rm --force``);
    none that is already gone is an error."""
    subprocess.run(
        [docker.discovery.binary, "image", "rm", "--force", *refs], capture_output=True, timeout=120, check=False
    )


def image_size(docker, ref: str) -> int:
    """The image's size in bytes, its layers included."""
    command = [docker.discovery.binary, "image", "inspect", "--format", "{{.Size}}", ref]
    return int(subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout)


def docker_mode_required():
    """The E2B emulator's Docker mode (its stand-in of code-interpreter-v1 made, once: minutes), for make e2e.
    Skips without a Docker daemon and the Debian bases, except in CI (CI=true), where that fails."""
    from e2b_matrix.emulator.docker_mode import DockerMode, DockerUnavailable

    docker = docker_required()
    try:
        return DockerMode.prepare(docker, on_log=lambda line: print(f"[emulator] {line}"))
    except DockerUnavailable as exc:
        unavailable(str(exc), ".ci/run must start dockerd and make the base images (make docker-up)")


@pytest.fixture(scope="session")
def docker_mode():
    """The Docker mode, prepared once per session (a fresh emulator per module or test uses it)."""
    return docker_mode_required()


def unavailable(reason: str, in_ci: str) -> None:
    """Skip for want of something a test needs, except in CI (CI=true), where its absence is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: {in_ci})")
    pytest.skip(reason)
