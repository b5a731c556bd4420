"""Build on E2B through the public e2b SDK (imported in methods: build paths only).

Builds are requested with ``Template.build_in_background`` and followed with
``Template.get_build_status`` (so a run can stop polling at once on Ctrl-C or
--fail-fast, and a page of log lines is written as one record); channels
are E2B tags moved with ``Template.assign_tags`` and read with
``Template.get_tags``. The SDK retries 429/502/503/504 itself, honouring
``Retry-After``; what it gives up on is classified here: transient
(retried by the runner's policy), a failed build (not retried), credentials
refused (stops the run). An answer the SDK's generated client cannot read
(torn or not JSON, a key missing, a value of the wrong type) is transient
too, like a reset connection: a status poll retries it in place. A build
still running after ``E2B_MATRIX_BUILD_TIMEOUT_S`` fails (E2B may finish it).

Every build carries a tag of this tool's choosing (``fp-`` and the
fingerprint's first 16 hex digits) and the variant's own tags, never none:
a build without tags would move ``default``, the channel a bare alias means.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
from collections.abc import Callable
from typing import Any

from e2b_matrix import render
from e2b_matrix.backends import REGISTRY, ChannelState, LogSink
from e2b_matrix.clock import Clock
from e2b_matrix.errors import BuildError, Cancelled, CredentialsError, MatrixError, SlotsFull, TransientError
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.model import Base, BuildSpec, Check, Outcome, Removal
from e2b_matrix.settings import BUILD_TIMEOUT, DEFAULT_DOMAIN, HOW_TO_LOGIN
from e2b_matrix.verify import CheckResult, VerifyReport, failed, judge, run

PAGE = 100  # log entries E2B returns at most per status call
# Status requests: every POLL_FIRST_S while a build is young (its log arrives live), then less
# often as it ages, to one every POLL_MAX_S: 20 builds of 3 minutes ask about 2,900 times, not 18,000.
POLL_FIRST_S, POLL_YOUNG_S, POLL_MAX_S = 0.2, 10.0, 2.0


def poll_delay(age: float, first: float = POLL_FIRST_S) -> float:
    """The pause before the next status request of a build ``age`` seconds old: ``first`` for its first
    POLL_YOUNG_S seconds, then a tenth of a second more for each second after, up to POLL_MAX_S."""
    if age < POLL_YOUNG_S:
        return first
    return max(first, min(POLL_MAX_S, first + (age - POLL_YOUNG_S) / 10))


# A sandbox lives 15 s unless asked (e2b-dev/infra spec/openapi.yml: NewSandbox.timeout); verify's checks
# (a kernel's start, nexus --version) may take longer. It is killed when they end.
VERIFY_SANDBOX_S = 300


def build_tag(spec: BuildSpec) -> str:
    """The tag every build of this spec is requested with: moves no channel, names the spec."""
    return "fp-" + spec.fingerprint.removeprefix("sha256:")[:16]


class E2BBackend:
    name = "e2b"
    lock_file = REGISTRY[name].lock_file  # the registry line holds what the CLI reads without this module
    regenerate = REGISTRY[name].regenerate
    render_format = REGISTRY[name].render_format
    options = REGISTRY[name].options

    def __init__(
        self, settings, poll_interval: float = POLL_FIRST_S, clock: Clock | None = None, environment: Any = None
    ):
        self.settings = settings
        self.domain = settings.domain
        if environment is not None:  # its own lock, and what the lock's header says to run
            self.lock_file = environment.lock
            self.regenerate = REGISTRY[self.name].regenerate + environment.make_suffix
        self.poll_interval = poll_interval  # the first pause between status requests (poll_delay)
        self.clock = clock or Clock()
        self._key: str | None = None

    # -- what a spec is, here -----------------------------------------------------

    def base(self, params) -> Base:
        return Base("template", params["template"], params["python"])

    def files(self) -> tuple[tuple[str, str], ...]:
        return ()

    def runs(self, check: Check) -> bool:
        return True  # the code interpreter runs stateful cells and shell commands

    def render(self, spec: BuildSpec) -> str:
        return render.to_json(spec)

    def check(self) -> None:
        self._key = self.settings.require_key()

    def staleness(self, entry: LockEntry) -> str | None:
        """An entry built against another endpoint is not what this one would serve: a lock built on
        an emulator (E2B_API_URL) is never fresh for the cloud, nor one from a self-hosted E2B
        (E2B_DOMAIN: sandboxes run there) for another."""
        built_on = entry.domain or DEFAULT_DOMAIN
        changed = [] if built_on == self.domain else [f"domain {built_on} -> {self.domain}"]
        if (entry.api_url or None) != self.settings.api_url:
            changed.append(
                f"API {entry.api_url or f'https://api.{built_on}'} -> "
                f"{self.settings.api_url or f'https://api.{self.domain}'}"
            )
        return "; ".join(changed) or None

    def reference(self, entry: LockEntry) -> str:
        return entry.reference

    def channel_reference(self, entry: LockEntry, channel: str) -> str:
        return f"{entry.alias}:{channel}"

    def _api(self) -> dict[str, Any]:
        """The SDK's connection options, every one explicit: the SDK would otherwise read E2B_API_URL,
        E2B_DOMAIN or E2B_SANDBOX_URL from the process (e2b/connection_config.py, ConnectionConfig), and
        one environment's key could reach another's endpoint."""
        api = {
            "api_key": self._key or self.settings.require_key(),
            "domain": self.domain,
            "api_url": self.settings.api_url or f"https://api.{self.domain}",
        }
        if self.settings.sandbox_url:
            api["sandbox_url"] = self.settings.sandbox_url
        return api

    # -- build -----------------------------------------------------------------

    def shares_in_flight(self) -> bool:
        return False  # E2B runs identical steps of concurrent builds twice (see runner.py: sharing)

    def build(
        self,
        spec: BuildSpec,
        *,
        force: bool,
        log: LogSink,
        cancel: threading.Event,
        progress: Callable[[int], None] | None = None,
    ) -> Outcome:
        from e2b import Template

        if cancel.is_set():
            raise Cancelled("cancelled before it started")
        api = self._api()
        with render.staged(spec) as context, _classify():  # the SDK uploads copied files before it returns
            info = Template.build_in_background(
                render.to_template(spec, context),
                spec.alias,
                tags=[build_tag(spec), *spec.variant.tags],
                cpu_count=spec.variant.cpu_count,
                memory_mb=spec.variant.memory_mb,
                skip_cache=force,
                on_build_logs=lambda entry: log([_line(entry)]),
                **api,
            )
        log([f"build {info.build_id} of template {info.template_id} started"])
        return self._follow(info, log, cancel, LogProgress(progress))

    def _follow(self, info: Any, log: LogSink, cancel: threading.Event, published: LogProgress) -> Outcome:
        """Poll the build's status until it ends (more often while it is young), its log lines to ``log``."""
        from e2b.template.types import TemplateBuildStatus

        started = self.clock.now()
        deadline, offset = started + self.settings.build_timeout, 0
        while True:
            if cancel.is_set():
                raise Cancelled(f"stopped waiting for build {info.build_id} (E2B may still finish it)")
            status = self._status(info, offset, log, cancel)
            entries = status.log_entries
            offset += len(entries)
            if entries:
                log([_line(e) for e in entries])
                for e in entries:
                    published.feed(e.message)
            # Ended, and this page was not full: every log line is in (a full page may have more).
            # E2B reads a build's status before its logs, in one answer (e2b-dev/infra packages/api/
            # internal/handlers/template_build_status.go), so the logs of an ended build are whole.
            if status.status in (TemplateBuildStatus.READY, TemplateBuildStatus.ERROR) and len(entries) < PAGE:
                return self._ended(info, status)
            now = self.clock.now()
            if now >= deadline:
                raise BuildError(
                    f"build {info.build_id} was still {status.status.value} after "
                    f"{self.settings.build_timeout:g}s ({BUILD_TIMEOUT}); E2B may still finish it"
                )
            if len(entries) < PAGE:  # a full page means more is waiting: fetch it at once
                self.clock.wait(cancel, min(poll_delay(now - started, self.poll_interval), deadline - now))

    def _status(self, info: Any, offset: int, log: LogSink, cancel: threading.Event) -> Any:
        """One status answer. A blip is retried in place: submitting again would make E2B supersede
        this (healthy) build of the alias."""
        from e2b import Template

        from e2b_matrix.retry import retrying

        def poll(_attempt: int) -> Any:
            with _classify("build status"):
                return Template.get_build_status(info, logs_offset=offset, **self._api())

        return retrying(
            poll,
            self.settings.retry,
            cancel,
            lambda n, exc, delay: log([f"status check failed ({exc}); retrying in {delay:.1f}s"]),
        )

    def _ended(self, info: Any, status: Any) -> Outcome:
        """The outcome of a build that ended ready; BuildError naming E2B's reason when it failed."""
        from e2b.template.types import TemplateBuildStatus

        if status.status == TemplateBuildStatus.READY:
            return Outcome(
                template_id=info.template_id,
                build_id=info.build_id,
                domain=self.domain,
                api_url=self.settings.api_url or "",
            )
        reason = status.reason
        step = f" at step {reason.step}" if reason and reason.step else ""
        raise BuildError(f"E2B build failed{step}: {reason.message if reason else 'no reason given'}")

    # -- verify ----------------------------------------------------------------

    def verify(self, spec: BuildSpec, built: LockEntry | Outcome, sandbox_factory=None) -> VerifyReport:
        """Every check in one sandbox of the exact build; the sandbox is always killed."""
        checks = [c for c in spec.checks if self.runs(c)]
        if sandbox_factory is None:
            try:
                from e2b_code_interpreter import Sandbox
            except ImportError:
                raise MatrixError(
                    "verifying on E2B needs e2b-code-interpreter: pip install 'e2b-matrix[verify]'"
                ) from None
            sandbox_factory = Sandbox.create
        try:
            with _classify("sandbox"):
                sandbox = sandbox_factory(
                    f"{built.template_id}:{built.build_id}", timeout=VERIFY_SANDBOX_S, **self._api()
                )
        except CredentialsError:  # the key, not this build: one stop for the run, not a failed check per variant
            raise
        except MatrixError as exc:  # E2B said no: every check failed, for one stated reason
            return VerifyReport(failed(c, f"no sandbox: {exc}") for c in checks)
        try:
            return run(checks, lambda c: _cells(sandbox, c) if c.stateful else _shell(sandbox, c))
        finally:
            with contextlib.suppress(Exception):
                sandbox.kill()

    # -- channels ----------------------------------------------------------------

    def point(self, entry: LockEntry, channel: str, build_id: str) -> None:
        from e2b import Template

        with _classify():
            Template.assign_tags(f"{entry.alias}:{build_id}", [channel], **self._api())

    def gone(self, entry: LockEntry, build_id: str) -> str | None:
        """Why build ``build_id`` of the entry's template cannot run (E2B no longer has it, or it is not
        ready), or None: it is there. One status request; any other error is raised as it is."""
        from e2b import Template
        from e2b.template.types import BuildInfo, TemplateBuildStatus

        try:
            with _classify():
                status = Template.get_build_status(
                    BuildInfo(entry.template_id, build_id, entry.alias, entry.alias), logs_offset=0, **self._api()
                )
        except BuildError as exc:
            what = _gone(exc)
            if what is None:
                raise
            return f"{what} {entry.template_id if what == 'template' else build_id} is gone from E2B"
        if status.status != TemplateBuildStatus.READY:
            return f"build {build_id} is {status.status.value} on E2B, not ready"
        return None

    def leftovers(self, lock: Any, defined: set[str]) -> list[Removal]:
        """The templates of aliases the lock records whose variant is gone from variants/ (no request:
        the lock says). E2B deletes only whole templates; a template of a defined variant keeps
        every build, since its history's may be rollback targets."""
        return [
            Removal(
                "e2b template",
                f"{e.alias} ({e.template_id})",
                f"its variant {e.variant} is gone from variants/",
                ref=e.template_id,
                alias=e.alias,
            )
            for e in lock
            if e.alias not in defined
        ]

    def remove(self, ref: str) -> str | None:
        """Delete template ``ref`` on E2B; None when it is gone (or was), else E2B's reason (it refuses
        while sandboxes of it run or are paused: e2b-dev/infra handlers/template_delete.go)."""
        from e2b import Template

        try:
            with _classify():
                Template.delete(ref, **self._api())  # False (404): gone already
        except BuildError as exc:
            return str(exc)
        return None

    def channels(self, entry: LockEntry) -> tuple[list[ChannelState], str | None]:
        """Where E2B's tags of the alias point, and whether the pinned build is gone."""
        from e2b import Template

        try:
            with _classify():
                tags = Template.get_tags(entry.template_id, **self._api())
        except BuildError as exc:
            if _gone(exc) == "template":
                return [], f"template {entry.template_id} is gone"
            raise
        return [ChannelState(t.tag, t.build_id) for t in tags], self.gone(entry, entry.build_id)


