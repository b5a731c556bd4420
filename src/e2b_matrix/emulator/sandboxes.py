"""The emulator's sandboxes, and E2B's sandbox proxy in front of them.

With ``E2B_SANDBOX_URL`` set, the SDK sends all of a sandbox's traffic to that
one URL and names the sandbox and port in the ``E2b-Sandbox-Id`` and
``E2b-Sandbox-Port`` headers (e2b/connection_config.py: get_sandbox_url;
e2b/sandbox_sync/main.py; e2b_code_interpreter/code_interpreter_sync.py), as
E2B's proxy routes them (e2b-dev/infra packages/shared/pkg/proxy/host.go). The
proxy answers an unknown or killed sandbox with 502 ``The sandbox was not found``
and a port nothing listens on with 502 ``The sandbox is running but port is not
open`` (shared/pkg/proxy/template: sandbox_not_found.go, port_closed.go).

In the Docker mode every sandbox is a container of its build's image
(docker_steps.py), with /dev/fuse when the host has it, removed when the sandbox
is killed, its timeout passes or the emulator stops. Two ports are served:

- 49983, envd: ``GET /health`` and ``process.Process/Start``, a Connect RPC
  server stream in the JSON codec the SDK uses (e2b/envd/process/process_connect.py,
  e2b/envd/client_shared.py): the command runs as the user the ``Authorization``
  header names (else the template's), in the cwd it asks (else the template's
  workdir, else the user's home), with the template's environment, the
  sandbox's and its own; its start (pid), stdout and stderr chunks, keepalives
  and end (exit code, status) stream back as envd sends them (packages/envd/
  internal/services/process/start.go, handler/handler.go). ``Connect-Timeout-Ms``
  kills it, as envd does. The other envd RPCs and routes answer "unimplemented";
- 49999, the code interpreter, in sandboxes of code-interpreter-v1 and the
  templates built on it: ``GET /health`` and ``POST /execute``, JSON lines from
  a real IPython kernel kept per sandbox (kernel_driver.py): state persists
  between calls, as in E2B (e2b-dev/code-interpreter template/server/main.py).

In the timing mode a sandbox runs nothing: every port answers "not open".
"""

from __future__ import annotations

import base64
import contextlib
import json
import posixpath
import queue
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from e2b_matrix import files
from e2b_matrix.backends.docker_engine import DockerCLI, DockerError
from e2b_matrix.emulator import containers
from e2b_matrix.emulator.docker_steps import OWNER_LABEL, READY_INTERVAL, Image
from e2b_matrix.emulator.http import Handler
from e2b_matrix.emulator.rules import MAX_BODY_BYTES

ENVD_PORT = 49983  # e2b/connection_config.py: ConnectionConfig.envd_port
CODE_INTERPRETER_PORT = 49999  # e2b_code_interpreter/constants.py: JUPYTER_PORT
READY_WAIT = 120.0  # seconds a new sandbox waits for its template's ready command
CONNECT_JSON = "application/connect+json"
_END_STREAM = 0x02  # Connect's end-of-stream envelope flag
_KEEPALIVE_HEADER = "Keepalive-Ping-Interval"  # e2b/connection_config.py: KEEPALIVE_PING_HEADER
END_OF_EXECUTION = b'{"type": "end_of_execution"}'  # kernel_driver.py writes it so, as the server does


@dataclass
class LiveSandbox:
    """A sandbox the proxy serves: its container (None in the timing mode) and template image."""

    sandbox_id: str
    image: Image | None
    container: str | None = None
    envs: dict[str, str] = field(default_factory=dict)  # POST /v2/sandboxes envVars
    start: containers.Process | None = None
    kernel: Kernel | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def start_sandbox(
    cli: DockerCLI, sandbox: LiveSandbox, *, owner: str, devices: tuple[str, ...], cpus: int, memory_mb: int
) -> None:
    """Run the sandbox's container and its template's start command (ready once its ready command
    succeeds); DockerError when it cannot."""
    assert sandbox.image is not None
    name = f"e2b-emulator-sandbox-{sandbox.sandbox_id}"
    cli.start_container(
        sandbox.image.image,
        name,
        labels={OWNER_LABEL: owner, "e2b-emulator.sandbox": sandbox.sandbox_id},
        devices=devices,
        cpus=cpus,
        memory_mb=memory_mb,
    )
    sandbox.container = name
    start = sandbox.image.start
    if start is None:
        return
    env = {**start.context.env(), **sandbox.envs}
    if start.start_cmd:  # an image holds no process: the start command runs again in each sandbox
        sandbox.start = containers.Process(
            cli,
            name,
            ["/bin/bash", "-l", "-c", start.start_cmd],
            user=start.context.user,
            cwd=start.context.workdir,
            env=env,
        )
    ready = start.ready
    deadline = time.monotonic() + READY_WAIT
    while (
        containers.run(
            cli, name, ["/bin/bash", "-l", "-c", ready], user=start.context.user, cwd=start.context.workdir, env=env
        )[0]
        != 0
    ):
        if time.monotonic() > deadline:
            raise DockerError(f"the template's ready command ({ready}) did not succeed within {READY_WAIT:g}s")
        time.sleep(READY_INTERVAL)


