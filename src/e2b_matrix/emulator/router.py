"""The API's HTTP side: each request matched to its route, through the gateway, to its handler.

A request is matched to one of E2B's routes (:data:`~e2b_matrix.emulator.rules.ROUTE_PATTERNS`),
meets an injected fault if one is pending, is authenticated (except the upload, whose
presigned-style link carries no key), runs in its route handler and is recorded before
its answer is written (a client that has seen the answer also sees it counted).
Errors answer with E2B's body ``{"code": <status>, "message": "..."}``.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from e2b_matrix import files
from e2b_matrix.emulator.build_routes import BuildRoutes
from e2b_matrix.emulator.gateway import Auth, Fault, Faults, Record, RequestLog
from e2b_matrix.emulator.http import Handler
from e2b_matrix.emulator.rules import MAX_BODY_BYTES, MAX_UPLOAD_BYTES, ROUTE_PATTERNS, Reply, error_body, json_bytes
from e2b_matrix.emulator.sandbox_api import SandboxRoutes
from e2b_matrix.emulator.store import Store
from e2b_matrix.emulator.template_routes import TemplateRoutes


class Router:
    """Routes each request of the API's server; ``stopping`` is set when the emulator stops
    (a delayed answer is then dropped)."""

    def __init__(
        self,
        store: Store,
        *,
        faults: Faults,
        log: RequestLog,
        auth: Auth,
        builds: BuildRoutes,
        templates: TemplateRoutes,
        sandboxes: SandboxRoutes,
        stopping: threading.Event,
    ) -> None:
        self._store, self._faults, self._log, self._auth = store, faults, log, auth
        self._builds, self._templates, self._sandboxes = builds, templates, sandboxes
        self._stopping = stopping

    def handle(self, h: Handler) -> None:
        """Route one request: faults first, then auth, then the route handler."""
        split = urlsplit(h.path)
        route, params = _match(h.command, split.path)
        fault = self._faults.take(route)
        body = h.read_body(MAX_UPLOAD_BYTES if route == "upload" else MAX_BODY_BYTES)
        if body is None:
            h.close_connection = True
            return self._answer(h, split.path, route, 413, error_body(413, "request body too large"))
        if fault is not None and self._misbehave(h, split.path, route, fault):
            return None
        try:
            if route != "upload":  # presigned-style upload URLs carry no API key
                self._auth.check(h.headers.get("X-API-KEY"))
            status, payload = self._dispatch(route, params, split.query, body)
        except Reply as reply:
            status, payload = reply.status, error_body(reply.status, reply.message)
        if fault is not None and fault.truncate:
            payload = payload[: len(payload) // 2]
        elif fault is not None and fault.reshape is not None and 200 <= status < 300 and payload:
            payload = json_bytes(fault.reshape(files.parse_json(payload)))
        self._answer(h, split.path, route, status, payload)

    def _misbehave(self, h: Handler, path: str, route: str, fault: Fault) -> bool:
        """Apply a fault's delay, reset or status; True when that answered (or dropped) the request."""
        if fault.delay and self._stopping.wait(fault.delay):
            h.close_connection = True
            return True  # stopping: drop the request
        if fault.reset:
            h.close_connection = True
            h.server.abort_on_close(h.connection)
            self._record(h, path, route, 0)
            return True
        if fault.status is not None:
            self._answer(h, path, route, *fault.answer())
            return True
        return False

    def _answer(
        self, h: Handler, path: str, route: str, status: int, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        # Record before writing, so a client that has seen the answer also sees it counted.
        self._record(h, path, route, status)
        h.send(status, payload, headers=headers)

    def _record(self, h: Handler, path: str, route: str, status: int) -> None:
        self._log.record(Record(h.command, path, status, route, h.request_version, h.headers.get("X-API-KEY")))

    def _dispatch(self, route: str, params: dict[str, str], query: str, body: bytes) -> tuple[int, bytes]:
        if route == "upload":
            return self._builds.upload(params["hash"], body)
        if route == "create_sandbox":  # these take the lock themselves: a container starts or stops meanwhile
            return self._sandboxes.create(_parse_json(body))
        if route == "kill_sandbox":
            return self._sandboxes.kill(params["sid"])
        if route == "connect_sandbox":
            return self._sandboxes.connect(params["sid"], _parse_json(body or b"{}"))
        now = self._store.clock()
        with self._store.lock:  # every other route sees (and changes) the state at one instant
            return self._dispatch_locked(route, params, query, body, now)

    def _dispatch_locked(
        self, route: str, params: dict[str, str], query: str, body: bytes, now: float
    ) -> tuple[int, bytes]:
        builds, templates = self._builds, self._templates
        if route == "request_build":
            return builds.request_build(_parse_json(body), now)
        if route == "files":
            return builds.file_link(params["tid"], params["hash"])
        if route == "trigger":
            return builds.trigger(params["tid"], params["bid"], _parse_json(body), now)
        if route == "status":
            return builds.status(params["tid"], params["bid"], parse_qs(query), now)
        if route == "assign_tags":
            return templates.assign_tags(_parse_json(body), now)
        if route == "remove_tags":
            return templates.remove_tags(_parse_json(body))
        if route == "get_tags":
            return templates.get_tags(params["tid"])
        if route == "alias":
            return templates.alias(params["alias"], now)
        if route == "delete_template":
            return templates.delete_template(params["tid"])
        raise Reply(404, "Not found")


def _match(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The route of a request and its path parameters (``unknown`` when none matches)."""
    for route_method, name, pattern in ROUTE_PATTERNS:
        m = pattern.match(path)
        if m and method == route_method:
            return name, {k: unquote(v) for k, v in m.groupdict().items()}
    return "unknown", {}


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = files.parse_json(body or b"null")
    except ValueError:
        raise Reply(400, "Invalid request body: invalid JSON") from None
    if not isinstance(data, dict):
        raise Reply(400, "Invalid request body: expected a JSON object")
    return data
