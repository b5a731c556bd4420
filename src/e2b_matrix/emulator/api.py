"""An in-process emulator of E2B's API, for tests and benchmarks.

E2B's cloud cannot be reached from the test machine, so tests point the *real*
``e2b`` SDK at this server through ``E2B_API_URL`` (or ``api_url=``).  Every
route, status code and JSON field name follows the SDK's generated client
(``e2b/api/client/api/*``, ``e2b/api/client/models``) and the behaviour follows
E2B's API server and orchestrator (repository e2b-dev/infra; paths below are
in it)::

    POST   /v3/templates                                 -> 202 TemplateRequestResponseV3
    GET    /templates/{templateID}/files/{hash}          -> 201 TemplateBuildFileUpload
    PUT    /upload/{hash}             (the upload "url") -> 200
    POST   /v2/templates/{templateID}/builds/{buildID}   -> 202 (TemplateBuildStartV2 body)
    GET    /templates/{templateID}/builds/{buildID}/status?logsOffset=N&limit=M
                                                         -> 200 TemplateBuildInfo
    POST   /templates/tags        {target, tags}         -> 201 AssignedTemplateTags
    DELETE /templates/tags        {name, tags}           -> 204
    GET    /templates/{templateID}/tags                  -> 200 [TemplateTag]
    GET    /templates/aliases/{alias}                    -> 200 TemplateAliasResponse
    POST   /v2/sandboxes          {templateID, ...}      -> 201 Sandbox
    POST   /v2/sandboxes/{sandboxID}/connect {timeout}   -> 200 Sandbox
    DELETE /sandboxes/{sandboxID}                        -> 204

Errors carry E2B's body ``{"code": <status>, "message": "..."}``, which
``e2b.api.handle_api_exception`` maps to exceptions (401 -> Authentication-,
429 -> RateLimit-, 503 -> ServiceBusyException, others -> BuildException or
TemplateException).  One emulator is one team: its ``api_key`` is the only key
accepted.  E2B's public templates (``public_templates=``, by default ``base``
and ``code-interpreter-v1``) belong to another team: every team may start
sandboxes of them and build on them (each has one ready build, tagged
``default``), none may list or change their tags (403); a team's own template
of the same name takes precedence, as E2B looks the team's namespace up first.

Builds, tags and references (packages/api/internal/template/register_build.go,
handlers/template_start_build_v2.go, handlers/template_tags.go,
db/queries/templates/get_template_with_build_by_tag.sql):

- A build requested with tags (``name:tag`` and/or ``tags=[...]``) is assigned
  exactly those; one without any gets ``default``.  Assignments are rows
  (template, build, tag, created) made when the build is *requested*; assigning
  tags later adds rows, removing a tag deletes its rows (``default`` cannot be
  removed).
- A reference ``name`` or ``template_id`` means its ``default`` tag;
  ``name:tag`` / ``template_id:tag`` resolve to the build of the newest
  assignment of that tag whose build is *ready*; ``name:<build_id>`` resolves
  to that build if it is ready and still has an assignment.
- Requesting a build fails the *waiting* (requested, not started) builds of the
  template that share a tag with it ("superseded by a newer one").  Starting a
  build cancels the *running* builds of the template that share a tag with it
  ("build was cancelled"), and only then refuses to start a build that is no
  longer waiting (400): as in E2B, a superseded build's start still cancels.
- Status, start and file routes need the template's ID (not its name); an
  unknown build's status is 400.
- ``fromTemplate`` is resolved to a concrete ready build when the build is
  started; if nothing matches, the build fails at step ``base``.

The team's concurrent-build limit (register_build.go, RegisterBuild; db/queries/
builds/get_inprogress_builds.sql, active_template_builds.sql, finish_template_build.sql,
templates/create_template.sql, templates/update_template_build_status.sql):

- A build counts against the limit from its *request* (``POST /v3/templates``
  inserts its active_template_builds row, status ``waiting``) until it ends:
  ready or error (FinishTemplateBuild, FailTemplateBuildAndDeactivate),
  superseded while waiting (InvalidateUnstartedTemplateBuilds), or cancelled by
  a newer start (it ends in error).  A requested build never started keeps its
  slot (for a day: rows older than one day are not counted).
- The check is made when a build is requested, nowhere else: after the name
  and tags are validated, before CPU and memory are.  It counts the team's
  active builds *except* those of the same template sharing a tag with the
  request (those a newer build supersedes or cancels); with ``limit`` or more,
  the answer is 429 with E2B's body ``{"code": 429, "message": "you have
  reached the maximum number of concurrent template builds (20). Please wait
  for existing builds to complete or contact support if you need more
  concurrent builds."}`` (shared/pkg/apierrors/apierrors.go) and no
  ``Retry-After`` (only the per-route request rate limiter, api/internal/
  middleware/ratelimit, sends one).  The SDK retries that 429 itself
  (``e2b.retry``: 3 retries, short backoff) and then raises RateLimitException.
- The limit is the tier's ``concurrent_template_builds``, 20 by default (db/
  migrations/20250901161352_add_concurrent_template_builds_to_tier.sql):
  ``build_limit=``, :meth:`E2BEmulator.set_build_limit`.  Another process of
  the same team is modelled by slots it holds (:meth:`E2BEmulator.hold_slots`,
  :meth:`E2BEmulator.release_slots`): builds of other templates, always counted.
  :attr:`E2BEmulator.limit_refusals` counts the 429s answered for the limit,
  :attr:`E2BEmulator.active_builds` the builds counted now and
  :attr:`E2BEmulator.peak_builds` the most counted at once (held slots included).

Timing.  No background thread runs builds: everything is computed from the
monotonic clock when asked, so N concurrent builds of T seconds all finish
after about T seconds.  A build is ``waiting`` until started, then one of:

- *whole-build timing*, when its template has a configured ``duration``
  (:meth:`E2BEmulator.configure`, or ``default_duration=``): ``building`` for
  ``duration`` seconds, ``log_lines`` lines spread over it, then ``ready`` or
  ``error``; no layer cache is involved.
- *step timing* otherwise, modelled on E2B's orchestrator (packages/orchestrator/
  pkg/template/build: builder.go, phases/phase.go, phases/base, phases/steps,
  layer/layer_executor.go, storage/cache/cache.go).  The build's steps are the
  base (``FROM image`` or ``FROM TEMPLATE ref``) and then each received step, in
  order.  Each step's cache key is E2B's ``HashKeys``: sha256 of the parent
  step's key, the step type, its arguments joined by spaces and its filesHash
  (``<nil>`` when absent); the base's key hashes the image, or
  ``template:<build_id>`` of the resolved parent build.  CPU and memory are not
  part of any key.  The team's layer cache is looked up when a build *reaches*
  a step: a hit costs nothing and is logged ``CACHED [builder i/n] ...``; a
  miss runs for the step's cost (:meth:`E2BEmulator.set_step_cost`, default
  ``default_step_cost``; the base costs 0 unless a rule matches it) and its
  layer is published ``upload_delay`` seconds after it finishes; the build is
  ready once its last step finished and all its layers are published.  Two
  builds running the same step at once both run it.  ``force`` in the start
  body rebuilds the base and every step; a step's ``force`` rebuilds it and
  every later step.  The base of a ``fromTemplate`` build is always cached (it
  is the parent's snapshot) but takes its cost.  A configured failing step
  always runs (it is never a hit).  The log reads as E2B's: ``Building
  template <id>/<build>``; per step ``[base] FROM ... [key]`` or ``[builder
  i/n] RUN ... [key]`` (``CACHED `` in front for a hit) with the step's share
  of ``log_lines`` while it runs; for a built layer ``Adding layer to cache:
  <layer>`` and ``Uploading layer: <layer>`` when the step ends and ``Saved:
  <layer>`` when it is published (debug level); then ``Build finished, took
  Ns`` or ``Build failed: <reason>``.  Entries carry E2B's ``step`` field
  ("base", "1", ...).  E2B's fixed phases around the steps (default user,
  finalize, optimize) are not modelled.

Every step of a step-timed build is recorded, hits included (:attr:`step_records`,
:attr:`steps_executed`, :attr:`cache_hits`), so a benchmark can compute steps
executed per distinct step and wall time per critical path.  Times that lie
in the future (a running build's end) are predictions: a build started later
may still change them; what is in the past never changes.

Public API (besides the HTTP routes): ``E2BEmulator(api_key, default_duration=,
default_log_lines=, default_step_cost=, upload_delay=, forbidden_keys=,
build_limit=, docker=)``, ``start``/``stop``/context manager, ``url``, ``sandbox_url``,
``env()``, ``mode``;
configuration: ``configure``, ``set_step_cost``, ``forbid``, ``inject``,
``clear_faults``, ``set_build_limit``, ``hold_slots``, ``release_slots``;
observation: ``requests``, ``request_count``, ``count``, ``reset_counters``,
``limit_refusals``, ``active_builds``, ``peak_builds``, ``held_slots``,
``pending_faults``, ``http_versions``, ``connection_count``, ``builds`` /
``build(id)`` (:class:`BuildSnapshot`), ``template_id(name)``, ``uploads``,
``upload_count``, ``step_records`` (:class:`StepRecord`), ``steps_executed``,
``cache_hits``, ``sandboxes`` (:class:`SandboxSnapshot`); the Docker mode's
``image_of(build_id)`` and ``container_of(sandbox_id)``.

Usage::

    with E2BEmulator(api_key="e2b_test_key", default_step_cost=0.05) as emu:
        emu.set_step_cost("RUN pip install", 0.5)
        emu.inject("request_build", status=429, count=2, retry_after=0)
        Template.build(template, "my-template", api_url=emu.url, api_key=emu.api_key)
        assert emu.count("request_build") == 3
        Template.build(template, "my-other-template", api_url=emu.url, api_key=emu.api_key)
        assert emu.steps_executed == emu.cache_hits  # the second build ran nothing

Modes.  In the timing mode (the default) nothing runs: builds follow the timing
model above and sandboxes are records (the sandbox proxy answers that nothing
listens in them).  In the Docker mode (``docker=DockerMode.prepare()``) a
step-timed build's steps run in Docker as E2B's orchestrator runs them, its
log, status and layer cache are what happened (docker_steps.py), and every
sandbox is a container of its build's image behind the sandbox proxy
(sandboxes.py); builds with a configured ``duration`` stay timed, and
``fail_at_step`` and step costs apply to timed builds only.

Without the Docker mode this module needs the standard library only.  The servers
listen on 127.0.0.1 only, on free ports chosen by the kernel: the API at
:attr:`E2BEmulator.url`, the sandbox proxy at :attr:`E2BEmulator.sandbox_url`.
"""

