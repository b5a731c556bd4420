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
public_templates=, build_limit=, clock=, docker=)``, ``start``/``stop``/context
manager, ``url``, ``sandbox_url``, ``env()``, ``mode``;
configuration: ``configure``, ``set_step_cost``, ``forbid``, ``inject``,
``clear_faults``, ``set_build_limit``, ``hold_slots``, ``release_slots``;
observation (readings.py): ``requests``, ``api_keys``, ``request_count``, ``count``, ``reset_counters``,
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

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from e2b_matrix.emulator.build_routes import BuildRoutes
from e2b_matrix.emulator.gateway import Auth, Fault, Faults, RequestLog
from e2b_matrix.emulator.http import Endpoint
from e2b_matrix.emulator.limit import BuildLimit
from e2b_matrix.emulator.plans import Planner
from e2b_matrix.emulator.readings import BuildSnapshot, Readings
from e2b_matrix.emulator.router import Router
from e2b_matrix.emulator.rules import BUILD_LIMIT, ROUTES
from e2b_matrix.emulator.sandbox_api import SandboxRoutes, SandboxSnapshot
from e2b_matrix.emulator.store import Store, Uploads
from e2b_matrix.emulator.template_routes import TemplateRoutes
from e2b_matrix.emulator.timing import StepRecord, StepSpec

if TYPE_CHECKING:
    from e2b_matrix.emulator.docker_mode import DockerMode

__all__ = ["BUILD_LIMIT", "ROUTES", "BuildSnapshot", "E2BEmulator", "SandboxSnapshot", "StepRecord", "StepSpec"]


class E2BEmulator(Readings):
    """A threaded emulator of E2B's API on 127.0.0.1 (see the module docstring); what it reads
    back is :class:`~e2b_matrix.emulator.readings.Readings`'.

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
        store = Store(clock, public_templates, {} if docker is None else docker.public)
        self._planner = Planner(store.lock, default_duration, default_log_lines, default_step_cost, upload_delay)
        limit = BuildLimit(store, build_limit)
        self._docker = None if docker is None else docker.fork()  # its own containers: removed when it stops
        sandboxes = SandboxRoutes(store, self._docker)
        super().__init__(store, Uploads(store.lock), limit, Faults(store.lock), RequestLog(store.lock), sandboxes)
        self.api_key = api_key
        self._auth = Auth(store.lock, api_key, forbidden_keys)
        self._build_routes = BuildRoutes(store, self._uploads, limit, self._planner, self._docker, lambda: self.url)
        self._stopping = threading.Event()
        self._router = Router(
            store,
            faults=self._faults,
            log=self._log,
            auth=self._auth,
            builds=self._build_routes,
            templates=TemplateRoutes(store, sandboxes.in_use),
            sandboxes=sandboxes,
            stopping=self._stopping,
        )
        self._api: Endpoint | None = None
        self._proxy: Endpoint | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> E2BEmulator:
        """Bind 127.0.0.1 on free ports (the API, the sandbox proxy) and serve in background threads."""
        from e2b_matrix.emulator.sandboxes import SandboxProxy

        if self._api is not None:
            raise RuntimeError("emulator already started")
        self._stopping.clear()
        self._api = Endpoint(self._router.handle, "e2b-emulator")
        proxy = SandboxProxy(self._sandboxes.live, None if self._docker is None else self._docker.cli)
        self._proxy = Endpoint(proxy.handle, "e2b-emulator-sandbox")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every open connection and join all threads; in the Docker mode,
        remove every sandbox's container and every container a build left."""
        api, self._api = self._api, None
        if api is None:
            return
        self._stopping.set()  # wakes delayed answers
        proxy, self._proxy = self._proxy, None
        for endpoint in (api, proxy):
            if endpoint is not None:
                endpoint.stop(timeout)
        if self._docker is not None:
            self._sandboxes.stop()
            self._build_routes.stop()
            self._docker.close()

    def __enter__(self) -> E2BEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:54321``."""
        if self._api is None:
            raise RuntimeError("emulator not started")
        return self._api.url

    @property
    def sandbox_url(self) -> str:
        """Base URL of the sandbox proxy (``E2B_SANDBOX_URL``), e.g. ``http://127.0.0.1:54322``."""
        if self._proxy is None:
            raise RuntimeError("emulator not started")
        return self._proxy.url

    @property
    def mode(self) -> str:
        """``docker`` (steps and sandboxes run in Docker) or ``timing``."""
        return "timing" if self._docker is None else "docker"

    def env(self) -> dict[str, str]:
        """Environment variables pointing the SDK (or a subprocess) at this emulator."""
        return {"E2B_API_URL": self.url, "E2B_SANDBOX_URL": self.sandbox_url, "E2B_API_KEY": self.api_key}

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start (keep-alive makes this < request_count)."""
        api = self._api
        return api.server.connection_count if api is not None else 0

    # -- configuration -----------------------------------------------------------

    def configure(
        self,
        name: str,
        duration: float | None = None,
        log_lines: int | None = None,
        fail_at_step: int | str | None = None,
        fail_message: str | None = None,
    ) -> None:
        """Set how builds of template ``name`` requested from now on behave (each parameter as
        :class:`~e2b_matrix.emulator.timing.Behaviour` says; ``duration`` None: step timing, unless
        ``default_duration``).

        ``name`` matches the requested name exactly ("name:tag") or, failing
        that, its base name.  Each call replaces the previous settings for the
        name; omitted ``duration``/``log_lines`` take the emulator defaults.
        """
        self._planner.configure(name, duration, log_lines, fail_at_step, fail_message)

    def set_step_cost(self, match: str | Callable[[StepSpec], bool], seconds: float) -> None:
        """Make the steps ``match`` selects cost ``seconds`` when they miss the cache.

        ``match`` is a substring of the step's text as E2B logs it (``"RUN pip
        install"``, ``"FROM python:3.11"``, ``"FROM TEMPLATE parent"``) or a
        predicate on a :class:`StepSpec`.  The latest matching rule wins; steps
        no rule matches cost ``default_step_cost`` (the base: 0).  Costs are
        fixed when a build starts.
        """
        self._planner.set_step_cost(match, seconds)

    def forbid(self, key: str) -> None:
        """Answer requests made with API key ``key`` with 403 Forbidden."""
        self._auth.forbid(key)

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
        """Make the next ``count`` requests to ``route`` misbehave: ``status`` (with ``body`` and
        ``retry_after``), ``reset``, ``delay``, ``truncate`` or ``reshape``, as
        :class:`~e2b_matrix.emulator.gateway.Fault` describes.

        ``route`` is one of :data:`ROUTES` or ``"*"`` (any request).  Faults
        are consumed in the order they were injected; a fault applies before
        authentication, like a gateway in front of the API.
        """
        self._faults.add(Fault(route, count, status, retry_after, body, reset, delay, truncate, reshape))

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        self._faults.clear()

    def set_build_limit(self, limit: int) -> None:
        """The team's concurrent-build limit for requests from now on (E2B's default: 20)."""
        self._limit.set(limit)

    def hold_slots(self, n: int) -> None:
        """Take ``n`` build slots as another process of the team would: builds of other
        templates, waiting or building, counted against the limit until released."""
        self._limit.hold(n)

    def release_slots(self, n: int | None = None) -> None:
        """Give back ``n`` held slots (all of them if None): those builds ended."""
        self._limit.release(n)
