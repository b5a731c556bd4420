"""What a test or a benchmark reads back from an emulator: requests, builds, steps, sandboxes, limits.

:class:`Readings` is the read side of :class:`~e2b_matrix.emulator.api.E2BEmulator`
(which adds its lifecycle and configuration): every reading is a copy taken under the
store's lock, with wall-clock times. Times that lie in the future (a running build's
end) are predictions: a build started later may still change them; what is in the past
never changes. Standard library only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from e2b_matrix.emulator.gateway import Faults, RequestLog
from e2b_matrix.emulator.limit import BuildLimit
from e2b_matrix.emulator.sandbox_api import SandboxRoutes, SandboxSnapshot
from e2b_matrix.emulator.store import Store, Uploads
from e2b_matrix.emulator.timing import Build, StepRecord


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

    @classmethod
    def of(cls, store: Store, b: Build, now: float) -> BuildSnapshot:
        """``b`` at monotonic ``now`` (the caller holds the store's lock)."""
        timeline, epoch = store.course(b), store.epoch
        reason = None if timeline is None or timeline.reason is None else timeline.reason[0]
        cancelled = b.cancelled is not None or (b.failure is not None and b.failure.superseded)
        if b.behaviour.duration is not None:
            duration = b.behaviour.duration
        else:
            duration = 0.0 if b.triggered is None or timeline is None else timeline.end - b.triggered
        return cls(
            name=b.name,
            base_name=b.base_name,
            template_id=b.template_id,
            build_id=b.build_id,
            status=store.state(b, now),
            cancelled=cancelled,
            cancel_message=reason if cancelled else None,
            tags=list(b.tags),
            cpu_count=b.cpu_count,
            memory_mb=b.memory_mb,
            request_body=copy.deepcopy(b.request_body),
            start_body=copy.deepcopy(b.start_body),
            requested_at=b.requested + epoch,
            triggered_at=None if b.triggered is None else b.triggered + epoch,
            finished_at=None if timeline is None else timeline.end + epoch,
            log_lines=b.behaviour.log_lines,
            duration=duration,
            reason=reason,
            parent_build_id=b.parent_build_id,
        )


class Readings:
    """The emulator's readings: requests and faults, the build limit, builds and their steps,
    uploads, and sandboxes (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        uploads: Uploads,
        limit: BuildLimit,
        faults: Faults,
        log: RequestLog,
        sandboxes: SandboxRoutes,
    ) -> None:
        self._store, self._uploads, self._limit = store, uploads, limit
        self._faults, self._log, self._sandboxes = faults, log, sandboxes

    # -- requests -----------------------------------------------------------------------

    @property
    def pending_faults(self) -> int:
        """How many injected fault answers remain to be consumed."""
        return self._faults.pending

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path without query, status) of each answered request, oldest first.

        A connection reset is recorded with status 0.  Keeps the last
        MAX_REQUEST_RECORDS requests.
        """
        return [(r.method, r.path, r.status) for r in self._log.records()]

    @property
    def api_keys(self) -> set[str]:
        """Every API key requests carried (an upload to its presigned link carries none)."""
        return {r.api_key for r in self._log.records() if r.api_key is not None}

    @property
    def request_count(self) -> int:
        """Requests handled since start (or since :meth:`reset_counters`)."""
        return self._log.total

    def count(self, route: str | None = None, status: int | None = None) -> int:
        """Requests recorded for ``route`` (a :data:`ROUTES` name) and/or ``status``."""
        return self._log.count(route, status)

    @property
    def http_versions(self) -> set[str]:
        """The HTTP versions requests arrived with (e.g. {"HTTP/1.1"})."""
        return {r.http_version for r in self._log.records()}

    def reset_counters(self) -> None:
        """Forget recorded requests, zero :attr:`request_count` and :attr:`limit_refusals`, and
        make :attr:`peak_builds` look back only to now (builds and held slots are kept)."""
        with self._store.lock:
            self._log.reset()
            self._limit.reset()

    # -- the team's build limit -----------------------------------------------------------

    @property
    def limit_refusals(self) -> int:
        """Build requests answered 429 because the team was at its concurrent-build limit."""
        return self._limit.refusals

    @property
    def held_slots(self) -> int:
        """Slots :meth:`hold_slots` holds now."""
        return self._limit.held()

    @property
    def active_builds(self) -> int:
        """Builds counted against the limit now: this team's waiting and building ones and held slots."""
        return self._limit.active()

    @property
    def peak_builds(self) -> int:
        """The most builds counted against the limit at one time (held slots included), since
        start or :meth:`reset_counters`."""
        return self._limit.peak()

    # -- builds, steps and uploads --------------------------------------------------------

    @property
    def builds(self) -> list[BuildSnapshot]:
        """A snapshot of every build, in the order they were requested."""
        now = self._store.clock()
        with self._store.lock:
            return [BuildSnapshot.of(self._store, b, now) for b in self._store.builds.values()]

    def build(self, build_id: str) -> BuildSnapshot:
        """A snapshot of one build (KeyError if unknown)."""
        now = self._store.clock()
        with self._store.lock:
            return BuildSnapshot.of(self._store, self._store.builds[build_id], now)

    def template_id(self, name: str) -> str | None:
        """The template ID assigned to ``name`` (tag ignored), or None if never built."""
        with self._store.lock:
            return self._store.template_id_of(name.split(":", 1)[0])

    @property
    def step_records(self) -> list[StepRecord]:
        """Every step of a step-timed build started so far, in the order they started."""
        wall = self._store.clock() + self._store.epoch
        with self._store.lock:
            records = [r for t in self._store.courses().values() for r in t.records if r.started_at <= wall]
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
    def uploads(self) -> dict[str, bytes]:
        """Uploaded archives by files hash."""
        return self._uploads.all()

    def upload_count(self, files_hash: str | None = None) -> int:
        """PUT uploads received for ``files_hash`` (or in all)."""
        return self._uploads.count(files_hash)

    def image_of(self, build_id: str) -> str | None:
        """The Docker mode: the image ID a build's sandboxes run (None until it is ready, or when
        the timing mode built it)."""
        with self._store.lock:
            image = self._store.images.get(build_id)
        return None if image is None else image.image

    # -- sandboxes --------------------------------------------------------------------------

    @property
    def sandboxes(self) -> list[SandboxSnapshot]:
        """Every sandbox created, oldest first, with the build its reference resolved to."""
        return self._sandboxes.snapshots()

    def container_of(self, sandbox_id: str) -> str | None:
        """The Docker mode: the name of a running sandbox's container (None when killed or timed)."""
        return self._sandboxes.container_of(sandbox_id)