class LogProgress:
    """How many leading steps of a running build are in E2B's layer cache, from its log.

    E2B's orchestrator logs each step as it reaches it (``[base] FROM ...``,
    ``[builder i/n] RUN ...``, ``CACHED `` in front when the cache had it), then
    for a step it ran ``Uploading layer: <id>``, and ``Saved: <id>`` once the
    layer is uploaded and its key published: from then on another build hits
    it. These are debug-level messages, not a contract: when they change, no
    step is ever seen as published and a waiting build starts at this one's end.
    ``report(depth)`` hears each new depth d: the base and steps 1..d are published.
    """

    _STEP = re.compile(r"(CACHED )?\[(?:base|builder (\d+)/\d+)\]")

    def __init__(self, report: Callable[[int], None] | None):
        self.report = report
        self.current: int | None = None
        self.layers: dict[str, int] = {}
        self.done: set[int] = set()
        self.depth = -1

    def feed(self, message: str) -> None:
        if self.report is None:
            return
        m = self._STEP.match(message)
        if m:
            self.current = int(m.group(2) or 0)
            if m.group(1):
                self.done.add(self.current)
        elif message.startswith("Uploading layer: ") and self.current is not None:
            self.layers[message.split(": ", 1)[1].strip()] = self.current
        elif message.startswith("Saved: ") and message.split(": ", 1)[1].strip() in self.layers:
            self.done.add(self.layers[message.split(": ", 1)[1].strip()])
        else:
            return
        depth = self.depth
        while depth + 1 in self.done:
            depth += 1
        if depth > self.depth:
            self.depth = depth
            self.report(depth)


