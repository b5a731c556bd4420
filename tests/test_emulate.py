"""`e2b-matrix emulate` (a local E2B for users) and the sandbox proxy in the timing mode.

The Docker mode itself is exercised by tests/test_e2e_emulator.py and
tests/test_e2e_e2b_path.py (make e2e); here: the command's exports, its env file,
a build through them, a clean stop on SIGTERM, the choice of mode, and what the
sandbox proxy answers when sandboxes run nothing. Plus the Connect framing and
E2B's COPY source rule the Docker mode relies on, as pure functions.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from e2b import Sandbox, SandboxException

from conftest import KEY, cli_runner, wait_for
from e2b_matrix.cli import cli
from e2b_matrix.emulator import E2BEmulator
from e2b_matrix.emulator.docker_shell import Context
from e2b_matrix.emulator.docker_steps import Start
from e2b_matrix.emulator.sandboxes import _basic_user, _frame, _unframe
from e2b_matrix.emulator.step_commands import _without_globs


def wait_for_file(path, proc, timeout: float = 30) -> str:
    """The text of ``path`` once ``proc`` has written it (the test fails at once if ``proc`` ends first)."""

    def written() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        return path.exists() and path.stat().st_size > 0

    wait_for(written, what=f"{path} to be written", timeout=timeout)
    return path.read_text()


def test_emulate_prints_the_exports_and_a_build_works_through_them(project, tmp_path):
    env_file = tmp_path / "e2b.env"
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2b_matrix", "emulate", "--mode", "timing", "--env-file", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        text = wait_for_file(env_file, proc)
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "".join(lines) == text  # stdout and the file say the same
        exports = dict(line.removeprefix("export ").strip().split("=", 1) for line in lines)
        assert set(exports) == {"E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"}
        assert exports["E2B_API_URL"].startswith("http://127.0.0.1:")
        assert exports["E2B_SANDBOX_URL"].startswith("http://127.0.0.1:")
        assert exports["E2B_API_KEY"].startswith("emulator-")  # its own key, not shaped like E2B's: never masked
        p = subprocess.run(
            [sys.executable, "-m", "e2b_matrix", "-C", str(project), "build", "minimal"],
            env={**os.environ, **exports},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        assert "1 built" in p.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        err = proc.stderr.read()
        assert "in its timing mode" in err and "stopping" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_emulate_says_why_when_the_docker_mode_cannot_run(tmp_path, monkeypatch):
    """--mode docker without a daemon: one line, exit 2; auto: the timing mode, and why."""
    monkeypatch.setenv("E2B_MATRIX_DOCKER_CLI", str(tmp_path / "no-docker"))
    r = cli_runner().invoke(cli, ["emulate", "--mode", "docker"])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "e2b-matrix: error: --mode docker: no Docker daemon answers `docker info` (make docker-up starts one)"
    ]
    env_file = tmp_path / "e2b.env"
    env = {**os.environ, "E2B_MATRIX_DOCKER_CLI": str(tmp_path / "no-docker")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2b_matrix", "emulate", "--env-file", str(env_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for_file(env_file, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        err = proc.stderr.read()
        assert "timing mode: no Docker daemon answers" in err and "in its timing mode" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def timing(monkeypatch):
    with E2BEmulator(api_key=KEY) as emu:
        for k, v in emu.env().items():
            monkeypatch.setenv(k, v)
        yield emu


def proxy(emu, path: str, headers: dict[str, str], method: str = "GET") -> tuple[int, dict]:
    req = urllib.request.Request(emu.sandbox_url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_timing_modes_sandboxes_run_nothing_and_say_so(timing):
    """E2B's proxy answers: a running sandbox with nothing listening is 502 "port is not open",
    an unknown or killed one 502 "not found" (shared/pkg/proxy/template); the SDK raises."""
    sbx = Sandbox.create("code-interpreter-v1")
    with pytest.raises(SandboxException, match="port is not open"):
        sbx.commands.run("true")
    status, body = proxy(timing, "/health", {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"})
    assert status == 502 and body["message"].startswith("The sandbox is running but port is not open")
    assert "timing mode" in body["message"] and body["port"] == 49983
    status, body = proxy(timing, "/health", {"E2b-Sandbox-Id": "inope", "E2b-Sandbox-Port": "49983"})
    assert (status, body) == (502, {"sandboxId": "inope", "message": "The sandbox was not found", "code": 502})
    status, body = proxy(timing, "/health", {"E2b-Sandbox-Id": sbx.sandbox_id})
    assert (status, body["message"]) == (400, "Missing header: E2b-Sandbox-Port")
    assert Sandbox.connect(sbx.sandbox_id).sandbox_id == sbx.sandbox_id  # POST /v2/sandboxes/{id}/connect: 200
    sbx.kill()
    status, body = proxy(timing, "/health", {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"})
    assert status == 502 and body["message"] == "The sandbox was not found"
    with pytest.raises(SandboxException, match="not found"):
        Sandbox.connect(sbx.sandbox_id)


def test_connect_framing_and_envds_user_header():
    frame = _frame({"event": {"start": {"pid": 7}}})
    assert frame[0] == 0 and int.from_bytes(frame[1:5], "big") == len(frame) - 5
    assert _unframe(frame) == {"event": {"start": {"pid": 7}}}
    with pytest.raises(ValueError, match="compressed"):
        _unframe(b"\x01" + frame[1:])
    with pytest.raises(ValueError, match="no Connect envelope"):
        _unframe(b"\x00\x00")
    assert _basic_user("Basic " + base64.b64encode(b"root:").decode()) == "root"  # e2b/envd/utils.py
    assert _basic_user(None) is None and _basic_user("Bearer x") is None


def test_copy_sources_drop_their_globs_and_contexts_round_trip():
    """The SDK archives what a COPY's globs match; E2B strips them from the source (copy.go)."""
    assert _without_globs("requirements/nexus-1.txt") == "requirements/nexus-1.txt"
    assert _without_globs("conf/") == "conf"
    assert _without_globs("conf/*.txt") == "conf"
    assert _without_globs("*.txt") == "."
    assert _without_globs("a/b/**/c") == "a/b"
    context = Context("user", "/home/user", (("A", "1"), ("B", "x y=z")))
    assert Context.from_label(context.label()) == context
    assert Context.from_label(Context("root").label()) == Context("root")


def test_a_templates_ready_command_defaults_as_e2bs_finalize_phase_does():
    """ready.go: without a ready command, 20 s of sleep after a start command, none without one
    (the build's finalize phase and every new sandbox wait on the same rule)."""
    context = Context("user", "/home/user")
    assert Start("", "", context).ready == "sleep 0"
    assert Start("python -m http.server", "", context).ready == "sleep 20"
    assert Start("python -m http.server", "curl -sf localhost:8000", context).ready == "curl -sf localhost:8000"
