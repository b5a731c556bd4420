"""An in-process emulator of E2B's template-build API, for tests and benchmarks.

E2B's cloud cannot be reached from the test machine, so tests point the *real*
``e2b`` SDK at this server through ``E2B_API_URL`` (or ``api_url=``).  Every
route, status code and JSON field name follows the SDK's generated client
(``e2b/api/client/api/templates`` and ``e2b/api/client/models``) and the way
``e2b/template_sync`` drives a build::

    POST /v3/templates                                  -> 202 TemplateRequestResponseV3
    GET  /templates/{templateID}/files/{hash}           -> 201 TemplateBuildFileUpload
    PUT  /upload/{hash}            (the upload "url")   -> 200
    POST /v2/templates/{templateID}/builds/{buildID}    -> 202 (TemplateBuildStartV2 body)
    GET  /templates/{templateID}/builds/{buildID}/status?logsOffset=N&limit=M
                                                        -> 200 TemplateBuildInfo

Errors carry E2B's body shape ``{"code": <status>, "message": "..."}``, which
``e2b.api.handle_api_exception`` maps to exceptions (401 -> Authentication-,
429 -> RateLimit-, 503 -> ServiceBusyException, others -> BuildException).

Builds are simulated in time without any background thread: a build is
``waiting`` until triggered, ``building`` for its configured duration after the
trigger, then ``ready`` (or ``error`` if configured to fail).  Everything is
computed from the clock when a status is read, so N concurrent builds of T
seconds all finish after about T seconds.  Log lines appear progressively over
the build's duration and are served at most 100 per response, as E2B does.

Usage::

    with E2BEmulator(api_key="e2b_test_key") as emu:
        emu.configure("my-template", duration=1.0, log_lines=20)
        emu.inject("request_build", status=429, count=2, retry_after=0)
        Template.build(template, "my-template", api_url=emu.url, api_key=emu.api_key)
        assert emu.count("request_build") == 3

The module uses the standard library only and must not import ``e2b_matrix``.
The server listens on 127.0.0.1 only, on a free port chosen by the kernel.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, List, Optional, Set, Tuple, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["E2BEmulator", "BuildSnapshot", "ROUTES"]

#: Route names accepted by :meth:`E2BEmulator.inject` and :meth:`E2BEmulator.count`.
ROUTES = ("request_build", "files", "upload", "trigger", "status")

NAME_RE = re.compile(r"^[a-z0-9-_]+$")
TAG_RE = re.compile(r"^[a-z0-9-_.]+$")

DEFAULT_TAG = "default"
DEFAULT_CPU = 2
DEFAULT_MEMORY_MB = 1024
MAX_LOG_PAGE = 100  # E2B's status endpoint returns at most 100 log entries per call
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_REQUEST_RECORDS = 100_000
MAX_BODY_BYTES = 8 * 1024 * 1024  # JSON bodies; uploads use MAX_UPLOAD_BYTES

_ROUTE_PATTERNS: Tuple[Tuple[str, str, "re.Pattern[str]"], ...] = (
    ("POST", "request_build", re.compile(r"^/v3/templates/?$")),
    ("GET", "files", re.compile(r"^/templates/(?P<tid>[^/]+)/files/(?P<hash>[^/]+)$")),
    ("PUT", "upload", re.compile(r"^/upload/(?P<hash>[^/]+)$")),
    ("POST", "trigger", re.compile(r"^/v2/templates/(?P<tid>[^/]+)/builds/(?P<bid>[^/]+)$")),
    ("GET", "status", re.compile(r"^/templates/(?P<tid>[^/]+)/builds/(?P<bid>[^/]+)/status$")),
)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class _Behaviour:
    """How builds of one template name behave (see :meth:`E2BEmulator.configure`)."""

    duration: float
    log_lines: int
    fail_at_step: Optional[Union[int, str]] = None
    fail_message: Optional[str] = None


@dataclass
class _Fault:
    """One pending injected fault; ``remaining`` counts down as requests consume it."""

    route: str
    remaining: int
    status: Optional[int] = None
    retry_after: Optional[Union[int, str]] = None
    body: Optional[Union[dict, str, bytes]] = None
    reset: bool = False
    delay: Optional[float] = None


@dataclass
class _Build:
    """Mutable internal state of one build (guarded by the emulator's lock)."""

    name: str  # as requested: "name" or "name:tag"
    base_name: str
    template_id: str
    build_id: str
    tags: List[str]
    cpu_count: int
    memory_mb: int
    request_body: Dict[str, Any]
    behaviour: _Behaviour
    requested_at: float  # wall clock (time.time())
    requested_mono: float
    start_body: Optional[Dict[str, Any]] = None
    triggered_at: Optional[float] = None
    triggered_mono: Optional[float] = None
    cancelled_mono: Optional[float] = None
    cancelled_at: Optional[float] = None
    cancel_message: Optional[str] = None

    # -- timeline --------------------------------------------------------------

    def status(self, now: float) -> str:
        """The build status at monotonic time ``now``."""
        if self.cancelled_mono is not None:
            return "error"
        if self.triggered_mono is None:
            return "waiting"
        if now - self.triggered_mono < self.behaviour.duration:
            return "building"
        return "error" if self.behaviour.fail_at_step is not None else "ready"

    def finished_at(self) -> Optional[float]:
        """Wall-clock time the build ends (or ended); None while not triggered."""
        if self.cancelled_at is not None:
            return self.cancelled_at
        if self.triggered_at is None:
            return None
        return self.triggered_at + self.behaviour.duration

    # -- logs ------------------------------------------------------------------

    @property
    def failed_step(self) -> Optional[str]:
        """E2B's name of the failing step: steps are numbered from 1 ("base" is FROM)."""
        step = self.behaviour.fail_at_step
        if step is None:
            return None
        return str(step + 1) if isinstance(step, int) else step

    def total_logs(self) -> int:
        """Log entries the build emits in all: its lines, plus an error line on failure."""
        return self.behaviour.log_lines + (1 if self.behaviour.fail_at_step is not None else 0)

    def visible_logs(self, now: float) -> int:
        """How many log entries exist at monotonic time ``now`` (progressive)."""
        if self.triggered_mono is None:
            return 0
        total = self.total_logs()
        end = now if self.cancelled_mono is None else min(now, self.cancelled_mono)
        elapsed = end - self.triggered_mono
        duration = self.behaviour.duration
        if elapsed < 0:  # triggered after it was cancelled
            return 0
        if elapsed >= duration or duration <= 0:
            return total
        # entry i appears at duration * i / total: the first at once, all before the end
        return min(total, int(elapsed * total / duration) + 1)

    def log_entry(self, i: int) -> Dict[str, Any]:
        """The i-th (0-based) log entry as a BuildLogEntry JSON object."""
        assert self.triggered_at is not None
        total = self.total_logs()
        offset = self.behaviour.duration * i / total if total else 0.0
        timestamp = datetime.fromtimestamp(self.triggered_at + offset, timezone.utc).isoformat()
        lines = self.behaviour.log_lines
        if i >= lines:  # the failure line
            return {
                "timestamp": timestamp,
                "level": "error",
                "message": self.failure_message(),
                "step": self.failed_step,
            }
        steps = len((self.start_body or {}).get("steps") or [])
        # spread the lines over "base" (FROM) and steps 1..steps
        step_no = i * (steps + 1) // lines if lines else 0
        return {
            "timestamp": timestamp,
            "level": "info",
            "message": f"[{self.name}] line {i + 1}/{lines}",
            "step": "base" if step_no == 0 else str(step_no),
        }

    def failure_message(self) -> str:
        """The reason message of a configured failure."""
        if self.behaviour.fail_message:
            return self.behaviour.fail_message
        return f"emulated failure of {self.name!r} at step {self.failed_step}"


@dataclass(frozen=True)
class BuildSnapshot:
    """A read-only copy of one build's state, as returned by :attr:`E2BEmulator.builds`.

    Times are wall-clock (``time.time()``); ``finished_at`` is when the build
    ends or ended (None until triggered).
    """

    name: str
    base_name: str
    template_id: str
    build_id: str
    status: str
    cancelled: bool
    cancel_message: Optional[str]
    tags: List[str]
    cpu_count: int
    memory_mb: int
    request_body: Dict[str, Any]
    start_body: Optional[Dict[str, Any]]
    requested_at: float
    triggered_at: Optional[float]
    finished_at: Optional[float]
    log_lines: int
    duration: float

    @property
    def steps(self) -> List[Dict[str, Any]]:
        """The steps of the received TemplateBuildStartV2 body (empty if not triggered)."""
        return list((self.start_body or {}).get("steps") or [])


@dataclass(frozen=True)
class _Record:
    """One answered request."""

    method: str
    path: str
    status: int  # 0 when the connection was reset without an answer
    route: str
    http_version: str


class _Reply(Exception):
    """Raised inside a route handler to answer with an E2B-shaped error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer on 127.0.0.1 that tracks its connection threads.

    Tracking lets :meth:`E2BEmulator.stop` close idle keep-alive connections
    (the SDK pools them for minutes) and join every thread it started.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, emulator: "E2BEmulator"):
        self.emulator = emulator
        self._conn_lock = threading.Lock()
        self._connections: Dict[threading.Thread, socket.socket] = {}
        self._aborted: Set[int] = set()  # ids of sockets to close with RST
        self.connection_count = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):  # noqa: D401 - socketserver hook
        """Serve each connection on its own tracked thread."""
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="e2b-emulator-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._connections[thread] = request
            self.connection_count += 1
        thread.start()

    def _serve_connection(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a client going away mid-request is not our failure
            pass
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._connections.pop(threading.current_thread(), None)

    def abort_on_close(self, sock: socket.socket) -> None:
        """Make closing ``sock`` send a TCP RST instead of a FIN."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._conn_lock:
            self._aborted.add(id(sock))

    def shutdown_request(self, request) -> None:
        """Close a connection: gracefully, or with a reset if it was aborted."""
        with self._conn_lock:
            aborted = id(request) in self._aborted
            self._aborted.discard(id(request))
        if aborted:
            try:
                request.close()
            except OSError:
                pass
        else:
            super().shutdown_request(request)

    def close_all_connections(self, timeout: float) -> None:
        """Wake every connection thread by shutting its socket down, then join them."""
        with self._conn_lock:
            items = list(self._connections.items())
        for _, sock in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread, _ in items:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    """Parses one HTTP/1.1 request at a time and hands it to the emulator."""

    protocol_version = "HTTP/1.1"
    server_version = "e2b-emulator/1.0"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.server.emulator._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the default per-request stderr logging."""

    # -- helpers used by the emulator -----------------------------------------

    def read_body(self, limit: int) -> Optional[bytes]:
        """Read the whole request body (Content-Length or chunked); None if over ``limit``."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: List[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(65537)
                n = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                size += n
                if size > limit:
                    return None
                chunks.append(self.rfile.read(n))
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def send(
        self,
        status: int,
        body: bytes = b"",
        content_type: Optional[str] = "application/json",
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        """Answer with a complete response carrying an exact Content-Length."""
        self.send_response(status)
        if body and content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()


def _error_body(status: int, message: str) -> bytes:
    """E2B's error body shape (model ``Error``: code, message)."""
    return json.dumps({"code": status, "message": message}).encode()


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --------------------------------------------------------------------------- emulator


class E2BEmulator:
    """A threaded emulator of E2B's template-build API on 127.0.0.1.

    :param api_key: the only key accepted in ``X-API-KEY``; others get 401.
    :param default_duration: seconds a build spends in ``building`` unless configured.
    :param default_log_lines: log lines a build emits unless configured.
    :param forbidden_keys: keys answered with 403 (see also :meth:`forbid`).
    """

    def __init__(
        self,
        api_key: str = "e2b_test_key",
        *,
        default_duration: float = 0.3,
        default_log_lines: int = 5,
        forbidden_keys: Tuple[str, ...] = (),
    ):
        self.api_key = api_key
        self._default = _Behaviour(duration=float(default_duration), log_lines=int(default_log_lines))
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self._server: Optional[_Server] = None
        self._serve_thread: Optional[threading.Thread] = None
        self._forbidden: Set[str] = set(forbidden_keys)
        self._behaviours: Dict[str, _Behaviour] = {}
        self._faults: List[_Fault] = []
        self._template_ids: Dict[str, str] = {}  # base name -> template ID
        self._builds: Dict[str, _Build] = {}  # build ID -> build, in request order
        self._uploads: Dict[str, bytes] = {}  # files hash -> uploaded body
        self._upload_counts: Dict[str, int] = {}
        self._records: Deque[_Record] = deque(maxlen=MAX_REQUEST_RECORDS)
        self._request_count = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> "E2BEmulator":
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stop_event.clear()
        self._server = _Server(self)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="e2b-emulator",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every open connection and join all threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stop_event.set()  # wakes delayed answers
        server.shutdown()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout)
            self._serve_thread = None
        server.close_all_connections(timeout)
        server.server_close()

    def __enter__(self) -> "E2BEmulator":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> Dict[str, str]:
        """Environment variables pointing the SDK (or a subprocess) at this emulator."""
        return {"E2B_API_URL": self.url, "E2B_API_KEY": self.api_key}

    # -- configuration -----------------------------------------------------------

    def configure(
        self,
        name: str,
        duration: Optional[float] = None,
        log_lines: Optional[int] = None,
        fail_at_step: Optional[Union[int, str]] = None,
        fail_message: Optional[str] = None,
    ) -> None:
        """Set how builds of template ``name`` requested from now on behave.

        ``name`` matches the requested name exactly ("name:tag") or, failing
        that, its base name.  Each call replaces the previous settings for the
        name; omitted ``duration``/``log_lines`` take the emulator defaults.

        :param duration: seconds from trigger to ``ready``/``error``.
        :param log_lines: info log lines emitted over the duration.
        :param fail_at_step: None to succeed; an int is the 0-based index into
            the received ``steps``, reported as E2B's step name ``str(i + 1)``
            ("base" is the FROM step); a str ("base", "finalize", "3") is
            reported as is.  A failing build emits one extra error-level line.
        :param fail_message: the error reason's message (SDK raises BuildException with it).
        """
        if duration is not None and duration < 0:
            raise ValueError("duration must be >= 0")
        if log_lines is not None and log_lines < 0:
            raise ValueError("log_lines must be >= 0")
        with self._lock:
            self._behaviours[name] = _Behaviour(
                duration=self._default.duration if duration is None else float(duration),
                log_lines=self._default.log_lines if log_lines is None else int(log_lines),
                fail_at_step=fail_at_step,
                fail_message=fail_message,
            )

    def forbid(self, key: str) -> None:
        """Answer requests made with API key ``key`` with 403 Forbidden."""
        with self._lock:
            self._forbidden.add(key)

    def inject(
        self,
        route: str = "*",
        status: Optional[int] = None,
        *,
        count: int = 1,
        retry_after: Optional[Union[int, str]] = None,
        body: Optional[Union[dict, str, bytes]] = None,
        reset: bool = False,
        delay: Optional[float] = None,
    ) -> None:
        """Make the next ``count`` requests to ``route`` misbehave.

        ``route`` is one of :data:`ROUTES` or ``"*"`` (any request).  Faults
        are consumed in the order they were injected; a fault applies before
        authentication, like a gateway in front of the API.

        - ``status=429`` (or 500/502/503/504/...): answer with that status and
          an E2B error body (or ``body``), plus ``Retry-After`` if given;
        - ``reset=True``: read the request, then close the connection with a
          TCP reset and no answer (recorded with status 0);
        - ``delay=seconds``: wait before answering; alone, the request is then
          handled normally, combined with ``status``/``reset`` that fault follows.
        """
        if route != "*" and route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {ROUTES} or '*'")
        if count < 1:
            raise ValueError("count must be >= 1")
        if status is None and not reset and delay is None:
            raise ValueError("inject needs status=, reset=True or delay=")
        if status is not None and reset:
            raise ValueError("status= and reset=True are exclusive")
        with self._lock:
            self._faults.append(
                _Fault(route, count, status, retry_after, body, reset, delay)
            )

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many injected fault answers remain to be consumed."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    # -- observability -----------------------------------------------------------

    @property
    def requests(self) -> List[Tuple[str, str, int]]:
        """(method, path without query, status) of each answered request, oldest first.

        A connection reset is recorded with status 0.  Keeps the last
        MAX_REQUEST_RECORDS requests.
        """
        with self._lock:
            return [(r.method, r.path, r.status) for r in self._records]

    @property
    def request_count(self) -> int:
        """Requests handled since start (or since :meth:`reset_counters`)."""
        with self._lock:
            return self._request_count

    def count(self, route: Optional[str] = None, status: Optional[int] = None) -> int:
        """Requests recorded for ``route`` (a :data:`ROUTES` name) and/or ``status``."""
        with self._lock:
            return sum(
                1
                for r in self._records
                if (route is None or r.route == route) and (status is None or r.status == status)
            )

    @property
    def http_versions(self) -> Set[str]:
        """The HTTP versions requests arrived with (e.g. {"HTTP/1.1"})."""
        with self._lock:
            return {r.http_version for r in self._records}

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start (keep-alive makes this < request_count)."""
        server = self._server
        return server.connection_count if server is not None else 0

    def reset_counters(self) -> None:
        """Forget recorded requests and zero :attr:`request_count` (builds are kept)."""
        with self._lock:
            self._records.clear()
            self._request_count = 0

    @property
    def builds(self) -> List[BuildSnapshot]:
        """A snapshot of every build, in the order they were requested."""
        now = time.monotonic()
        with self._lock:
            return [self._snapshot(b, now) for b in self._builds.values()]

    def build(self, build_id: str) -> BuildSnapshot:
        """A snapshot of one build (KeyError if unknown)."""
        now = time.monotonic()
        with self._lock:
            return self._snapshot(self._builds[build_id], now)

    def template_id(self, name: str) -> Optional[str]:
        """The template ID assigned to ``name`` (tag ignored), or None if never built."""
        with self._lock:
            return self._template_ids.get(name.split(":", 1)[0])

    @property
    def uploads(self) -> Dict[str, bytes]:
        """Uploaded archives by files hash."""
        with self._lock:
            return dict(self._uploads)

    def upload_count(self, files_hash: Optional[str] = None) -> int:
        """PUT uploads received for ``files_hash`` (or in all)."""
        with self._lock:
            if files_hash is None:
                return sum(self._upload_counts.values())
            return self._upload_counts.get(files_hash, 0)

    @staticmethod
    def _snapshot(b: _Build, now: float) -> BuildSnapshot:
        return BuildSnapshot(
            name=b.name,
            base_name=b.base_name,
            template_id=b.template_id,
            build_id=b.build_id,
            status=b.status(now),
            cancelled=b.cancelled_mono is not None,
            cancel_message=b.cancel_message,
            tags=list(b.tags),
            cpu_count=b.cpu_count,
            memory_mb=b.memory_mb,
            request_body=copy.deepcopy(b.request_body),
            start_body=copy.deepcopy(b.start_body),
            requested_at=b.requested_at,
            triggered_at=b.triggered_at,
            finished_at=b.finished_at(),
            log_lines=b.behaviour.log_lines,
            duration=b.behaviour.duration,
        )

    # -- request handling ----------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        """Route one request: faults first, then auth, then the route handler."""
        split = urlsplit(h.path)
        path = split.path
        route, params = "unknown", {}
        for method, name, pattern in _ROUTE_PATTERNS:
            m = pattern.match(path)
            if m and h.command == method:
                route, params = name, {k: unquote(v) for k, v in m.groupdict().items()}
                break

        fault = self._take_fault(route)
        limit = MAX_UPLOAD_BYTES if route == "upload" else MAX_BODY_BYTES
        body = h.read_body(limit)
        if body is None:
            h.close_connection = True
            return self._answer(h, path, route, 413, _error_body(413, "request body too large"))

        if fault is not None:
            if fault.delay and self._stop_event.wait(fault.delay):
                h.close_connection = True
                return  # stopping: drop the request
            if fault.reset:
                h.close_connection = True
                h.server.abort_on_close(h.connection)
                return self._record(h, path, route, 0)
            if fault.status is not None:
                return self._answer_fault(h, path, route, fault)

        try:
            if route != "upload":  # presigned-style upload URLs carry no API key
                self._authenticate(h)
            status, payload = self._dispatch(route, params, split.query, body)
        except _Reply as reply:
            status, payload = reply.status, _error_body(reply.status, reply.message)
        self._answer(h, path, route, status, payload)

    def _take_fault(self, route: str) -> Optional[_Fault]:
        """Consume one use of the oldest pending fault matching ``route``."""
        with self._lock:
            for fault in self._faults:
                if fault.route in ("*", route):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer_fault(self, h: _Handler, path: str, route: str, fault: _Fault) -> None:
        status = int(fault.status)  # type: ignore[arg-type]
        if fault.body is None:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "error"
            payload = _error_body(status, f"emulated {status} {phrase}")
        elif isinstance(fault.body, dict):
            payload = _json(fault.body)
        elif isinstance(fault.body, str):
            payload = fault.body.encode()
        else:
            payload = fault.body
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        self._answer(h, path, route, status, payload, headers)

    def _answer(
        self,
        h: _Handler,
        path: str,
        route: str,
        status: int,
        payload: bytes,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        # Record before writing, so a client that has seen the answer also sees it counted.
        self._record(h, path, route, status)
        h.send(status, payload, headers=headers)

    def _record(self, h: _Handler, path: str, route: str, status: int) -> None:
        with self._lock:
            self._request_count += 1
            self._records.append(_Record(h.command, path, status, route, h.request_version))

    def _authenticate(self, h: _Handler) -> None:
        key = h.headers.get("X-API-KEY")
        with self._lock:
            forbidden = key in self._forbidden
        if forbidden:
            raise _Reply(403, "Forbidden: this API key may not access templates")
        if key is None or key != self.api_key:
            raise _Reply(401, "Invalid API key, please visit https://e2b.dev/docs/api-key")

    def _dispatch(
        self, route: str, params: Dict[str, str], query: str, body: bytes
    ) -> Tuple[int, bytes]:
        if route == "request_build":
            return self._request_build(self._parse_json(body))
        if route == "files":
            return self._file_link(params["tid"], params["hash"])
        if route == "upload":
            return self._upload(params["hash"], body)
        if route == "trigger":
            return self._trigger(params["tid"], params["bid"], self._parse_json(body))
        if route == "status":
            return self._status(params["tid"], params["bid"], parse_qs(query))
        raise _Reply(404, "Not found")

    @staticmethod
    def _parse_json(body: bytes) -> Dict[str, Any]:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            raise _Reply(400, "Invalid JSON body") from None
        if not isinstance(data, dict):
            raise _Reply(400, "Request body must be a JSON object")
        return data

    # -- routes ---------------------------------------------------------------------

    def _request_build(self, req: Dict[str, Any]) -> Tuple[int, bytes]:
        """POST /v3/templates: validate, cancel superseded builds, answer 202."""
        name = req.get("name") or req.get("alias")
        if not isinstance(name, str) or not name:
            raise _Reply(400, "Template name is required")
        base, _, name_tag = name.partition(":")
        if not NAME_RE.match(base):
            raise _Reply(400, f"Invalid template name '{base}': must match ^[a-z0-9-_]+$")
        extra_tags = req.get("tags") or []
        if not isinstance(extra_tags, list) or not all(isinstance(t, str) for t in extra_tags):
            raise _Reply(400, "tags must be a list of strings")
        tags: List[str] = []
        for tag in ([name_tag] if ":" in name else []) + extra_tags:
            if not TAG_RE.match(tag):
                raise _Reply(400, f"Invalid tag '{tag}': must match ^[a-z0-9-_.]+$")
            if tag not in tags:
                tags.append(tag)
        tags = tags or [DEFAULT_TAG]
        cpu = req.get("cpuCount", DEFAULT_CPU)
        if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 1 or cpu > 32 or (cpu != 1 and cpu % 2):
            raise _Reply(400, f"Invalid cpuCount {cpu!r}: must be 1 or an even number up to 32")
        memory = req.get("memoryMB", DEFAULT_MEMORY_MB)
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 128 or memory % 2:
            raise _Reply(400, f"Invalid memoryMB {memory!r}: must be an even number >= 128")

        now, wall = time.monotonic(), time.time()
        build_id = str(uuid.uuid4())
        with self._lock:
            template_id = self._template_ids.setdefault(base, self._new_template_id(base))
            behaviour = self._behaviours.get(name) or self._behaviours.get(base) or self._default
            targets = {(base, t) for t in tags}
            for old in self._builds.values():
                if (
                    old.base_name == base
                    and old.status(now) in ("waiting", "building")
                    and targets & {(base, t) for t in old.tags}
                ):
                    old.cancelled_mono, old.cancelled_at = now, wall
                    old.cancel_message = (
                        f"Build {old.build_id} was cancelled by a newer build "
                        f"({build_id}) of '{name}'"
                    )
            self._builds[build_id] = _Build(
                name=name,
                base_name=base,
                template_id=template_id,
                build_id=build_id,
                tags=tags,
                cpu_count=cpu,
                memory_mb=memory,
                request_body=copy.deepcopy(req),
                behaviour=behaviour,
                requested_at=wall,
                requested_mono=now,
            )
        return 202, _json(
            {
                "templateID": template_id,
                "buildID": build_id,
                "public": False,
                "names": [base],
                "tags": tags,
                "aliases": [base],
            }
        )

    @staticmethod
    def _new_template_id(base: str) -> str:
        # E2B template IDs are 20 lowercase alphanumerics.
        return uuid.uuid5(uuid.NAMESPACE_URL, f"e2b-emulator/{base}").hex[:20]

    def _find_template(self, template_id: str) -> str:
        """Resolve a template ID (or name, as the API also accepts) to its ID."""
        with self._lock:
            if template_id in self._template_ids.values():
                return template_id
            by_name = self._template_ids.get(template_id.split(":", 1)[0])
        if by_name is None:
            raise _Reply(404, f"Template '{template_id}' not found")
        return by_name

    def _find_build(self, template_id: str, build_id: str) -> _Build:
        tid = self._find_template(template_id)
        with self._lock:
            build = self._builds.get(build_id)
        if build is None or build.template_id != tid:
            raise _Reply(404, f"Build '{build_id}' of template '{template_id}' not found")
        return build

    def _file_link(self, template_id: str, files_hash: str) -> Tuple[int, bytes]:
        """GET /templates/{id}/files/{hash}: where to upload, and whether it's cached."""
        self._find_template(template_id)
        with self._lock:
            present = files_hash in self._uploads
        url = f"{self.url}/upload/{quote(files_hash, safe='')}"
        return 201, _json({"present": present, "url": url})

    def _upload(self, files_hash: str, body: bytes) -> Tuple[int, bytes]:
        """PUT /upload/{hash}: store the archive (like a presigned bucket URL)."""
        with self._lock:
            self._uploads[files_hash] = body
            self._upload_counts[files_hash] = self._upload_counts.get(files_hash, 0) + 1
        return 200, b""

    def _trigger(self, template_id: str, build_id: str, start: Dict[str, Any]) -> Tuple[int, bytes]:
        """POST /v2/templates/{id}/builds/{bid}: store the TemplateBuildStartV2, start the clock."""
        build = self._find_build(template_id, build_id)
        if not start.get("fromImage") and not start.get("fromTemplate"):
            raise _Reply(400, "Either fromImage or fromTemplate is required")
        steps = start.get("steps", [])
        if not isinstance(steps, list):
            raise _Reply(400, "steps must be a list")
        with self._lock:
            if build.start_body is not None:
                raise _Reply(400, f"Build '{build_id}' was already started")
            build.start_body = copy.deepcopy(start)
            build.triggered_mono, build.triggered_at = time.monotonic(), time.time()
        return 202, b""

    def _status(self, template_id: str, build_id: str, query: Dict[str, List[str]]) -> Tuple[int, bytes]:
        """GET .../status?logsOffset=N&limit=M: status and a page of log entries."""
        build = self._find_build(template_id, build_id)
        try:
            offset = max(0, int(query.get("logsOffset", ["0"])[0]))
            limit = min(MAX_LOG_PAGE, max(0, int(query.get("limit", [str(MAX_LOG_PAGE)])[0])))
        except ValueError:
            raise _Reply(400, "logsOffset and limit must be integers") from None
        now = time.monotonic()
        with self._lock:  # status and visible logs from the same instant
            status = build.status(now)
            visible = build.visible_logs(now)
            entries = [build.log_entry(i) for i in range(offset, min(visible, offset + limit))]
            info: Dict[str, Any] = {
                "templateID": build.template_id,
                "buildID": build.build_id,
                "status": status,
                "logs": [],
                "logEntries": entries,
            }
            if status == "error":
                if build.cancelled_mono is not None:
                    info["reason"] = {"message": build.cancel_message, "logEntries": []}
                else:
                    tail = [build.log_entry(i) for i in range(max(0, visible - 5), visible)]
                    info["reason"] = {
                        "message": build.failure_message(),
                        "step": build.failed_step,
                        "logEntries": tail,
                    }
        return 200, _json(info)