def _cells(sandbox, check: Check) -> CheckResult:
    text = ""
    for cell in check.cells:
        execution = sandbox.run_code(cell)
        if execution.error:
            return failed(check, f"{execution.error.name}: {execution.error.value}")
        text = execution.text or ""
    return judge(check, 0, text)


def _shell(sandbox, check: Check) -> CheckResult:
    from e2b.sandbox.commands.command_handle import CommandExitException

    try:
        r = sandbox.commands.run(check.command, user=check.user)
        return judge(check, r.exit_code, (r.stdout or "") + (r.stderr or ""))
    except CommandExitException as exc:
        return judge(check, exc.exit_code, (exc.stdout or "") + (exc.stderr or ""))


# What E2B answers for what it does not have, exactly (any other 400 or 404 is not "gone"):
# an unknown build's status is 400 "Build '<id>' not found", a build ID that is no UUID 400
# "Invalid build id" (e2b-dev/infra packages/api/internal/handlers/template_build_status.go);
# an unknown template's tags 404 "template '<id>' not found" (packages/api/internal/cache/
# templates/errors.go, ToAPIError). The SDK raises them as "<status>: <message>".
_GONE = {
    "build": re.compile(r"400: (Build '[0-9a-fA-F-]+' not found|Invalid build id)"),
    "template": re.compile(r"404: template '[^']*' not found"),
}