from __future__ import annotations

import copy
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from e2b_matrix import files
from e2b_matrix.emulator.http import Handler, Server
from e2b_matrix.emulator.rules import (
    ACTIVE_BUILD_WINDOW,
    BUILD_LIMIT,
    CLIENT_ID,
    DEFAULT_CPU,
    DEFAULT_MEMORY_MB,
    DEFAULT_TAG,
    DISK_SIZE_MB,
    ENVD_VERSION,
    FILES_HASH_RE,
    INDEX_VERSION,
    MAX_BODY_BYTES,
    MAX_LOG_PAGE,
    MAX_REQUEST_RECORDS,
    MAX_UPLOAD_BYTES,
    NAME_RE,
    NO_ROWS,
    PROVISION_VERSION,
    SANDBOX_ID_RE,
    SUPERSEDED_MESSAGE,
    as_uuid,
    build_limit_message,
    check_limit,
    error_body,
    hash_keys,
    iso,
    json_bytes,
    parse_reference,
    template_id_for,
    validate_tags,
)
from e2b_matrix.emulator.timing import (
    Behaviour,
    Build,
    Failure,
    LiveCourse,
    PlannedStep,
    StepRecord,
    StepSimulation,
    StepSpec,
    Timeline,
    whole_build_timeline,
)

if TYPE_CHECKING:
    from e2b_matrix.emulator.docker_mode import DockerMode
    from e2b_matrix.emulator.docker_steps import Image
    from e2b_matrix.emulator.sandboxes import LiveSandbox

__all__ = ["BUILD_LIMIT", "ROUTES", "BuildSnapshot", "E2BEmulator", "SandboxSnapshot", "StepRecord", "StepSpec"]

#: Route names accepted by :meth:`E2BEmulator.inject` and :meth:`E2BEmulator.count`.
ROUTES = (
    "request_build",
    "files",
    "upload",
    "trigger",
    "status",
    "assign_tags",
    "remove_tags",
    "get_tags",
    "alias",
    "create_sandbox",
    "connect_sandbox",
    "kill_sandbox",
    "delete_template",
)

_ROUTE_PATTERNS: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("POST", "request_build", re.compile(r"^/v3/templates/?$")),
    ("POST", "assign_tags", re.compile(r"^/templates/tags/?$")),
    ("DELETE", "remove_tags", re.compile(r"^/templates/tags/?$")),
    ("GET", "alias", re.compile(r"^/templates/aliases/(?P<alias>[^/]+)$")),
    ("GET", "get_tags", re.compile(r"^/templates/(?P<tid>[^/]+)/tags$")),
    ("GET", "files", re.compile(r"^/templates/(?P<tid>[^/]+)/files/(?P<hash>[^/]+)$")),
    ("PUT", "upload", re.compile(r"^/upload/(?P<hash>[^/]+)$")),
    ("POST", "trigger", re.compile(r"^/v2/templates/(?P<tid>[^/]+)/builds/(?P<bid>[^/]+)$")),
    ("GET", "status", re.compile(r"^/templates/(?P<tid>[^/]+)/builds/(?P<bid>[^/]+)/status$")),
    ("POST", "create_sandbox", re.compile(r"^/v2/sandboxes/?$")),
    ("POST", "connect_sandbox", re.compile(r"^(?:/v2)?/sandboxes/(?P<sid>[^/]+)/connect$")),
    ("DELETE", "kill_sandbox", re.compile(r"^/sandboxes/(?P<sid>[^/]+)$")),
    ("DELETE", "delete_template", re.compile(r"^/templates/(?P<tid>[^/]+)$")),
)


@dataclass(frozen=True)
class BuildSnapshot:
    """A read-only copy of one build's state, as returned by :attr:`E2BEmulator.builds`.

    Times are wall-clock (``time.time()``).  ``finished_at`` is when the build
    ends or ended (None until started, a prediction while it runs);
    ``duration`` is the configured duration under whole-build timing, else the
    started build's length (0 until started).  ``cancelled`` covers both a
    superseded waiting build and a running build cancelled by a newer one, with
    E2B's reason in ``cancel_message``; ``reason`` is the error reason of any
    failed build.  ``parent_build_id`` is the build a fromTemplate reference
    resolved to.
    """

    name: str
    base_name: str
    template_id: str
    build_id: str
    status: str
    cancelled: bool
    cancel_message: str | None
    tags: list[str]
    cpu_count: int
    memory_mb: int
    request_body: dict[str, Any]
    start_body: dict[str, Any] | None
    requested_at: float
    triggered_at: float | None
    finished_at: float | None
    log_lines: int
    duration: float
    reason: str | None
    parent_build_id: str | None

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The steps of the received TemplateBuildStartV2 body (empty if not triggered)."""
        return list((self.start_body or {}).get("steps") or [])


@dataclass(frozen=True)
class SandboxSnapshot:
    """One sandbox created through ``POST /v2/sandboxes`` (wall-clock times)."""

    reference: str
    template_id: str
    build_id: str
    sandbox_id: str
    created_at: float
    killed_at: float | None


@dataclass
class _Fault:
    """One pending injected fault; ``remaining`` counts down as requests consume it."""

    route: str
    remaining: int
    status: int | None
    retry_after: int | str | None
    body: dict[str, Any] | str | bytes | None
    reset: bool
    delay: float | None
    truncate: bool = False
    reshape: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class _Assignment:
    """A row of E2B's env_build_assignments: ``tag`` points at ``build_id``."""

    template_id: str
    build_id: str
    tag: str
    created: float  # monotonic


