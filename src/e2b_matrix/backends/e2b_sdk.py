"""Where this package meets the e2b SDK: the options every call takes, and what the SDK raises, in our errors.

The SDK retries 429/502/503/504 itself, honouring ``Retry-After``; what it gives
up on is classified here (``classify``): transient (retried by the runner's
policy), a failed build (not retried), credentials refused (stops the run), the
team's builds all taken (``SlotsFull``). An answer the SDK's generated client
cannot read (torn or not JSON, a key missing, a value of the wrong type) is
transient too, like a reset connection. The SDK itself is imported only when an
exception is classified: importing it costs about a second.
"""

from __future__ import annotations

import errno
import json
import os
import re
from types import TracebackType
from typing import TYPE_CHECKING

from e2b_matrix.errors import BuildError, CredentialsError, MatrixError, SlotsFull, TransientError
from e2b_matrix.settings import HOW_TO_LOGIN

if TYPE_CHECKING:
    from e2b.connection_config import ApiParams

    from e2b_matrix.settings import Settings


def connection(settings: Settings, key: str) -> ApiParams:
    """The SDK's connection options, every one explicit: the SDK would otherwise read E2B_API_URL,
    E2B_DOMAIN or E2B_SANDBOX_URL from the process (e2b/connection_config.py, ConnectionConfig), and
    one environment's key could reach another's endpoint."""
    api: ApiParams = {
        "api_key": key,
        "domain": settings.domain,
        "api_url": settings.api_url or f"https://api.{settings.domain}",
    }
    if settings.sandbox_url:
        api["sandbox_url"] = settings.sandbox_url
    return api


# What E2B answers for what it does not have, exactly (any other 400 or 404 is not "gone"):
# an unknown build's status is 400 "Build '<id>' not found", a build ID that is no UUID 400
# "Invalid build id" (e2b-dev/infra packages/api/internal/handlers/template_build_status.go);
# an unknown template's tags 404 "template '<id>' not found" (packages/api/internal/cache/
# templates/errors.go, ToAPIError). The SDK raises them as "<status>: <message>".
_GONE = {
    "build": re.compile(r"400: (Build '[0-9a-fA-F-]+' not found|Invalid build id)"),
    "template": re.compile(r"404: template '[^']*' not found"),
}


def gone(exc: Exception) -> str | None:
    """ "build" or "template" when ``exc`` is E2B saying it has no such build or template; else None."""
    message = str(exc)
    return next((what for what, pattern in _GONE.items() if pattern.fullmatch(message)), None)


# E2B's 429 when the team's concurrent builds are all taken (its limit counted at the build
# request): e2b-dev/infra packages/api/internal/template/register_build.go, message from
# packages/shared/pkg/apierrors/apierrors.go. Only this 429 says "wait for a build to end".
TEAM_LIMIT = re.compile(r"maximum number of concurrent template builds")


class classify:
    """Turn SDK and transport exceptions into ours (a context manager); ``what`` names the answer awaited."""

    def __init__(self, what: str = ""):
        self.what = what

    def __enter__(self) -> classify:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or isinstance(exc, MatrixError) or not isinstance(exc, Exception):
            return
        from e2b.exceptions import AuthenticationException, RateLimitException

        unreadable = _unreadable(exc)
        if unreadable:
            raise TransientError(
                f"E2B sent a malformed {self.what + ' ' if self.what else ''}answer ({unreadable})"
            ) from None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        status = _status_of(exc, message)
        if isinstance(exc, AuthenticationException) or status in (401, 403):
            raise CredentialsError(f"E2B refused the API key ({status or 401}): {HOW_TO_LOGIN}") from None
        if TEAM_LIMIT.search(message):
            raise SlotsFull(message) from None
        if (
            isinstance(exc, RateLimitException)
            or type(exc).__name__ == "ServiceBusyException"
            or (status is not None and (status == 429 or status >= 500))
        ):
            raise TransientError(message) from None
        if status == 408 or _is_network(exc):
            raise TransientError(f"{type(exc).__name__}: {message}") from None
        raise BuildError(message) from None


def _unreadable(exc: BaseException) -> str | None:
    """What was wrong with an answer the SDK could not read, or None (then ``exc`` is something else).

    Such an answer is worth asking again, like a reset connection (TransientError).

    The SDK reads a body with httpx's ``Response.json`` (JSONDecodeError for a
    torn or non-JSON body, RecursionError for one nested too deep), then its
    generated models' ``from_dict`` (KeyError for a missing key, TypeError or
    ValueError for a value of the wrong type or an unknown enum value), then
    maps the models to its own types (``_map_log_entry``: a message that is not
    a string). Only those errors, raised there, are a malformed answer; the same
    types raised anywhere else are not.
    """
    if not isinstance(exc, (KeyError, TypeError, ValueError, RecursionError)) or not _raised_reading(exc):
        return None
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}" if exc.args else "a key is missing"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _raised_reading(exc: BaseException) -> bool:
    """Was ``exc`` raised while the SDK read an answer: in httpx's ``Response.json``, or in a
    ``from_dict`` or ``_map_*`` function of the e2b package?"""
    import e2b

    sdk = os.path.dirname(e2b.__file__) + os.sep
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith(sdk) and (code.co_name == "from_dict" or code.co_name.startswith("_map_")):
            return True
        if code.co_name == "json" and code.co_filename.endswith(os.path.join("httpx", "_models.py")):
            return True
        tb = tb.tb_next
    return False


def _status_of(exc: Exception, message: str) -> int | None:
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    head = message.split(":", 1)[0].strip()
    return int(head) if head.isdigit() and len(head) == 3 else None


# What a network fault raises as an OSError: worth another attempt. Any other OSError (a file
# the SDK could not read, a full disk) is not, and fails the build at once.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENETRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
    }
)


def _is_network(exc: Exception) -> bool:
    import socket  # with httpx, only for a request that failed: resolve imports this module (socket: ~3 ms)

    import httpx

    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