def _gone(exc: Exception) -> str | None:
    """ "build" or "template" when ``exc`` is E2B saying it has no such build or template; else None."""
    message = str(exc)
    return next((what for what, pattern in _GONE.items() if pattern.fullmatch(message)), None)


# E2B's 429 when the team's concurrent builds are all taken (its limit counted at the build
# request): e2b-dev/infra packages/api/internal/template/register_build.go, message from
# packages/shared/pkg/apierrors/apierrors.go. Only this 429 says "wait for a build to end".
TEAM_LIMIT = re.compile(r"maximum number of concurrent template builds")


class _classify:
    """Turn SDK and transport exceptions into ours (a context manager); ``what`` names the answer awaited."""

    def __init__(self, what: str = ""):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (MatrixError, KeyboardInterrupt)) or not isinstance(exc, Exception):
            return False
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
    import json

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


def _status_of(exc, message: str) -> int | None:
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


def _is_network(exc) -> bool:
    import socket

    import httpx

    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS


def _line(entry) -> str:
    ts = getattr(entry, "timestamp", None)
    stamp = ts.strftime("%H:%M:%S") if hasattr(ts, "strftime") else ""
    level = getattr(entry, "level", "info")
    return f"{stamp} {level:<5} {getattr(entry, 'message', entry)}".strip()