@dataclass
class _Sandbox:
    """A sandbox started on a resolved build (monotonic times; guarded by the emulator's lock)."""

    reference: str
    template_id: str
    build_id: str
    sandbox_id: str
    created: float
    killed: float | None = None
    live: LiveSandbox | None = None  # what the sandbox proxy serves
    expiry: threading.Timer | None = None  # the Docker mode: the sandbox's timeout


@dataclass(frozen=True)
class _Record:
    """One answered request."""

    method: str
    path: str
    status: int  # 0 when the connection was reset without an answer
    route: str
    http_version: str
    api_key: str | None = None  # the X-API-KEY it carried (an environment's key must reach only its own E2B)


class _Reply(Exception):
    """Raised inside a route handler to answer with an E2B-shaped error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- emulator


class E2BEmulator:
    """A threaded emulator of E2B's API on 127.0.0.1 (see the module docstring).

    :param api_key: the only key accepted in ``X-API-KEY``; others get 401.
    :param default_duration: if set, builds of templates without a configured
        duration use whole-build timing with it; None (default): step timing.
    :param default_log_lines: log lines a build emits unless configured.
    :param default_step_cost: seconds a step that misses the cache runs unless
        a :meth:`set_step_cost` rule matches it (the base costs 0 by default).
    :param upload_delay: seconds from a step's end to its layer's publication.
    :param forbidden_keys: keys answered with 403 (see also :meth:`forbid`).
    :param public_templates: names of E2B's public templates (another team's,
        each with one ready ``default`` build) that references may use.
    :param build_limit: the team's concurrent builds (waiting and building)
        past which a build request is answered 429 (E2B's default: 20).
    :param clock: the monotonic clock every build's course is computed from; a test passes a
        fake one that it moves, so a three-minute build is followed in milliseconds.
    :param docker: the Docker mode (``DockerMode.prepare()``): step-timed builds run their
        steps in Docker and sandboxes are containers serving envd's process API and the
        code interpreter; None (default): the timing mode, where sandboxes run nothing.
    """

    def __init__(
        self,
        api_key: str = "e2b_test_key",
        *,
        default_duration: float | None = None,
        default_log_lines: int = 5,
        default_step_cost: float = 0.05,
        upload_delay: float = 0.0,
        forbidden_keys: tuple[str, ...] = (),
        public_templates: tuple[str, ...] = ("base", "code-interpreter-v1"),
        build_limit: int = BUILD_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        docker: DockerMode | None = None,
    ):
        if default_step_cost < 0 or upload_delay < 0:
            raise ValueError("default_step_cost and upload_delay must be >= 0")
        check_limit(build_limit)
        self.api_key = api_key
        self._default = Behaviour(
            duration=None if default_duration is None else float(default_duration),
            log_lines=int(default_log_lines),
        )
        self._default_step_cost = float(default_step_cost)
        self._upload_delay = float(upload_delay)
        self._clock = clock  # the monotonic clock every time is read from (a test's fake one moves by itself)
        self._epoch = time.time() - clock()  # wall-clock = monotonic + epoch
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self._server: Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._forbidden: set[str] = set(forbidden_keys)
        self._behaviours: dict[str, Behaviour] = {}
        self._cost_rules: list[tuple[Callable[[StepSpec], bool], float]] = []
        self._faults: list[_Fault] = []
        self._template_ids: dict[str, str] = {}  # name -> template ID, this team's
        self._deleted: set[str] = set()  # template IDs deleted (never built again)
        self._names: dict[str, str] = {}  # template ID -> name, this team's
        self._public_ids = {name: template_id_for(f"public/{name}") for name in public_templates}
        # template ID -> its one (ready) build ID; in the Docker mode a stand-in's build ID follows its image,
        # so layers built on an older stand-in are not found in the cache (their keys hash the parent's build ID)
        standins = {} if docker is None else {name: image.image for name, image in docker.public.items()}
        self._public_builds = {
            tid: str(
                uuid.uuid5(
                    uuid.NAMESPACE_URL,
                    f"e2b-emulator/public/{tid}" + (f"/{standins[name]}" if name in standins else ""),
                )
            )
            for name, tid in self._public_ids.items()
        }
        self._builds: dict[str, Build] = {}  # build ID -> build, in request order
        self._assignments: list[_Assignment] = []  # oldest first
        self._timelines: dict[str, Timeline] | None = None  # memo, dropped on every change
        self._sandboxes: dict[str, _Sandbox] = {}
        self._uploads: dict[str, bytes] = {}  # files hash -> uploaded body
        self._upload_counts: dict[str, int] = {}
        self._records: deque[_Record] = deque(maxlen=MAX_REQUEST_RECORDS)
        self._request_count = 0
        self._build_limit = build_limit
        self._holds: list[tuple[float, int]] = []  # (monotonic time, slots taken (+) or given back (-))
        self._limit_refusals = 0
        self._counted_since = clock()  # peak_builds looks back to here (reset_counters)
        self._docker = None if docker is None else docker.fork()  # its own containers: removed when it stops
        self._images: dict[str, Image] = {}  # build ID -> its image, for a build the Docker mode ran
        self._proxy_server: Server | None = None
        self._proxy_thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> E2BEmulator:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stop_event.clear()
        self._server = Server(self._handle)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="e2b-emulator",
            daemon=True,
        )
        self._serve_thread.start()
        from e2b_matrix.emulator.sandboxes import SandboxProxy

        proxy = SandboxProxy(self._live_sandbox, None if self._docker is None else self._docker.cli)
        self._proxy_server = Server(proxy.handle, name="e2b-emulator-sandbox")
        self._proxy_thread = threading.Thread(
            target=self._proxy_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="e2b-emulator-sandbox",
            daemon=True,
        )
        self._proxy_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every open connection and join all threads; in the Docker mode,
        remove every sandbox's container and every container a build left."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stop_event.set()  # wakes delayed answers
        proxy, self._proxy_server = self._proxy_server, None
        for srv, thread in ((server, self._serve_thread), (proxy, self._proxy_thread)):
            if srv is None:
                continue
            srv.shutdown()
            if thread is not None:
                thread.join(timeout)
            srv.close_all_connections(timeout)
            srv.server_close()
        self._serve_thread = self._proxy_thread = None
        if self._docker is not None:
            with self._lock:
                running = [s for s in self._sandboxes.values() if s.killed is None]
                for s in running:
                    s.killed = self._clock()
            for s in running:
                self._stop_sandbox(s)
            with self._lock:
                live = [b.live for b in self._builds.values() if b.live is not None]
            for course in live:
                course.cancel(self._clock())
            self._docker.close()

    def __enter__(self) -> E2BEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def sandbox_url(self) -> str:
        """Base URL of the sandbox proxy (``E2B_SANDBOX_URL``), e.g. ``http://127.0.0.1:54322``."""
        if self._proxy_server is None:
            raise RuntimeError("emulator not started")
        return f"http://127.0.0.1:{self._proxy_server.server_address[1]}"

    @property
    def mode(self) -> str:
        """``docker`` (steps and sandboxes run in Docker) or ``timing``."""
        return "timing" if self._docker is None else "docker"

    def env(self) -> dict[str, str]:
        """Environment variables pointing the SDK (or a subprocess) at this emulator."""
        return {"E2B_API_URL": self.url, "E2B_SANDBOX_URL": self.sandbox_url, "E2B_API_KEY": self.api_key}

    # -- configuration -----------------------------------------------------------

    def configure(
        self,
        name: str,
        duration: float | None = None,
        log_lines: int | None = None,
        fail_at_step: int | str | None = None,
        fail_message: str | None = None,
    ) -> None:
        """Set how builds of template ``name`` requested from now on behave.

        ``name`` matches the requested name exactly ("name:tag") or, failing
        that, its base name.  Each call replaces the previous settings for the
        name; omitted ``duration``/``log_lines`` take the emulator defaults.

        :param duration: seconds from start to ``ready``/``error`` (whole-build
            timing, no layer cache); ``math.inf``: ``building`` forever (a stuck
            build); None: step timing, unless ``default_duration``.
        :param log_lines: info log lines the build prints.
        :param fail_at_step: None to succeed; an int is the 0-based index into
            the received ``steps``, reported as E2B's step name ``str(i + 1)``
            ("base" is the FROM step); a str ("base", "finalize", "3") is
            reported as is, and under step timing fails that step (or, if the
            build has no such step, the build's end).  A failing build logs the
            failure as an error-level line of that step.
        :param fail_message: the error reason's message (the SDK raises BuildException with it).
        """
        if duration is not None and duration < 0:
            raise ValueError("duration must be >= 0")
        if log_lines is not None and log_lines < 0:
            raise ValueError("log_lines must be >= 0")
        with self._lock:
            self._behaviours[name] = Behaviour(
                duration=self._default.duration if duration is None else float(duration),
                log_lines=self._default.log_lines if log_lines is None else int(log_lines),
                fail_at_step=fail_at_step,
                fail_message=fail_message,
            )

    def set_step_cost(self, match: str | Callable[[StepSpec], bool], seconds: float) -> None:
        """Make the steps ``match`` selects cost ``seconds`` when they miss the cache.

        ``match`` is a substring of the step's text as E2B logs it (``"RUN pip
        install"``, ``"FROM python:3.11"``, ``"FROM TEMPLATE parent"``) or a
        predicate on a :class:`StepSpec`.  The latest matching rule wins; steps
        no rule matches cost ``default_step_cost`` (the base: 0).  Costs are
        fixed when a build starts.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        matcher = match if callable(match) else (lambda spec, text=match: text in spec.text)
        with self._lock:
            self._cost_rules.append((matcher, float(seconds)))

    def forbid(self, key: str) -> None:
        """Answer requests made with API key ``key`` with 403 Forbidden."""
        with self._lock:
            self._forbidden.add(key)

    def inject(
        self,
        route: str = "*",
        status: int | None = None,
        *,
        count: int = 1,
        retry_after: int | str | None = None,
        body: dict[str, Any] | str | bytes | None = None,
        reset: bool = False,
        delay: float | None = None,
        truncate: bool = False,
        reshape: Callable[[Any], Any] | None = None,
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
          handled normally, combined with ``status``/``reset`` that fault follows;
        - ``truncate=True``: handle the request, then send only the first half
          of the real answer's body, with a Content-Length that matches (a
          proxy that cut it: a complete HTTP answer whose JSON is torn);
        - ``reshape=f``: handle the request, then send ``f(answer)`` as the JSON
          body of a successful answer, same status (a wrong-shaped answer: drop
          a key, change a type); error answers pass unchanged.
        """
        if route != "*" and route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {ROUTES} or '*'")
        if count < 1:
            raise ValueError("count must be >= 1")
        if status is None and not reset and delay is None and not truncate and reshape is None:
            raise ValueError("inject needs status=, reset=True, delay=, truncate=True or reshape=")
        if sum((status is not None, reset, truncate, reshape is not None)) > 1:
            raise ValueError("status=, reset=True, truncate=True and reshape= are exclusive")
        with self._lock:
            self._faults.append(_Fault(route, count, status, retry_after, body, reset, delay, truncate, reshape))

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        with self._lock:
            self._faults.clear()

    def set_build_limit(self, limit: int) -> None:
        """The team's concurrent-build limit for requests from now on (E2B's default: 20)."""
        check_limit(limit)
        with self._lock:
            self._build_limit = limit

    def hold_slots(self, n: int) -> None:
        """Take ``n`` build slots as another process of the team would: builds of other
        templates, waiting or building, counted against the limit until released."""
        if n < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            self._holds.append((self._clock(), n))

    def release_slots(self, n: int | None = None) -> None:
        """Give back ``n`` held slots (all of them if None): those builds ended."""
        with self._lock:
            held = self._held()
            n = held if n is None else n
            if n < 0 or n > held:
                raise ValueError(f"cannot release {n} of {held} held slots")
            if n:
                self._holds.append((self._clock(), -n))

    @property
    def pending_faults(self) -> int:
        """How many injected fault answers remain to be consumed."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    # -- observability -----------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path without query, status) of each answered request, oldest first.

        A connection reset is recorded with status 0.  Keeps the last
        MAX_REQUEST_RECORDS requests.
        """
        with self._lock:
            return [(r.method, r.path, r.status) for r in self._records]

    @property
    def api_keys(self) -> set[str]:
        """Every API key requests carried (an upload to its presigned link carries none)."""
        with self._lock:
            return {r.api_key for r in self._records if r.api_key is not None}

    @property
    def request_count(self) -> int:
        """Requests handled since start (or since :meth:`reset_counters`)."""
        with self._lock:
            return self._request_count

    def count(self, route: str | None = None, status: int | None = None) -> int:
        """Requests recorded for ``route`` (a :data:`ROUTES` name) and/or ``status``."""
        with self._lock:
            return sum(
                1
                for r in self._records
                if (route is None or r.route == route) and (status is None or r.status == status)
            )

    @property
    def http_versions(self) -> set[str]:
        """The HTTP versions requests arrived with (e.g. {"HTTP/1.1"})."""
        with self._lock:
            return {r.http_version for r in self._records}

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start (keep-alive makes this < request_count)."""
        server = self._server
        return server.connection_count if server is not None else 0

    def reset_counters(self) -> None:
        """Forget recorded requests, zero :attr:`request_count` and :attr:`limit_refusals`, and
        make :attr:`peak_builds` look back only to now (builds and held slots are kept)."""
        with self._lock:
            self._records.clear()
            self._request_count = 0
            self._limit_refusals = 0
            self._counted_since = self._clock()

    @property
    def limit_refusals(self) -> int:
        """Build requests answered 429 because the team was at its concurrent-build limit."""
        with self._lock:
            return self._limit_refusals

    @property
    def held_slots(self) -> int:
        """Slots :meth:`hold_slots` holds now."""
        with self._lock:
            return self._held()

    @property
    def active_builds(self) -> int:
        """Builds counted against the limit now: this team's waiting and building ones and held slots."""
        now = self._clock()
        with self._lock:
            return self._held() + sum(self._counted(b, now) for b in self._builds.values())

    @property
    def peak_builds(self) -> int:
        """The most builds counted against the limit at one time (held slots included), since
        start or :meth:`reset_counters`."""
        now = self._clock()
        with self._lock:
            since = self._counted_since
            events = list(self._holds)
            for b in self._builds.values():
                start = b.requested
                end = min(self._active_until(b), start + ACTIVE_BUILD_WINDOW)
                events += [(start, 1), (end, -1)]
        level = peak = 0
        for at, delta in sorted(events, key=lambda e: (e[0], e[1])):  # at one instant, ends first
            if at > now:
                break
            if at > since:
                peak = max(peak, level)
            level += delta
        return max(peak, level)

    @property
    def builds(self) -> list[BuildSnapshot]:
        """A snapshot of every build, in the order they were requested."""
        now = self._clock()
        with self._lock:
            return [self._snapshot(b, now) for b in self._builds.values()]

    def build(self, build_id: str) -> BuildSnapshot:
        """A snapshot of one build (KeyError if unknown)."""
        now = self._clock()
        with self._lock:
            return self._snapshot(self._builds[build_id], now)

    def template_id(self, name: str) -> str | None:
        """The template ID assigned to ``name`` (tag ignored), or None if never built."""
        with self._lock:
            return self._template_ids.get(name.split(":", 1)[0])

    @property
    def step_records(self) -> list[StepRecord]:
        """Every step of a step-timed build started so far, in the order they started."""
        wall = self._clock() + self._epoch
        with self._lock:
            records = [r for t in self._courses().values() for r in t.records if r.started_at <= wall]
        return sorted(records, key=lambda r: (r.started_at, r.build_id, r.index))

    @property
    def steps_executed(self) -> int:
        """Steps that missed the cache and ran (finished, failed or cut short) so far."""
        return sum(r.executed for r in self.step_records)

    @property
    def cache_hits(self) -> int:
        """Steps whose layer came from the cache so far (inherited bases excluded)."""
        return sum(r.outcome == "cached" for r in self.step_records)

    @property
    def sandboxes(self) -> list[SandboxSnapshot]:
        """Every sandbox created, oldest first, with the build its reference resolved to."""
        with self._lock:
            return [
                SandboxSnapshot(
                    reference=s.reference,
                    template_id=s.template_id,
                    build_id=s.build_id,
                    sandbox_id=s.sandbox_id,
                    created_at=s.created + self._epoch,
                    killed_at=None if s.killed is None else s.killed + self._epoch,
                )
                for s in self._sandboxes.values()
            ]

    def image_of(self, build_id: str) -> str | None:
        """The Docker mode: the image ID a build's sandboxes run (None until it is ready, or when
        the timing mode built it)."""
        with self._lock:
            image = self._images.get(build_id)
        return None if image is None else image.image

    def container_of(self, sandbox_id: str) -> str | None:
        """The Docker mode: the name of a running sandbox's container (None when killed or timed)."""
        with self._lock:
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is None or sandbox.killed is not None or sandbox.live is None:
                return None
            return sandbox.live.container

    @property
    def uploads(self) -> dict[str, bytes]:
        """Uploaded archives by files hash."""
        with self._lock:
            return dict(self._uploads)

    def upload_count(self, files_hash: str | None = None) -> int:
        """PUT uploads received for ``files_hash`` (or in all)."""
        with self._lock:
            if files_hash is None:
                return sum(self._upload_counts.values())
            return self._upload_counts.get(files_hash, 0)

    def _snapshot(self, b: Build, now: float) -> BuildSnapshot:
        timeline = self._course(b)
        reason = None if timeline is None or timeline.reason is None else timeline.reason[0]
        cancelled = b.cancelled is not None or (b.failure is not None and b.failure.superseded)
        if b.behaviour.duration is not None:
            duration = b.behaviour.duration
        else:
            duration = 0.0 if b.triggered is None or timeline is None else timeline.end - b.triggered
        return BuildSnapshot(
            name=b.name,
            base_name=b.base_name,
            template_id=b.template_id,
            build_id=b.build_id,
            status=self._state(b, now),
            cancelled=cancelled,
            cancel_message=reason if cancelled else None,
            tags=list(b.tags),
            cpu_count=b.cpu_count,
            memory_mb=b.memory_mb,
            request_body=copy.deepcopy(b.request_body),
            start_body=copy.deepcopy(b.start_body),
            requested_at=b.requested + self._epoch,
            triggered_at=None if b.triggered is None else b.triggered + self._epoch,
            finished_at=None if timeline is None else timeline.end + self._epoch,
            log_lines=b.behaviour.log_lines,
            duration=duration,
            reason=reason,
            parent_build_id=b.parent_build_id,
        )

    # -- build state (callers hold the lock) ------------------------------------------

    def _courses(self) -> dict[str, Timeline]:
        """The timeline of every build that started or failed (memoized until the next change)."""
        if self._timelines is None:
            courses: dict[str, Timeline] = {}
            stepped = []
            for b in self._builds.values():
                if b.failure is not None:
                    courses[b.build_id] = Timeline(
                        end=b.failure.at, ok=False, reason=(b.failure.message, b.failure.step)
                    )
                elif b.triggered is None:
                    continue
                elif b.live is not None:
                    courses[b.build_id] = b.live.timeline
                elif b.behaviour.duration is not None:
                    courses[b.build_id] = whole_build_timeline(b)
                else:
                    stepped.append(b)
            courses.update(StepSimulation(stepped, self._epoch).run())
            self._timelines = courses
        return self._timelines

    def _course(self, b: Build) -> Timeline | None:
        return self._courses().get(b.build_id)

    def _changed(self) -> None:
        """A build started, failed or was cancelled: the timelines must be recomputed."""
        self._timelines = None

    def _state(self, b: Build, now: float) -> str:
        """E2B's status of ``b`` at monotonic ``now``: waiting, building, ready or error."""
        timeline = self._course(b)
        if timeline is None:
            return "waiting"
        if now < timeline.end:
            return "building"
        return "ready" if timeline.ok else "error"

    def _active_until(self, b: Build) -> float:
        """When ``b`` stops counting against the limit (its end; inf while it waits)."""
        timeline = self._course(b)
        return math.inf if timeline is None else timeline.end

    def _counted(self, b: Build, now: float) -> bool:
        """Does ``b`` count against the team's limit at ``now`` (an active_template_builds row)?"""
        return b.requested > now - ACTIVE_BUILD_WINDOW and now < self._active_until(b)

    def _held(self) -> int:
        return sum(delta for _, delta in self._holds)

    def _check_build_limit(self, template_id: str, tags: list[str], now: float) -> None:
        """E2B's RegisterBuild: 429 when the team's other active builds reach the limit. Builds
        of the same template sharing a tag with the request are not counted."""
        others = sum(
            self._counted(b, now) and not (b.template_id == template_id and set(b.tags) & set(tags))
            for b in self._builds.values()
        )
        if self._held() + others >= self._build_limit:
            self._limit_refusals += 1
            raise _Reply(429, build_limit_message(self._build_limit))

    def _tags_of(self, build_id: str) -> set[str]:
        return {a.tag for a in self._assignments if a.build_id == build_id}

    def _template_of(self, identifier: str) -> str | None:
        """E2B's alias resolution: the team's name, a public name, then a template ID."""
        if identifier in self._template_ids:
            return self._template_ids[identifier]
        if identifier in self._public_ids:
            return self._public_ids[identifier]
        return identifier if identifier in self._names or identifier in self._public_builds else None

    def _new_template_id(self, name: str) -> str:
        """A stable ID for a new template of ``name``; never one of a deleted template."""
        template_id, n = template_id_for(name), 0
        while template_id in self._deleted:
            n += 1
            template_id = template_id_for(f"{name}#{n}")
        return template_id

    def _owned(self, identifier: str) -> str:
        """The ID of this team's template ``identifier``: _Reply 404 if none, 403 if public."""
        template_id = self._template_of(identifier)
        if template_id is None:
            raise _Reply(404, f"template '{identifier}' not found")
        if template_id in self._public_builds:
            raise _Reply(403, f"You don't have access to sandbox template '{identifier}'")
        return template_id

    def _resolve(self, template_id: str, tag: str | None, now: float) -> str | None:
        """The ID of the build of the newest assignment of ``tag`` (or a build ID) whose
        build is ready."""
        tag = tag or DEFAULT_TAG
        build_id = as_uuid(tag)
        if template_id in self._public_builds:
            public = self._public_builds[template_id]
            return public if tag == DEFAULT_TAG or build_id == public else None
        for a in reversed(self._assignments):
            if (
                a.template_id == template_id
                and (a.tag == tag or a.build_id == build_id)
                and self._state(self._builds[a.build_id], now) == "ready"
            ):
                return a.build_id
        return None

    def _resolve_reference(self, reference: str, now: float, invalid: str) -> tuple[str, str]:
        """Resolve ``name[:tag]`` or ``template_id[:tag|:build_id]`` as E2B's sandbox and
        fromTemplate lookups do: (template ID, build ID), or _Reply with E2B's status and
        message (``invalid`` prefixes the message for a malformed reference)."""
        try:
            identifier, tag = parse_reference(reference)
        except ValueError as err:
            raise _Reply(400, f"{invalid}: {err}") from None
        template_id = self._template_of(identifier)
        if template_id is None:
            raise _Reply(404, f"template '{identifier}' not found")
        build_id = self._resolve(template_id, tag, now)
        if build_id is None:
            raise _Reply(404, f"tag '{tag or DEFAULT_TAG}' does not exist for template '{identifier}'")
        return template_id, build_id

    def _find_build(self, template_id: str, build_id: str) -> Build | None:
        """E2B's GetTemplateBuildWithTemplate: the build of that template *ID* with an assignment."""
        build = self._builds.get(build_id)
        if build is None or build.template_id != template_id or not self._tags_of(build_id):
            return None
        return build

    def _plan(self, b: Build, start: dict[str, Any]) -> tuple[PlannedStep, ...]:
        """The steps of a step-timed build: the base, then each received step, with keys and costs."""
        steps = start.get("steps") or []
        lines = b.behaviour.log_lines
        owners = [i * (len(steps) + 1) // lines for i in range(lines)]  # the step printing each line
        if b.parent_build_id is not None:
            reference = str(start["fromTemplate"])
            source, text = f"template:{b.parent_build_id}", f"FROM TEMPLATE {reference}"
        else:
            reference = str(start["fromImage"])
            source, text = reference, f"FROM {reference}"
        key = hash_keys(INDEX_VERSION, PROVISION_VERSION, DISK_SIZE_MB, source)
        force = bool(start.get("force"))
        base = StepSpec(b.base_name, "base", "FROM", (reference,), text)
        plan = [
            PlannedStep(
                base,
                key,
                self._cost(base, 0.0),
                force,
                b.parent_build_id is not None,
                tuple(i for i, o in enumerate(owners) if o == 0),
            )
        ]
        for number, step in enumerate(steps, 1):
            kind, args = str(step.get("type", "")), tuple(str(a) for a in step.get("args") or ())
            force = force or bool(step.get("force"))  # a forced step forces every later one
            files_hash = step.get("filesHash")
            key = hash_keys(key, kind, " ".join(args), "<nil>" if files_hash is None else str(files_hash))
            spec = StepSpec(b.base_name, str(number), kind, args, f"{kind.upper()} {' '.join(args)}")
            lines_of = tuple(i for i, o in enumerate(owners) if o == number)
            plan.append(PlannedStep(spec, key, self._cost(spec, self._default_step_cost), force, False, lines_of))
        return tuple(plan)

    def _cost(self, spec: StepSpec, default: float) -> float:
        for matches, seconds in reversed(self._cost_rules):
            if matches(spec):
                return seconds
        return default

    # -- request handling ----------------------------------------------------------

    def _handle(self, h: Handler) -> None:
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
            return self._answer(h, path, route, 413, error_body(413, "request body too large"))

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
            status, payload = reply.status, error_body(reply.status, reply.message)
        if fault is not None and fault.truncate:
            payload = payload[: len(payload) // 2]
        elif fault is not None and fault.reshape is not None and 200 <= status < 300 and payload:
            payload = json_bytes(fault.reshape(files.parse_json(payload)))
        self._answer(h, path, route, status, payload)

    def _take_fault(self, route: str) -> _Fault | None:
        """Consume one use of the oldest pending fault matching ``route``."""
        with self._lock:
            for fault in self._faults:
                if fault.route in ("*", route):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer_fault(self, h: Handler, path: str, route: str, fault: _Fault) -> None:
        status = int(fault.status)  # type: ignore[arg-type]
        if fault.body is None:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "error"
            payload = error_body(status, f"emulated {status} {phrase}")
        elif isinstance(fault.body, dict):
            payload = json_bytes(fault.body)
        elif isinstance(fault.body, str):
            payload = fault.body.encode()
        else:
            payload = fault.body
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        self._answer(h, path, route, status, payload, headers)

    def _answer(
        self,
        h: Handler,
        path: str,
        route: str,
        status: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        # Record before writing, so a client that has seen the answer also sees it counted.
        self._record(h, path, route, status)
        h.send(status, payload, headers=headers)

    def _record(self, h: Handler, path: str, route: str, status: int) -> None:
        with self._lock:
            self._request_count += 1
            self._records.append(_Record(h.command, path, status, route, h.request_version, h.headers.get("X-API-KEY")))

    def _authenticate(self, h: Handler) -> None:
        key = h.headers.get("X-API-KEY")
        with self._lock:
            forbidden = key in self._forbidden
        if forbidden:
            raise _Reply(403, "Forbidden: this API key may not access templates")
        if key is None or key != self.api_key:
            raise _Reply(401, "Invalid API key, please visit https://e2b.dev/docs/api-key")

    def _dispatch(self, route: str, params: dict[str, str], query: str, body: bytes) -> tuple[int, bytes]:
        if route == "upload":
            return self._upload(params["hash"], body)
        if route == "create_sandbox":  # these take the lock themselves: a container starts or stops meanwhile
            return self._create_sandbox(self._parse_json(body))
        if route == "kill_sandbox":
            return self._kill_sandbox(params["sid"])
        if route == "connect_sandbox":
            return self._connect_sandbox(params["sid"], self._parse_json(body or b"{}"))
        now = self._clock()
        with self._lock:  # every route sees (and changes) the state at one instant
            if route == "request_build":
                return self._request_build(self._parse_json(body), now)
            if route == "files":
                return self._file_link(params["tid"], params["hash"])
            if route == "trigger":
                return self._trigger(params["tid"], params["bid"], self._parse_json(body), now)
            if route == "status":
                return self._status(params["tid"], params["bid"], parse_qs(query), now)
            if route == "assign_tags":
                return self._assign_tags(self._parse_json(body), now)
            if route == "remove_tags":
                return self._remove_tags(self._parse_json(body))
            if route == "get_tags":
                return self._get_tags(params["tid"])
            if route == "alias":
                return self._alias(params["alias"], now)
            if route == "delete_template":
                return self._delete_template(params["tid"])
        raise _Reply(404, "Not found")

    @staticmethod
    def _parse_json(body: bytes) -> dict[str, Any]:
        try:
            data = files.parse_json(body or b"null")
        except ValueError:
            raise _Reply(400, "Invalid request body: invalid JSON") from None
        if not isinstance(data, dict):
            raise _Reply(400, "Invalid request body: expected a JSON object")
        return data

    # -- template routes ---------------------------------------------------------------

    def _request_build(self, req: dict[str, Any], now: float) -> tuple[int, bytes]:
        """POST /v3/templates: validate, check the team's build limit, supersede waiting builds,
        assign tags, answer 202."""
        name = req.get("name") or req.get("alias")
        if not isinstance(name, str) or not name:
            raise _Reply(400, "Name is required")
        base, sep, name_tag = name.partition(":")
        if not NAME_RE.fullmatch(base):
            raise _Reply(400, f"Invalid template name '{base}': must match ^[a-z0-9-_]+$")
        extra_tags = req.get("tags") or []
        if not isinstance(extra_tags, list):
            raise _Reply(400, "Invalid request body: tags must be a list of strings")
        try:
            tags = validate_tags(([name_tag] if sep and name_tag != DEFAULT_TAG else []) + extra_tags)
        except ValueError as err:
            raise _Reply(400, f"Invalid tag: {err}") from None
        tags = tags or [DEFAULT_TAG]
        template_id = self._template_ids.get(base) or self._new_template_id(base)
        self._check_build_limit(template_id, tags, now)
        cpu = req.get("cpuCount", DEFAULT_CPU)
        if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 1 or cpu > 32 or (cpu != 1 and cpu % 2):
            raise _Reply(400, f"Invalid cpuCount {cpu!r}: must be 1 or an even number up to 32")
        memory = req.get("memoryMB", DEFAULT_MEMORY_MB)
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 128 or memory % 2:
            raise _Reply(400, f"Invalid memoryMB {memory!r}: must be an even number >= 128")

        self._template_ids[base], self._names[template_id] = template_id, base
        for old in self._builds.values():  # E2B's InvalidateUnstartedTemplateBuilds
            waiting = old.template_id == template_id and self._state(old, now) == "waiting"
            if waiting and self._tags_of(old.build_id) & set(tags):
                old.failure = Failure(now, SUPERSEDED_MESSAGE, None, superseded=True)
                self._changed()
        build_id = str(uuid.uuid4())
        self._builds[build_id] = Build(
            name=name,
            base_name=base,
            template_id=template_id,
            build_id=build_id,
            tags=tags,
            cpu_count=cpu,
            memory_mb=memory,
            request_body=copy.deepcopy(req),
            behaviour=self._behaviours.get(name) or self._behaviours.get(base) or self._default,
            requested=now,
        )
        self._assignments.extend(_Assignment(template_id, build_id, tag, now) for tag in tags)
        return 202, json_bytes(
            {
                "templateID": template_id,
                "buildID": build_id,
                "public": False,
                "names": [base],
                "tags": tags,
                "aliases": [base],
            }
        )

    def _file_link(self, template_id: str, files_hash: str) -> tuple[int, bytes]:
        """GET /templates/{id}/files/{hash}: where to upload, and whether it's cached."""
        if not FILES_HASH_RE.fullmatch(files_hash):
            raise _Reply(400, "Invalid files hash")
        if template_id not in self._names:
            raise _Reply(404, f"Error when getting template: {NO_ROWS}")
        url = f"{self.url}/upload/{quote(files_hash, safe='')}"
        return 201, json_bytes({"present": files_hash in self._uploads, "url": url})

    def _upload(self, files_hash: str, body: bytes) -> tuple[int, bytes]:
        """PUT /upload/{hash}: store the archive (like a presigned bucket URL)."""
        with self._lock:
            self._uploads[files_hash] = body
            self._upload_counts[files_hash] = self._upload_counts.get(files_hash, 0) + 1
        return 200, b""

    def _trigger(self, template_id: str, build_id: str, start: dict[str, Any], now: float) -> tuple[int, bytes]:
        """POST /v2/templates/{id}/builds/{bid}: cancel running rivals, then start the build."""
        steps = start.get("steps", [])
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise _Reply(400, "Invalid request body: steps must be a list of objects")
        if as_uuid(build_id) is None:
            raise _Reply(400, f"Invalid build ID: {build_id}")
        build = self._find_build(template_id, build_id)
        if build is None:
            raise _Reply(404, f"Error when getting template: {NO_ROWS}")
        tags = self._tags_of(build_id)
        for other in self._builds.values():  # E2B's CheckAndCancelConcurrentBuilds
            if (
                other is not build
                and other.template_id == template_id
                and self._state(other, now) == "building"
                and self._tags_of(other.build_id) & tags
            ):
                other.cancelled = now
                if other.live is not None:
                    other.live.cancel(now)
                self._changed()
        if self._state(build, now) != "waiting":
            raise _Reply(400, "build is not in waiting state")
        has_image, has_template = start.get("fromImage") is not None, bool(start.get("fromTemplate"))
        source_error = None
        if has_image == has_template:
            problem = "cannot specify both" if has_image else "must specify either"
            source_error = f"failed to set template source: {problem} fromImage or fromTemplate"
            build.failure = Failure(now, f"error when building env: {source_error}", None, superseded=False)
        elif has_template:
            try:
                _, build.parent_build_id = self._resolve_reference(
                    str(start["fromTemplate"]), now, "invalid template reference"
                )
            except _Reply as refused:  # E2B accepts the start and fails the build at "base"
                build.failure = Failure(now, refused.message, "base", superseded=False)
        build.start_body, build.triggered = copy.deepcopy(start), now
        if build.failure is None and build.behaviour.duration is None:
            build.plan, build.upload_delay = self._plan(build, start), self._upload_delay
            if self._docker is not None:
                self._run_in_docker(build, start)
        self._changed()
        if source_error is not None:
            raise _Reply(500, f"Error when starting template build: {source_error}")
        return 202, b""

    def _status(self, template_id: str, build_id: str, query: dict[str, list[str]], now: float) -> tuple[int, bytes]:
        """GET .../status?logsOffset=N&limit=M: status and a page of log entries."""
        canonical = as_uuid(build_id)
        if canonical is None:
            raise _Reply(400, "Invalid build id")
        build = self._find_build(template_id, canonical)
        if build is None:
            raise _Reply(400, f"Build '{canonical}' not found")
        try:
            offset = max(0, int(query.get("logsOffset", ["0"])[0]))
            limit = min(MAX_LOG_PAGE, max(0, int(query.get("limit", [str(MAX_LOG_PAGE)])[0])))
        except ValueError:
            raise _Reply(400, "logsOffset and limit must be integers") from None
        status = self._state(build, now)
        info: dict[str, Any] = {
            "templateID": template_id,
            "buildID": build_id,
            "status": status,
            "logs": [],
            "logEntries": [],
        }
        timeline = self._course(build)
        if status == "waiting" or timeline is None:
            return 200, json_bytes(info)
        visible = [e for e in timeline.entries if e.time <= now]
        page = visible[offset : offset + limit]
        info["logEntries"] = [e.to_json(self._epoch) for e in page]
        if status == "error" and timeline.reason is not None:
            message, step = timeline.reason
            reason: dict[str, Any] = {"message": message}
            if step is not None:  # E2B: this page's warnings and errors of the failed step
                reason["step"] = step
                reason["logEntries"] = [
                    e.to_json(self._epoch) for e in page if e.step == step and e.level in ("warn", "error")
                ]
            info["reason"] = reason
        return 200, json_bytes(info)

    # -- tag and alias routes ----------------------------------------------------------

    def _assign_tags(self, req: dict[str, Any], now: float) -> tuple[int, bytes]:
        """POST /templates/tags {target, tags}: point ``tags`` at the build ``target`` resolves to."""
        tags, target = req.get("tags"), req.get("target")
        if not isinstance(tags, list) or not isinstance(target, str):
            raise _Reply(400, "Invalid request body: target and tags are required")
        if not tags:
            raise _Reply(400, "At least one tag is required")
        try:
            identifier, tag = parse_reference(target)
        except ValueError as err:
            raise _Reply(400, f"Invalid target template format: {err}") from None
        template_id = self._template_of(identifier)
        if template_id is None:
            raise _Reply(404, f"template '{identifier}' not found")
        build_id = self._resolve(template_id, tag, now)
        if build_id is None:
            raise _Reply(404, f"Template '{target}' with tag '{tag or DEFAULT_TAG}' not found")
        self._owned(identifier)
        try:
            valid = validate_tags(tags)
        except ValueError as err:
            raise _Reply(400, f"Invalid tag: {err}") from None
        self._assignments.extend(_Assignment(template_id, build_id, t, now) for t in valid)
        return 201, json_bytes({"tags": valid, "buildID": build_id})

    def _remove_tags(self, req: dict[str, Any]) -> tuple[int, bytes]:
        """DELETE /templates/tags {name, tags}: delete every assignment of ``tags``."""
        tags, name = req.get("tags"), req.get("name")
        if not isinstance(tags, list) or not isinstance(name, str):
            raise _Reply(400, "Invalid request body: name and tags are required")
        try:
            valid = validate_tags(tags)
        except ValueError as err:
            raise _Reply(400, f"Invalid tag: {err}") from None
        if not valid:
            raise _Reply(400, "At least one tag is required")
        if DEFAULT_TAG in valid:
            raise _Reply(400, f"Cannot delete the '{DEFAULT_TAG}' tag")
        try:
            identifier, tag = parse_reference(name)
        except ValueError as err:
            raise _Reply(400, f"Invalid template name format: {err}") from None
        if tag is not None:
            raise _Reply(400, "Template name should not contain a tag, use the 'tags' field instead")
        template_id = self._owned(identifier)
        self._assignments = [a for a in self._assignments if not (a.template_id == template_id and a.tag in valid)]
        return 204, b""

    def _get_tags(self, reference: str) -> tuple[int, bytes]:
        """GET /templates/{id or name}/tags: the newest assignment of each tag, by tag."""
        try:
            identifier, _ = parse_reference(reference)
        except ValueError as err:
            raise _Reply(400, f"Invalid template reference: {err}") from None
        template_id = self._owned(identifier)
        newest: dict[str, _Assignment] = {}
        for a in self._assignments:
            if a.template_id == template_id:
                newest[a.tag] = a
        return 200, json_bytes(
            [
                {"tag": a.tag, "buildID": a.build_id, "createdAt": iso(a.created + self._epoch)}
                for a in sorted(newest.values(), key=lambda a: a.tag)
            ]
        )

    def _alias(self, alias: str, now: float) -> tuple[int, bytes]:
        """GET /templates/aliases/{alias}: the template a name (or ID) stands for; with a
        tag, only if the tag resolves to a ready build."""
        try:
            identifier, tag = parse_reference(alias)
        except ValueError as err:
            raise _Reply(400, f"Invalid alias format: {err}") from None
        template_id = self._template_of(identifier)
        if template_id is None:
            raise _Reply(404, f"template '{identifier}' not found")
        if template_id in self._public_builds:
            raise _Reply(403, "You don't have access to this template alias")
        if ":" in alias and self._resolve(template_id, tag, now) is None:
            raise _Reply(404, f"tag '{tag or DEFAULT_TAG}' does not exist for template '{identifier}'")
        return 200, json_bytes({"templateID": template_id, "public": False})

    # -- sandbox routes ----------------------------------------------------------------

    def _create_sandbox(self, req: dict[str, Any]) -> tuple[int, bytes]:
        """POST /v2/sandboxes: resolve the reference to a ready build and start a sandbox on it
        (in the Docker mode, a container of the build's image)."""
        from e2b_matrix.emulator.sandboxes import LiveSandbox

        reference = req.get("templateID")
        if not isinstance(reference, str):
            raise _Reply(400, "Error when parsing request: templateID is required")
        envs = req.get("envVars") or {}
        if not isinstance(envs, dict):
            raise _Reply(400, "Error when parsing request: envVars must be an object")
        with self._lock:
            now = self._clock()
            template_id, build_id = self._resolve_reference(reference, now, "Invalid template reference")
            public_names = {tid: name for name, tid in self._public_ids.items()}
            name = self._names.get(template_id) or public_names[template_id]
            image = None
            if self._docker is not None:
                image = self._images.get(build_id) or (
                    self._docker.public.get(name) if template_id in self._public_builds else None
                )
                if image is None:
                    raise _Reply(
                        500,
                        f"Failed to create sandbox: the emulator has no image of build {build_id} "
                        "(built in its timing mode, or a public template it has no stand-in of)",
                    )
            build = self._builds.get(build_id)
        sandbox_id = "i" + uuid.uuid4().hex[:20]
        live = LiveSandbox(sandbox_id, image, envs={str(k): str(v) for k, v in envs.items()})
        if self._docker is not None:
            from e2b_matrix.backends.docker_engine import DockerError
            from e2b_matrix.emulator.sandboxes import start_sandbox

            try:
                start_sandbox(
                    self._docker.cli,
                    live,
                    owner=self._docker.owner,
                    devices=self._docker.devices,
                    cpus=build.cpu_count if build else DEFAULT_CPU,
                    memory_mb=build.memory_mb if build else DEFAULT_MEMORY_MB,
                )
            except DockerError as exc:
                self._docker.cli.remove_container(f"e2b-emulator-sandbox-{sandbox_id}")
                raise _Reply(500, f"Failed to create sandbox: {' '.join(str(exc).split())[:300]}") from None
        with self._lock:
            sandbox = _Sandbox(reference, template_id, build_id, sandbox_id, self._clock(), live=live)
            self._sandboxes[sandbox_id] = sandbox
            timeout = req.get("timeout", 15)  # E2B's API default (openapi.yml: NewSandbox.timeout)
            if self._docker is not None and isinstance(timeout, int) and not isinstance(timeout, bool):
                self._set_expiry(sandbox, timeout)
        return 201, json_bytes(
            {
                "templateID": template_id,
                "sandboxID": sandbox_id,
                "clientID": CLIENT_ID,
                "envdVersion": ENVD_VERSION,
                "alias": name,
                "domain": None,
            }
        )

    def _connect_sandbox(self, sandbox_id: str, req: dict[str, Any]) -> tuple[int, bytes]:
        """POST /v2/sandboxes/{id}/connect: a running sandbox, its timeout set anew (200); else 404
        (handlers/sandbox_connect.go: KeepAliveFor; paused sandboxes are not modelled)."""
        parts = sandbox_id.split("-")
        if len(parts) > 2 or not SANDBOX_ID_RE.fullmatch(parts[0]):
            raise _Reply(400, "Invalid sandbox ID")
        with self._lock:
            sandbox = self._sandboxes.get(parts[0])
            if sandbox is None or sandbox.killed is not None:
                raise _Reply(404, f"Sandbox \"{parts[0]}\" doesn't exist or you don't have access to it")
            timeout = req.get("timeout")
            if self._docker is not None and isinstance(timeout, int) and not isinstance(timeout, bool):
                self._set_expiry(sandbox, timeout)
            public_names = {tid: name for name, tid in self._public_ids.items()}
            return 200, json_bytes(
                {
                    "templateID": sandbox.template_id,
                    "sandboxID": sandbox.sandbox_id,
                    "clientID": CLIENT_ID,
                    "envdVersion": ENVD_VERSION,
                    "alias": self._names.get(sandbox.template_id) or public_names[sandbox.template_id],
                    "domain": None,
                }
            )

    def _set_expiry(self, sandbox: _Sandbox, seconds: int) -> None:
        """The sandbox is killed ``seconds`` from now, as E2B kills it when its timeout passes
        (caller holds the lock; the Docker mode: its container is removed)."""
        if sandbox.expiry is not None:
            sandbox.expiry.cancel()
        sandbox.expiry = threading.Timer(max(seconds, 0), self._expire, (sandbox.sandbox_id,))
        sandbox.expiry.daemon = True
        sandbox.expiry.start()

    def _delete_template(self, identifier: str) -> tuple[int, bytes]:
        """DELETE /templates/{id}: the whole template, its builds and tags (E2B has no per-build delete);
        refused (400) while a sandbox of it runs (e2b-dev/infra packages/api/internal/handlers/
        template_delete.go). Its ID is never built again: a new build of the name makes a new template."""
        template_id = self._owned(identifier)
        if any(s.template_id == template_id and s.killed is None for s in self._sandboxes.values()):
            raise _Reply(400, f"cannot delete template '{identifier}' because there are running sandboxes using it")
        name = self._names.pop(template_id, None)
        if name is not None:
            self._template_ids.pop(name, None)
            self._deleted.add(template_id)
        gone = {b for b, build in self._builds.items() if build.template_id == template_id}
        for b in gone:
            del self._builds[b]
        self._assignments = [a for a in self._assignments if a.build_id not in gone]
        self._changed()
        return 204, b""

    def _kill_sandbox(self, sandbox_id: str) -> tuple[int, bytes]:
        """DELETE /sandboxes/{id}: kill a running sandbox (204; its container is removed), else 404."""
        parts = sandbox_id.split("-")
        if len(parts) > 2 or not SANDBOX_ID_RE.fullmatch(parts[0]):
            raise _Reply(400, "Invalid sandbox ID")
        with self._lock:
            sandbox = self._sandboxes.get(parts[0])
            if sandbox is None or sandbox.killed is not None:
                raise _Reply(404, f"Sandbox \"{parts[0]}\" doesn't exist or you don't have access to it")
            sandbox.killed = self._clock()
        self._stop_sandbox(sandbox)
        return 204, b""

    def _expire(self, sandbox_id: str) -> None:
        """The sandbox's timeout passed: E2B kills it."""
        with self._lock:
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is None or sandbox.killed is not None:
                return
            sandbox.killed = self._clock()
        self._stop_sandbox(sandbox)

    def _stop_sandbox(self, sandbox: _Sandbox) -> None:
        if sandbox.expiry is not None:
            sandbox.expiry.cancel()
        if self._docker is not None and sandbox.live is not None:
            from e2b_matrix.emulator.sandboxes import stop_sandbox

            stop_sandbox(self._docker.cli, sandbox.live)

    def _live_sandbox(self, sandbox_id: str) -> LiveSandbox | None:
        """The running sandbox the proxy serves for ``sandbox_id`` (None when unknown or killed)."""
        with self._lock:
            sandbox = self._sandboxes.get(sandbox_id)
            return sandbox.live if sandbox is not None and sandbox.killed is None else None

    # -- the Docker mode -------------------------------------------------------------------

    def _run_in_docker(self, build: Build, start: dict[str, Any]) -> None:
        """Start executing ``build``'s steps (caller holds the lock; the plan is made)."""
        from e2b_matrix.emulator.docker_steps import Job

        assert self._docker is not None
        parent = None
        if build.parent_build_id is not None:
            tid = next((t for t, b in self._public_builds.items() if b == build.parent_build_id), None)
            public_names = {t: n for n, t in self._public_ids.items()}
            parent = (
                self._docker.public.get(public_names[tid])
                if tid is not None
                else self._images.get(build.parent_build_id)
            )
        course = LiveCourse(build, self._lock, self._epoch)
        build.live = course

        def done(image: Image, build_id: str = build.build_id) -> None:
            with self._lock:
                self._images[build_id] = image

        def upload(files_hash: str) -> bytes | None:
            with self._lock:
                return self._uploads.get(files_hash)

        self._docker.steps.start(
            Job(course, build.plan, copy.deepcopy(start), parent, upload, build.cpu_count, build.memory_mb, done)
        )
