"""Build on E2B through the public e2b SDK (imported in methods: build paths only).

Builds are requested with ``Template.build_in_background`` and followed with
``Template.get_build_status`` (so a run can stop polling at once on Ctrl-C or
--fail-fast, and a page of log lines is written as one record). What the SDK
raises is classified in e2b_sdk.py; a status poll retries a transient answer in
place. A build still running after ``E2B_MATRIX_BUILD_TIMEOUT_S`` fails (E2B may
finish it). Channels (E2B tags) and deleting templates: e2b_templates.py.

Every build carries a tag of this tool's choosing (``fp-`` and the
fingerprint's first 16 hex digits) and the variant's own tags, never none:
a build without tags would move ``default``, the channel a bare alias means.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from e2b_matrix import render
from e2b_matrix.backends import REGISTRY, ChannelState, LogSink
from e2b_matrix.backends.e2b_sdk import classify, connection
from e2b_matrix.backends.e2b_templates import E2BTemplates
from e2b_matrix.clock import Clock
from e2b_matrix.errors import BuildError, Cancelled, CredentialsError, MatrixError
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.model import Base, BuildSpec, Check, Outcome, Removal
from e2b_matrix.retry import retrying
from e2b_matrix.settings import BUILD_TIMEOUT, DEFAULT_DOMAIN
from e2b_matrix.verify import CheckResult, VerifyReport, failed, judge, run

if TYPE_CHECKING:
    from e2b.connection_config import ApiParams
    from e2b.template.logger import LogEntry
    from e2b.template.types import BuildInfo, TemplateBuildStatusResponse
    from e2b_code_interpreter import Sandbox

    from e2b_matrix.environments import Environment
    from e2b_matrix.lock import TemplateLock
    from e2b_matrix.settings import Settings

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
        self,
        settings: Settings,
        clock: Clock | None = None,
        environment: Environment | None = None,
    ):
        self.settings = settings
        self.domain = settings.domain
        if environment is not None:  # its own lock, and what the lock's header says to run
            self.lock_file = environment.lock
            self.regenerate = REGISTRY[self.name].regenerate + environment.make_suffix
        self.clock = clock or Clock()
        self.templates = E2BTemplates(self._api)  # channels and prune: what exists on E2B
        self._key: str | None = None

    # -- what a spec is, here -----------------------------------------------------

    def base(self, params: Mapping[str, Any]) -> Base:
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

    def _api(self) -> ApiParams:
        """The SDK's connection options (e2b_sdk.connection), with the key ``check`` found."""
        return connection(self.settings, self._key or self.settings.require_key())

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
        with render.staged(spec) as context, classify():  # the SDK uploads copied files before it returns
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

    def _follow(self, info: BuildInfo, log: LogSink, cancel: threading.Event, published: LogProgress) -> Outcome:
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
                self.clock.wait(cancel, min(poll_delay(now - started), deadline - now))

    def _status(
        self, info: BuildInfo, offset: int, log: LogSink, cancel: threading.Event
    ) -> TemplateBuildStatusResponse:
        """One status answer. A blip is retried in place: submitting again would make E2B supersede
        this (healthy) build of the alias."""
        from e2b import Template

        def poll(_attempt: int) -> TemplateBuildStatusResponse:
            with classify("build status"):
                status: TemplateBuildStatusResponse = Template.get_build_status(info, logs_offset=offset, **self._api())
                return status

        return retrying(
            poll,
            self.settings.retry,
            cancel,
            self.clock,
            lambda n, exc, delay: log([f"status check failed ({exc}); retrying in {delay:.1f}s"]),
        )

    def _ended(self, info: BuildInfo, status: TemplateBuildStatusResponse) -> Outcome:
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

    def verify(self, spec: BuildSpec, built: LockEntry | Outcome) -> VerifyReport:
        """Every check in one sandbox of the exact build; the sandbox is always killed."""
        checks = [c for c in spec.checks if self.runs(c)]
        try:
            sandbox = _sandbox(f"{built.template_id}:{built.build_id}", self._api())
        except CredentialsError:  # the key, not this build: one stop for the run, not a failed check per variant
            raise
        except MatrixError as exc:  # E2B said no: every check failed, for one stated reason
            return VerifyReport(failed(c, f"no sandbox: {exc}") for c in checks)
        try:
            return run(checks, lambda c: _cells(sandbox, c) if c.stateful else _shell(sandbox, c))
        finally:
            with contextlib.suppress(Exception):
                sandbox.kill()

    # -- channels and prune: what exists on E2B (e2b_templates.py) -------------------

    def point(self, entry: LockEntry, channel: str, build_id: str) -> None:
        self.templates.point(entry, channel, build_id)

    def gone(self, entry: LockEntry, build_id: str) -> str | None:
        return self.templates.gone(entry, build_id)

    def channels(self, entry: LockEntry) -> tuple[list[ChannelState], str | None]:
        return self.templates.channels(entry)

    def leftovers(self, lock: TemplateLock, defined: set[str]) -> list[Removal]:
        return self.templates.leftovers(lock, defined)

    def remove(self, ref: str) -> str | None:
        return self.templates.remove(ref)


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


def _sandbox(template: str, api: ApiParams) -> Sandbox:
    """A sandbox of ``template`` (``<id>:<build>``: the exact build) with the code interpreter, for verify."""
    try:
        from e2b_code_interpreter import Sandbox
    except ImportError:
        raise MatrixError("verifying on E2B needs e2b-code-interpreter: pip install 'e2b-matrix[verify]'") from None
    with classify("sandbox"):
        return Sandbox.create(template, timeout=VERIFY_SANDBOX_S, **api)


def _cells(sandbox: Sandbox, check: Check) -> CheckResult:
    text = ""
    for cell in check.cells:
        execution = sandbox.run_code(cell)
        if execution.error:
            return failed(check, f"{execution.error.name}: {execution.error.value}")
        text = execution.text or ""
    return judge(check, 0, text)


def _shell(sandbox: Sandbox, check: Check) -> CheckResult:
    from e2b.sandbox.commands.command_handle import CommandExitException

    assert check.command is not None, "a check without cells runs a command (model.Check)"
    try:
        r = sandbox.commands.run(check.command, user=check.user)
        return judge(check, r.exit_code, (r.stdout or "") + (r.stderr or ""))
    except CommandExitException as exc:
        return judge(check, exc.exit_code, (exc.stdout or "") + (exc.stderr or ""))


def _line(entry: LogEntry) -> str:
    return f"{entry.timestamp.strftime('%H:%M:%S')} {entry.level:<5} {entry.message}".strip()
