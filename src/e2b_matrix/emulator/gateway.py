"""What stands in front of the emulated API: injected faults, the request log, and the API key check.

Faults apply before authentication, like a gateway in front of the API; every
answered request is recorded (a reset connection with status 0), with the key it
carried; the one team's key is the only one accepted (E2B's 401 and 403 bodies).
Standard library only.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

from e2b_matrix.emulator.rules import MAX_REQUEST_RECORDS, ROUTES, Reply, error_body, json_bytes


@dataclass(frozen=True)
class Fault:
    """How the next ``remaining`` requests to ``route`` (one of :data:`ROUTES`, or ``"*"``) misbehave.

    - ``status=429`` (or 500/502/503/504/...): answer with that status and
      an E2B error body (or ``body``), plus ``Retry-After`` if given;
    - ``reset=True``: read the request, then close the connection with a
      TCP reset and no answer (recorded with status 0);
    - ``delay=seconds``: wait before answering; alone, the request is then
      handled normally, combined with ``status``/``reset`` that fault follows;
    - ``truncate=True``: handle the request, then send only the first half
      of the real answer's body, with a Content-Length that matches (a
      proxy that cut it: a complete HTTP answer whose JSON is torn);
    - ``reshape=f``: handle the request, then send ``f(answer)`` as the JSON
      body of a successful answer, same status (a wrong-shaped answer: drop
      a key, change a type); error answers pass unchanged.
    """

    route: str
    remaining: int
    status: int | None = None
    retry_after: int | str | None = None
    body: dict[str, Any] | str | bytes | None = None
    reset: bool = False
    delay: float | None = None
    truncate: bool = False
    reshape: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.route != "*" and self.route not in ROUTES:
            raise ValueError(f"unknown route {self.route!r}; expected one of {ROUTES} or '*'")
        if self.remaining < 1:
            raise ValueError("count must be >= 1")
        if (self.status, self.delay, self.reshape) == (None, None, None) and not self.reset and not self.truncate:
            raise ValueError("inject needs status=, reset=True, delay=, truncate=True or reshape=")
        if sum((self.status is not None, self.reset, self.truncate, self.reshape is not None)) > 1:
            raise ValueError("status=, reset=True, truncate=True and reshape= are exclusive")

    def answer(self) -> tuple[int, bytes, dict[str, str]]:
        """The status, body and headers of this fault's answer (it has a ``status``)."""
        assert self.status is not None
        status = int(self.status)
        if self.body is None:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "error"
            payload = error_body(status, f"emulated {status} {phrase}")
        elif isinstance(self.body, dict):
            payload = json_bytes(self.body)
        elif isinstance(self.body, str):
            payload = self.body.encode()
        else:
            payload = self.body
        return status, payload, {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class Faults:
    """The pending faults, consumed in the order they were injected."""

    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._pending.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def take(self, route: str) -> Fault | None:
        """Consume one use of the oldest pending fault matching ``route``."""
        with self._lock:
            for i, fault in enumerate(self._pending):
                if fault.route in ("*", route):
                    if fault.remaining > 1:
                        self._pending[i] = replace(fault, remaining=fault.remaining - 1)
                    else:
                        del self._pending[i]
                    return fault
        return None

    @property
    def pending(self) -> int:
        """How many fault answers remain to be consumed."""
        with self._lock:
            return sum(f.remaining for f in self._pending)


@dataclass(frozen=True)
class Record:
    """One answered request."""

    method: str
    path: str
    status: int  # 0 when the connection was reset without an answer
    route: str
    http_version: str
    api_key: str | None = None  # the X-API-KEY it carried (an environment's key must reach only its own E2B)


class RequestLog:
    """The last MAX_REQUEST_RECORDS answered requests, and how many were answered."""

    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._records: deque[Record] = deque(maxlen=MAX_REQUEST_RECORDS)
        self._total = 0

    def record(self, record: Record) -> None:
        with self._lock:
            self._total += 1
            self._records.append(record)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._total = 0

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def count(self, route: str | None = None, status: int | None = None) -> int:
        """Requests recorded for ``route`` and/or ``status``."""
        with self._lock:
            return sum(
                1
                for r in self._records
                if (route is None or r.route == route) and (status is None or r.status == status)
            )


class Auth:
    """The one team's API key (others: 401) and the keys answered 403."""

    def __init__(self, lock: threading.RLock, api_key: str, forbidden: tuple[str, ...]):
        self._lock = lock
        self.api_key = api_key
        self._forbidden = set(forbidden)

    def forbid(self, key: str) -> None:
        with self._lock:
            self._forbidden.add(key)

    def check(self, key: str | None) -> None:
        """Reply 403 for a forbidden key, 401 for any but the team's."""
        with self._lock:
            forbidden = key in self._forbidden
        if forbidden:
            raise Reply(403, "Forbidden: this API key may not access templates")
        if key is None or key != self.api_key:
            raise Reply(401, "Invalid API key, please visit https://e2b.dev/docs/api-key")
