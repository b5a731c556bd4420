"""The HTTP/1.1 server both of the emulator's endpoints run on (the API and the sandbox proxy).

A ThreadingHTTPServer on 127.0.0.1 that tracks its connections (so stopping it
closes idle keep-alive connections and joins every thread) and a handler that
reads whole bodies (Content-Length or chunked) and answers either whole or as a
chunked stream (Connect server streams, the code interpreter's JSON lines).
Standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer on 127.0.0.1 that tracks its connection threads; ``handle`` answers
    each request (it is given the :class:`Handler`).

    Tracking lets :meth:`close_all_connections` close idle keep-alive connections
    (the SDK pools them for minutes) and join every thread it started.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, handle: Callable[[Handler], None], name: str = "e2b-emulator"):
        self.handle = handle
        self.name = name
        self._conn_lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._aborted: set[int] = set()  # ids of sockets to close with RST
        self.connection_count = 0
        super().__init__(("127.0.0.1", 0), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve each connection on its own tracked thread."""
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"{self.name}-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._connections[thread] = request
            self.connection_count += 1
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a client going away mid-request is not our failure
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

    def shutdown_request(self, request: Any) -> None:
        """Close a connection: gracefully, or with a reset if it was aborted."""
        with self._conn_lock:
            aborted = id(request) in self._aborted
            self._aborted.discard(id(request))
        if aborted:
            with contextlib.suppress(OSError):
                request.close()
        else:
            super().shutdown_request(request)

    def close_all_connections(self, timeout: float) -> None:
        """Wake every connection thread by shutting its socket down, then join them."""
        with self._conn_lock:
            items = list(self._connections.items())
        for _, sock in items:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread, _ in items:
            thread.join(max(0.0, deadline - time.monotonic()))


class Handler(BaseHTTPRequestHandler):
    """Parses one HTTP/1.1 request at a time and hands it to the server's ``handle``."""

    protocol_version = "HTTP/1.1"
    server_version = "e2b-emulator/1.0"
    # TCP_NODELAY (socketserver's own switch): the headers and the body leave in two writes, and
    # with Nagle the body waits for the client's delayed ACK, 40 ms on every response on Linux.
    disable_nagle_algorithm = True
    server: Server

    def do_GET(self) -> None:
        self.server.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr logging."""

    # -- helpers used by the emulator -----------------------------------------

    def read_body(self, limit: int) -> bytes | None:
        """Read the whole request body (Content-Length or chunked); None if over ``limit``."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
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
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with a complete response carrying an exact Content-Length (none on 204)."""
        self.send_response(status)
        if body and content_type:
            self.send_header("Content-Type", content_type)
        if status not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):  # RFC 9110 8.6
            self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def start_stream(self, status: int, content_type: str, headers: dict[str, str] | None = None) -> None:
        """Begin an answer whose body follows in :meth:`write_chunk` calls (chunked encoding)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        """Send one piece of a streamed body at once; OSError when the client went away."""
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def end_stream(self) -> None:
        """End a streamed body (the last, empty chunk)."""
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Endpoint:
    """A :class:`Server` serving on its own thread, from its creation until :meth:`stop`."""

    def __init__(self, handle: Callable[[Handler], None], name: str):
        self.server = Server(handle, name)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self, timeout: float) -> None:
        """Stop serving, close every open connection and join their threads."""
        self.server.shutdown()
        self._thread.join(timeout)
        self.server.close_all_connections(timeout)
        self.server.server_close()