def stop_sandbox(cli: DockerCLI, sandbox: LiveSandbox) -> None:
    """Remove the sandbox's container (its kernel and start command go with it)."""
    if sandbox.kernel is not None:
        sandbox.kernel.close()
    if sandbox.container is not None:
        with contextlib.suppress(DockerError):
            cli.remove_container(sandbox.container)


class SandboxProxy:
    """E2B's sandbox proxy: routes by the ``E2b-Sandbox-Id`` / ``E2b-Sandbox-Port`` headers.

    ``find`` gives the running sandbox of an ID (None when unknown or killed); ``cli`` is
    None in the timing mode, where sandboxes run nothing.
    """

    def __init__(self, find: Callable[[str], LiveSandbox | None], cli: DockerCLI | None):
        self.find, self.cli = find, cli

    def handle(self, h: Handler) -> None:
        body = h.read_body(MAX_BODY_BYTES)
        if body is None:
            h.close_connection = True
            return _json(h, 413, {"code": 413, "message": "request body too large"})
        sandbox_id, port_text = h.headers.get("E2b-Sandbox-Id"), h.headers.get("E2b-Sandbox-Port")
        if not sandbox_id or not port_text:  # shared/pkg/proxy/host.go: MissingHeaderError
            missing = "E2b-Sandbox-Id" if not sandbox_id else "E2b-Sandbox-Port"
            return _json(h, 400, {"code": 400, "message": f"Missing header: {missing}"})
        try:
            port = int(port_text)
        except ValueError:
            return _json(h, 400, {"code": 400, "message": f"invalid sandbox port {port_text!r}"})
        sandbox = self.find(sandbox_id)
        if sandbox is None:
            return _json(h, 502, {"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502})
        path = h.path.split("?", 1)[0]
        if sandbox.container is not None and self.cli is not None:
            if port == ENVD_PORT:
                return self._envd(h, sandbox, path, body)
            if port == CODE_INTERPRETER_PORT and sandbox.image is not None and sandbox.image.code_interpreter:
                return self._code_interpreter(h, sandbox, path, body)
        message = "The sandbox is running but port is not open"
        if self.cli is None:
            message += " (the E2B emulator runs in its timing mode: sandboxes run nothing)"
        return _json(h, 502, {"sandboxId": sandbox_id, "message": message, "port": port, "code": 502})

    # -- envd -------------------------------------------------------------------------------

    def _envd(self, h: Handler, sandbox: LiveSandbox, path: str, body: bytes) -> None:
        if path == "/health" and h.command == "GET":
            return h.send(204, b"")
        if path == "/process.Process/Start" and h.command == "POST":
            return self._start(h, sandbox, body)
        if path.startswith(("/process.Process/", "/filesystem.Filesystem/")):
            return _json(
                h, 501, {"code": "unimplemented", "message": f"{path.lstrip('/')} is not modelled by the E2B emulator"}
            )
        return h.send(404, f"{path}: not modelled by the E2B emulator\n".encode(), "text/plain; charset=utf-8")

    def _start(self, h: Handler, sandbox: LiveSandbox, body: bytes) -> None:
        """process.Process/Start: run the command, stream its events (a Connect server stream)."""
        assert self.cli is not None and sandbox.container is not None
        if (h.headers.get("Content-Type") or "").split(";")[0].strip() != CONNECT_JSON:
            return h.send(415, b"", None, {"Accept-Post": CONNECT_JSON})
        try:
            request = _unframe(body)
        except ValueError as exc:
            return _stream_error(h, "invalid_argument", str(exc))
        if request.get("pty"):
            return _stream_error(h, "unimplemented", "PTY is not modelled by the E2B emulator")
        argv, user, cwd, env = _command(sandbox, request.get("process") or {}, h.headers.get("Authorization"))
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        process = containers.Process(
            self.cli,
            sandbox.container,
            argv,
            user=user,
            cwd=cwd,
            env=env,
            on_stdout=lambda chunk: events.put({"data": {"stdout": base64.b64encode(chunk).decode()}}),
            on_stderr=lambda chunk: events.put({"data": {"stderr": base64.b64encode(chunk).decode()}}),
        )
        try:
            pid = process.pid()
        except containers.NotStarted as exc:
            return _stream_error(h, "invalid_argument", str(exc))
        timeout = _seconds(h.headers.get("Connect-Timeout-Ms"), 1000)
        timer = threading.Timer(timeout, process.kill) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            _stream(h, process, pid, events, _seconds(h.headers.get(_KEEPALIVE_HEADER), 1) or None)
        finally:
            if timer is not None:
                timer.cancel()

    # -- the code interpreter ----------------------------------------------------------------

    def _code_interpreter(self, h: Handler, sandbox: LiveSandbox, path: str, body: bytes) -> None:
        if path == "/health" and h.command == "GET":
            return _json(h, 200, "OK")
        if path != "/execute" or h.command != "POST":
            return h.send(404, f"{path}: not modelled by the E2B emulator\n".encode(), "text/plain; charset=utf-8")
        try:
            request = files.parse_json(body or b"null")
            if not isinstance(request, dict) or not isinstance(request.get("code"), str):
                raise ValueError("code is required")
        except ValueError as exc:
            return h.send(422, json.dumps({"detail": str(exc)}).encode())
        if request.get("context_id") and request.get("language"):
            return h.send(400, b"Only one of context_id or language can be provided", "text/plain; charset=utf-8")
        if request.get("context_id"):
            return h.send(404, f"Context {request['context_id']} not found".encode(), "text/plain; charset=utf-8")
        language = str(request.get("language") or "python").lower()
        if language not in ("python", "python3"):
            return h.send(
                500,
                f"the E2B emulator's stand-in runs Python only, not {language}".encode(),
                "text/plain; charset=utf-8",
            )
        assert self.cli is not None and sandbox.container is not None and sandbox.image is not None
        with sandbox.lock:
            if sandbox.kernel is None or not sandbox.kernel.alive():
                sandbox.kernel = Kernel(self.cli, sandbox.container, sandbox.image, sandbox.envs)
            kernel = sandbox.kernel
        try:
            h.start_stream(200, "application/json")
            envs = request.get("env_vars") or {}
            kernel.execute(
                request["code"],
                {str(k): str(v) for k, v in envs.items()} if isinstance(envs, dict) else {},
                lambda line: h.write_chunk(line + b"\n"),
            )
            h.end_stream()
        except OSError:
            h.close_connection = True


class Kernel:
    """The sandbox's code interpreter: kernel_driver.py in its container, one execution at a time."""

    def __init__(self, cli: DockerCLI, container: str, image: Image, envs: dict[str, str]):
        source = resources.files("e2b_matrix.emulator").joinpath("kernel_driver.py").read_text(encoding="utf-8")
        workdir = "/home/user"  # template/server/main.py: every context starts there
        self._proc = cli.exec_process(
            container,
            ["python3", "-u", "-c", source, workdir],
            user="root",
            workdir=workdir,
            env={**image.context.env(), **envs},
            stdin=True,
        )
        self._lock = threading.Lock()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True, name="e2b-emulator-kernel-stderr").start()

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr = ([*self._stderr, line])[-20:]

    def alive(self) -> bool:
        return self._proc.poll() is None

    def execute(self, code: str, envs: dict[str, str], write: Callable[[bytes], None]) -> None:
        """Run one cell (``envs`` set for it); each JSON line the code interpreter would stream goes
        to ``write``, the last one ``{"type": "end_of_execution"}`` (template/server/stream.py)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        source = code.encode()
        environment = "\0".join(f"{k}={v}" for k, v in envs.items() if k and "=" not in k and "\0" not in k + v)
        with self._lock:
            try:
                self._proc.stdin.write(
                    f"{len(source)} {len(environment.encode())}\n".encode() + source + environment.encode()
                )
                self._proc.stdin.flush()
            except OSError:
                pass
            for raw in iter(self._proc.stdout.readline, b""):
                line = raw.rstrip(b"\n")
                write(line)
                if line == END_OF_EXECUTION:
                    return
            why = b"".join(self._stderr).decode(errors="replace").strip().splitlines()
            write(
                json.dumps(
                    {
                        "type": "error",
                        "name": "UnexpectedEndOfExecution",  # template/server/messaging.py
                        "value": "Connection to the execution was closed before the execution was finished"
                        + (f" ({why[-1]})" if why else ""),
                        "traceback": "",
                    }
                ).encode()
            )
            write(END_OF_EXECUTION)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(10)


# -- Connect and HTTP helpers -------------------------------------------------------------


def _frame(message: dict[str, Any], flags: int = 0) -> bytes:
    """A Connect envelope: flags, big-endian length, the JSON message."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(data)) + data


def _unframe(body: bytes) -> dict[str, Any]:
    """The one message of a Connect streaming request's body."""
    if len(body) < 5:
        raise ValueError("the request holds no Connect envelope")
    flags, length = struct.unpack(">BI", body[:5])
    if flags & 0x01:
        raise ValueError("compressed messages are not accepted (identity only, as the SDK sends)")
    message = files.parse_json(body[5 : 5 + length])
    if not isinstance(message, dict):
        raise ValueError("expected a JSON object")
    return message


def _command(
    sandbox: LiveSandbox, config: dict[str, Any], authorization: str | None
) -> tuple[list[str], str, str | None, dict[str, str]]:
    """(argv, user, cwd, env) of a Start request: as the user ``Authorization`` names (else the
    template's), in its cwd (else the template's workdir), with the template's, the sandbox's and
    its own environment."""
    assert sandbox.image is not None
    context = sandbox.image.context
    user = _basic_user(authorization) or context.user
    cwd = str(config.get("cwd") or "") or context.workdir
    if cwd and context.workdir and not cwd.startswith(("/", "~")):
        cwd = posixpath.join(context.workdir, cwd)
    env = {
        **context.env(),
        **sandbox.envs,
        **{str(k): str(v) for k, v in (config.get("envs") or {}).items()},
        "USER": user,
        "LOGNAME": user,
    }
    return [str(config.get("cmd") or ""), *(str(a) for a in config.get("args") or [])], user, cwd, env


def _stream(
    h: Handler,
    process: containers.Process,
    pid: int,
    events: queue.Queue[dict[str, Any] | None],
    keepalive: float | None,
) -> None:
    """The Connect server stream of a started process: start, its output (keepalives between), end."""

    def end() -> None:  # after the last output: the stream ends
        process.wait()
        events.put(None)

    threading.Thread(target=end, daemon=True, name="e2b-emulator-envd-wait").start()
    try:
        h.start_stream(200, CONNECT_JSON)
        h.write_chunk(_frame({"event": {"start": {"pid": pid}}}))
        while True:
            try:
                event = events.get(timeout=keepalive)
            except queue.Empty:
                h.write_chunk(_frame({"event": {"keepalive": {}}}))
                continue
            if event is None:
                break
            h.write_chunk(_frame({"event": event}))
        h.write_chunk(_frame({"event": {"end": _end(process)}}))
        h.write_chunk(_frame({}, _END_STREAM))
        h.end_stream()
    except OSError:  # the client went away: envd keeps the process; so does this
        h.close_connection = True


def _stream_error(h: Handler, code: str, message: str) -> None:
    """A server stream that ends at once with a Connect error (its end-of-stream message)."""
    h.start_stream(200, CONNECT_JSON)
    h.write_chunk(_frame({"error": {"code": code, "message": message}}, _END_STREAM))
    h.end_stream()


def _end(process: containers.Process) -> dict[str, Any]:
    """envd's EndEvent in protobuf's JSON (zero values left out): a kill is a signal, not an exit."""
    code = process.wait()
    if process.killed:
        return {"exitCode": -1, "status": "signal: killed", "error": "signal: killed"}
    end: dict[str, Any] = {"exited": True, "status": f"exit status {code}"}
    if code:
        end["exitCode"] = code
        end["error"] = f"exit status {code}"
    return end


def _basic_user(header: str | None) -> str | None:
    """The user of ``Authorization: Basic base64(user:)`` (e2b/envd/utils.py: authentication_header)."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        return base64.b64decode(header[6:]).decode().split(":", 1)[0] or None
    except ValueError:
        return None


def _seconds(text: str | None, per_second: int) -> float:
    try:
        return max(0.0, int(text or 0) / per_second)
    except ValueError:
        return 0.0


def _json(h: Handler, status: int, payload: Any) -> None:
    h.send(status, json.dumps(payload).encode(), "application/json; charset=utf-8")
