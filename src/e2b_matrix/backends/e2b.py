"""Build on E2B through the real SDK (imported here, on build paths only).

The SDK's own transport retries a few 429/5xx answers; above it this backend
classifies what is left: transient (retried by build.py's policy), a failed
build (not retried), credentials refused (stops the run). It drives the
build itself (submit, then poll status pages) so that a run can stop
polling at once on Ctrl-C or --fail-fast, and so a page of log lines is
written as one record.
"""

from __future__ import annotations

import threading

from e2b_matrix.backends import BuildError, Cancelled, LogSink, Outcome, TransientError
from e2b_matrix.credentials import HOW_TO_LOGIN, api_key, domain
from e2b_matrix.errors import CredentialsError
from e2b_matrix.model import BuildSpec


class E2BBackend:
    name = "e2b"
    lock_header = "make build-all"

    def __init__(self, api_key: str | None = None, domain_name: str | None = None,
                 poll_interval: float = 0.2, request_timeout: float | None = None):
        self.api_key = api_key
        self.domain = domain_name or domain()
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout

    def secrets(self) -> list[str]:
        return [self.api_key] if self.api_key else []

    def check(self) -> None:
        if not self.api_key:
            self.api_key = api_key()
        if not self.api_key:
            raise CredentialsError(f"no E2B API key: {HOW_TO_LOGIN}")

    def is_current(self, spec: BuildSpec, entry) -> bool:
        return True  # E2B keeps a template until it is deleted

    # -- one build -------------------------------------------------------------

    def _client(self):
        from e2b.api import ApiClient
        from e2b.api.client_sync import get_transport
        from e2b.connection_config import ConnectionConfig
        from e2b.retry import RetryableTransport

        config = ConnectionConfig(api_key=self.api_key, domain=self.domain,
                                  request_timeout=self.request_timeout)
        recorder = _recorder_class()(RetryableTransport(get_transport(config), config.retries))
        return ApiClient(config, transport=recorder), recorder

    def build(self, spec: BuildSpec, *, force: bool, log: LogSink, cancel: threading.Event,
              retry=None) -> Outcome:
        from e2b import Template
        from e2b.template.types import TemplateBuildStatus
        from e2b.template_sync.build_api import get_build_status

        from e2b_matrix.render import to_template
        from e2b_matrix.retry import RetryPolicy, retrying

        client, recorder = self._client()
        template = to_template(spec)
        if cancel.is_set():
            raise Cancelled("cancelled before it started")

        def sdk_log(entry) -> None:
            log([_line(entry)])

        with _classify(recorder):
            info = Template._build(client, template, spec.alias, tags=list(spec.variant.tags) or None,
                                   cpu_count=spec.variant.cpu_count, memory_mb=spec.variant.memory_mb,
                                   skip_cache=force, on_build_logs=sdk_log)
        log([f"build {info.build_id} of template {info.template_id} started"])
        offset = 0
        while True:
            if cancel.is_set():
                raise Cancelled(f"stopped waiting for build {info.build_id} (E2B may still finish it)")
            def poll(_attempt: int):
                with _classify(recorder):
                    return get_build_status(client, info.template_id, info.build_id, offset)

            # A blip while polling is retried in place: submitting again would
            # make E2B cancel this (healthy) build of the alias.
            status = retrying(poll, retry or RetryPolicy(), cancel, lambda n, exc, delay: log(
                [f"status check failed ({exc}); retrying in {delay:.1f}s"]))
            entries = status.log_entries
            offset += len(entries)
            if entries:
                log([_line(e) for e in entries])
            if status.status in (TemplateBuildStatus.READY, TemplateBuildStatus.ERROR) and not entries:
                if status.status == TemplateBuildStatus.READY:
                    return Outcome(template_id=info.template_id, build_id=info.build_id, domain=self.domain)
                reason = status.reason
                step = f" at step {reason.step}" if reason and reason.step else ""
                raise BuildError(f"E2B build failed{step}: {reason.message if reason else 'no reason given'}")
            if len(entries) < 100:  # a full page means more is waiting: fetch it at once
                cancel.wait(self.poll_interval)


class _classify:
    """Turn SDK and transport exceptions into ours (context manager)."""

    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        self.recorder.last_retry_after = None
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (BuildError, TransientError, Cancelled, CredentialsError)):
            return False
        from e2b.exceptions import AuthenticationException, RateLimitException, ServiceBusyException

        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        status = _status_of(exc, message)
        if isinstance(exc, AuthenticationException) or status in (401, 403):
            raise CredentialsError(f"E2B refused the API key ({status or 401}): {HOW_TO_LOGIN}") from None
        if isinstance(exc, (RateLimitException, ServiceBusyException)) or (status and (status == 429 or
                                                                                     status >= 500)):
            raise TransientError(message, self.recorder.last_retry_after) from None
        if status == 408 or _is_network(exc):
            raise TransientError(f"{type(exc).__name__}: {message}") from None
        raise BuildError(message) from None


def _status_of(exc, message: str) -> int | None:
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    head = message.split(":", 1)[0].strip()
    return int(head) if head.isdigit() and len(head) == 3 else None


def _is_network(exc) -> bool:
    import httpx

    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError, OSError))


def _line(entry) -> str:
    ts = getattr(entry, "timestamp", None)
    stamp = ts.strftime("%H:%M:%S") if hasattr(ts, "strftime") else ""
    level = getattr(entry, "level", "info")
    return f"{stamp} {level:<5} {getattr(entry, 'message', entry)}".strip()


def _recorder_class():
    import httpx

    class RetryAfterRecorder(httpx.BaseTransport):
        """Wraps the SDK's transport; remembers the last Retry-After it saw."""

        def __init__(self, inner):
            self.inner = inner
            self.last_retry_after: float | None = None

        def handle_request(self, request):
            response = self.inner.handle_request(request)
            if response.status_code in (429, 503):
                value = response.headers.get("Retry-After", "")
                if value.strip().isdigit():
                    self.last_retry_after = float(value)
            return response

        def close(self) -> None:
            self.inner.close()

    return RetryAfterRecorder
