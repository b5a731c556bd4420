"""The timing model: when each build's steps run, hit E2B's layer cache, log, and end.

No background thread runs a timed build: its whole course is computed from the
monotonic clock when asked (see the package docstring, "Timing").  A build the
Docker mode executes (docker_steps.py) fills the same :class:`Timeline` as its
steps really run.  Standard library only.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from e2b_matrix.emulator.rules import CANCELLED_MESSAGE, go_seconds, iso


@dataclass(frozen=True)
class StepSpec:
    """One step of a build as :meth:`E2BEmulator.set_step_cost` predicates see it.

    ``step`` is E2B's step name ("base" for the FROM step, then "1", "2", ...);
    ``type`` is "FROM" for the base; ``text`` is how E2B's log shows the step,
    e.g. ``FROM python:3.11``, ``FROM TEMPLATE parent:v1``, ``RUN echo hi``.
    """

    template: str
    step: str
    type: str
    args: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class StepRecord:
    """What happened to one step of one step-timed build (:attr:`E2BEmulator.step_records`).

    ``outcome`` is "built" (a cache miss that ran), "cached" (a hit: no cost),
    "inherited" (the base of a fromTemplate build: always cached, takes its
    cost), "failed" (ran and failed) or "cancelled" (running when the build was
    cancelled).  ``cost`` is the step's configured cost, whatever the outcome.
    Times are wall-clock; ``published_at`` is when the layer entered the cache
    (None unless built); ``layer_id`` is the built layer's ID (as in E2B's
    "Saved: <id>" log line).
    """

    build_id: str
    template: str
    index: int
    step: str
    text: str
    key: str
    outcome: str
    cost: float
    started_at: float
    finished_at: float
    published_at: float | None
    layer_id: str | None

    @property
    def executed(self) -> bool:
        """True if the step ran (a miss), whether it finished, failed or was cut short."""
        return self.outcome in ("built", "failed", "cancelled")


@dataclass(frozen=True)
class Behaviour:
    """How builds of one template name behave (:meth:`E2BEmulator.configure` sets it).

    - ``duration``: seconds from start to ``ready``/``error`` (whole-build
      timing, no layer cache); ``math.inf``: ``building`` forever (a stuck
      build); None: step timing.
    - ``log_lines``: info log lines the build prints.
    - ``fail_at_step``: None to succeed; an int is the 0-based index into
      the received ``steps``, reported as E2B's step name ``str(i + 1)``
      ("base" is the FROM step); a str ("base", "finalize", "3") is
      reported as is, and under step timing fails that step (or, if the
      build has no such step, the build's end).  A failing build logs the
      failure as an error-level line of that step.
    - ``fail_message``: the error reason's message (the SDK raises BuildException with it).
    """

    duration: float | None  # None: step timing
    log_lines: int
    fail_at_step: int | str | None = None
    fail_message: str | None = None

    @property
    def failed_step(self) -> str | None:
        """E2B's name of the failing step: "base" is FROM, steps are numbered from 1."""
        step = self.fail_at_step
        if step is None:
            return None
        return str(step + 1) if isinstance(step, int) else step

    def failure_message(self, name: str) -> str:
        """The reason message of a configured failure of build ``name``."""
        return self.fail_message or f"emulated failure of {name!r} at step {self.failed_step}"


@dataclass(frozen=True)
class PlannedStep:
    """A step of a step-timed build, fixed when the build starts."""

    spec: StepSpec
    key: str
    cost: float
    force: bool
    inherited: bool  # the base of a fromTemplate build
    lines: tuple[int, ...]  # indexes of the build's log lines printed while it runs


@dataclass(frozen=True)
class Failure:
    """A build that failed before running: superseded, or refused when started."""

    at: float
    message: str
    step: str | None
    superseded: bool


@dataclass
class Build:
    """Mutable internal state of one build (guarded by the emulator's lock); times are monotonic."""

    name: str  # as requested: "name" or "name:tag"
    base_name: str
    template_id: str
    build_id: str
    tags: list[str]
    cpu_count: int
    memory_mb: int
    request_body: dict[str, Any]
    behaviour: Behaviour
    requested: float
    start_body: dict[str, Any] | None = None
    triggered: float | None = None
    plan: tuple[PlannedStep, ...] = ()
    upload_delay: float = 0.0
    parent_build_id: str | None = None
    failure: Failure | None = None
    cancelled: float | None = None
    live: LiveCourse | None = None  # the Docker mode runs its steps: its course as it happens

    def line(self, i: int) -> str:
        """The i-th (0-based) emulated output line."""
        return f"[{self.name}] line {i + 1}/{self.behaviour.log_lines}"


@dataclass(frozen=True)
class Entry:
    """One build log entry (BuildLogEntry) at monotonic ``time``."""

    time: float
    level: str
    message: str
    step: str | None

    def to_json(self, epoch: float) -> dict[str, Any]:
        entry: dict[str, Any] = {"timestamp": iso(self.time + epoch), "level": self.level, "message": self.message}
        if self.step is not None:
            entry["step"] = self.step
        return entry


@dataclass
class Timeline:
    """A started build's whole course: when it ends, how, and what it logs."""

    end: float
    ok: bool
    reason: tuple[str, str | None] | None = None  # (message, step)
    entries: list[Entry] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)

    def cancel(self, at: float) -> None:
        """Cut the course at ``at``: E2B fails a cancelled build with "build was cancelled"."""
        self.entries = [e for e in self.entries if e.time <= at]
        self.entries.append(Entry(at, "error", f"Build failed: {CANCELLED_MESSAGE}", None))
        self.end, self.ok, self.reason = at, False, (CANCELLED_MESSAGE, None)


# --------------------------------------------------------------------------- build courses


class LiveCourse:
    """The timeline of a build whose steps really run (the Docker mode), filled as they do.

    The executor's thread calls :meth:`log`, :meth:`record` and :meth:`finish`; the API
    reads :attr:`timeline` (its ``end`` is infinite until the build ends) under the same
    lock. Once the build ended or was cancelled (:meth:`cancel`, by a newer build of the
    template), nothing more is added: :attr:`stopped` tells the executor to stop.
    """

    def __init__(self, build: Build, lock: threading.RLock, epoch: float):
        assert build.triggered is not None
        self.build, self._lock, self._epoch = build, lock, epoch
        self.timeline = Timeline(
            end=math.inf,
            ok=False,
            entries=[Entry(build.triggered, "info", f"Building template {build.template_id}/{build.build_id}", None)],
        )
        self.stopped = threading.Event()

    @property
    def ended(self) -> bool:
        with self._lock:
            return math.isfinite(self.timeline.end)

    def log(self, level: str, message: str, step: str | None) -> None:
        """A log entry now (dropped once the build ended)."""
        with self._lock:
            if not self.ended:
                self.timeline.entries.append(Entry(time.monotonic(), level, message, step))

    def record(
        self, index: int, step: str, text: str, key: str, outcome: str, started: float, layer: str | None = None
    ) -> None:
        """What happened to one step, ``started`` (monotonic) until now: a :class:`StepRecord`."""
        now = time.monotonic()
        with self._lock:
            if self.ended:
                return
            self.timeline.records.append(
                StepRecord(
                    build_id=self.build.build_id,
                    template=self.build.base_name,
                    index=index,
                    step=step,
                    text=text,
                    key=key,
                    outcome=outcome,
                    cost=round(now - started, 3),
                    started_at=started + self._epoch,
                    finished_at=now + self._epoch,
                    published_at=now + self._epoch if layer else None,
                    layer_id=layer,
                )
            )

    def finish(self, ok: bool, reason: tuple[str, str | None] | None = None) -> None:
        """The build ends now: ready, or failed for ``reason`` (message, step)."""
        with self._lock:
            if not self.ended:
                self.timeline.end, self.timeline.ok, self.timeline.reason = time.monotonic(), ok, reason
            self.stopped.set()

    def cancel(self, at: float) -> None:
        """A newer build of the template cancels this one at ``at`` (E2B: "build was cancelled")."""
        with self._lock:
            if not self.ended:
                self.timeline.cancel(at)
            self.stopped.set()


def whole_build_timeline(b: Build) -> Timeline:
    """Whole-build timing: ``duration`` seconds, the log lines spread evenly over it."""
    assert b.triggered is not None and b.behaviour.duration is not None
    behaviour, start, duration = b.behaviour, b.triggered, b.behaviour.duration
    failed = behaviour.failed_step
    message = behaviour.failure_message(b.name)
    lines = behaviour.log_lines
    total = lines + (failed is not None)  # a failure adds its error line
    steps = len((b.start_body or {}).get("steps") or [])
    entries = []
    for i in range(total):
        # the first at once, all before the end; a build that never ends prints them all at once
        at = start + (duration * i / total if math.isfinite(duration) else 0.0)
        if i < lines:
            owner = i * (steps + 1) // lines  # spread over "base" and steps 1..steps
            entries.append(Entry(at, "info", b.line(i), "base" if owner == 0 else str(owner)))
        else:
            entries.append(Entry(at, "error", message, failed))
    timeline = Timeline(
        end=start + duration,
        ok=failed is None,
        reason=None if failed is None else (message, failed),
        entries=entries,
    )
    if b.cancelled is not None and b.cancelled < timeline.end:
        timeline.cancel(b.cancelled)
    return timeline


def layer_id(build_id: str, index: int) -> str:
    """The ID of the layer step ``index`` of ``build_id`` builds (stable across simulations)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"e2b-emulator/{build_id}/{index}"))


_PUBLISH, _REACH = 0, 1  # at equal times, a layer is published before a lookup happens


class StepSimulation:
    """Runs every started step-timed build through the team's layer cache, in time order.

    A queue holds, per build, when it reaches its next step, and per built
    layer, when it is published.  A lookup sees only layers published at or
    before it, so a step two builds run at once is run by both.  Events in the
    past depend only on the past: re-running the simulation after a build
    starts or is cancelled never rewrites history.
    """

    def __init__(self, builds: Iterable[Build], epoch: float):
        self._epoch = epoch
        self._builds = {b.build_id: b for b in builds}
        self._published: dict[str, float] = {}  # cache key -> when it entered the cache
        self._uploaded: dict[str, float] = {}  # build ID -> when its last publication so far is due
        self._queue: list[tuple[float, int, int, str, int]] = []
        self._order = itertools.count()
        self.timelines: dict[str, Timeline] = {}
        for b in self._builds.values():
            assert b.triggered is not None
            start = Entry(b.triggered, "info", f"Building template {b.template_id}/{b.build_id}", None)
            self.timelines[b.build_id] = Timeline(end=math.inf, ok=False, entries=[start])
            self._uploaded[b.build_id] = b.triggered
            self._push(b.triggered, _REACH, b.build_id, 0)

    def run(self) -> dict[str, Timeline]:
        """Process every event; return each build's timeline (entries in time order)."""
        while self._queue:
            at, kind, _, build_id, index = heapq.heappop(self._queue)
            b = self._builds[build_id]
            if kind == _PUBLISH:
                self._publish(at, b, index)
            elif index == len(b.plan):
                self._finish(at, b)
            else:
                self._step(at, b, index)
        for timeline in self.timelines.values():
            timeline.entries.sort(key=lambda e: e.time)  # stable: equal times keep their order
        return self.timelines

    def _push(self, at: float, kind: int, build_id: str, index: int) -> None:
        heapq.heappush(self._queue, (at, kind, next(self._order), build_id, index))

    def _step(self, at: float, b: Build, index: int) -> None:
        """Build ``b`` reaches step ``index`` at ``at``: look the cache up, run or skip it."""
        timeline = self.timelines[b.build_id]
        if b.cancelled is not None and b.cancelled <= at:
            timeline.cancel(b.cancelled)
            return
        step = b.plan[index]
        outcome = self._outcome(at, b, step)
        cost = 0.0 if outcome == "cached" else step.cost
        end = at + cost
        self._log_step(at, b, index, outcome, cost)
        if b.cancelled is not None and b.cancelled < end:  # cut short
            outcome, end = "cancelled", b.cancelled
        timeline.records.append(self._record(at, end, b, index, outcome))
        if outcome == "cancelled":
            timeline.cancel(end)
        elif outcome == "failed":
            self._fail(end, b, step.spec.step)
        else:
            if outcome == "built":
                self._upload(end, b, index)
            self._push(end, _REACH, b.build_id, index + 1)

    def _outcome(self, at: float, b: Build, step: PlannedStep) -> str:
        """What reaching ``step`` at ``at`` does: fail (as configured), inherit, hit the cache or build."""
        if step.spec.step == b.behaviour.failed_step:
            return "failed"
        if step.inherited:
            return "inherited"
        if not step.force and self._published.get(step.key, math.inf) <= at:
            return "cached"
        return "built"

    def _log_step(self, at: float, b: Build, index: int, outcome: str, cost: float) -> None:
        """The step's line (``CACHED`` in front for a hit) and, while a run lasts, its output."""
        step, entries = b.plan[index], self.timelines[b.build_id].entries
        prefix = "base" if index == 0 else f"builder {index}/{len(b.plan) - 1}"
        cached = "CACHED " if outcome in ("cached", "inherited") else ""
        entries.append(Entry(at, "info", f"{cached}[{prefix}] {step.spec.text} [{step.key}]", step.spec.step))
        if outcome in ("built", "failed"):  # the command's output, while it runs
            for k, line in enumerate(step.lines):
                entries.append(Entry(at + cost * k / len(step.lines), "info", b.line(line), step.spec.step))

    def _record(self, at: float, end: float, b: Build, index: int, outcome: str) -> StepRecord:
        step, built = b.plan[index], outcome == "built"
        return StepRecord(
            build_id=b.build_id,
            template=b.base_name,
            index=index,
            step=step.spec.step,
            text=step.spec.text,
            key=step.key,
            outcome=outcome,
            cost=step.cost,
            started_at=at + self._epoch,
            finished_at=end + self._epoch,
            published_at=end + b.upload_delay + self._epoch if built else None,
            layer_id=layer_id(b.build_id, index) if built else None,
        )

    def _upload(self, end: float, b: Build, index: int) -> None:
        """E2B's layer executor: the built layer is cached locally, then uploaded in the background."""
        layer, published, name = layer_id(b.build_id, index), end + b.upload_delay, b.plan[index].spec.step
        entries = self.timelines[b.build_id].entries
        entries.append(Entry(end, "debug", f"Adding layer to cache: {layer}", name))
        entries.append(Entry(end, "debug", f"Uploading layer: {layer}", name))
        self._uploaded[b.build_id] = max(self._uploaded[b.build_id], published)
        self._push(published, _PUBLISH, b.build_id, index)

    def _publish(self, at: float, b: Build, index: int) -> None:
        """The layer of step ``index`` of ``b`` is uploaded: its key now hits ("Saved: <layer>")."""
        step = b.plan[index]
        self._published.setdefault(step.key, at)
        if b.cancelled is None or at <= b.cancelled:
            self.timelines[b.build_id].entries.append(
                Entry(at, "debug", f"Saved: {layer_id(b.build_id, index)}", step.spec.step)
            )

    def _finish(self, at: float, b: Build) -> None:
        """Every step of ``b`` is done at ``at``: the build ends once its layers are published."""
        timeline = self.timelines[b.build_id]
        if b.cancelled is not None and b.cancelled <= at:
            timeline.cancel(b.cancelled)
            return
        if b.behaviour.failed_step is not None:  # a step the build does not have, e.g. "finalize"
            self._fail(at, b, b.behaviour.failed_step)
            return
        end = max(at, self._uploaded[b.build_id])
        if b.cancelled is not None and b.cancelled < end:
            timeline.cancel(b.cancelled)
            return
        assert b.triggered is not None
        timeline.end, timeline.ok = end, True
        timeline.entries.append(Entry(end, "info", f"Build finished, took {go_seconds(end - b.triggered)}", None))

    def _fail(self, at: float, b: Build, step: str) -> None:
        """Step ``step`` of ``b`` fails at ``at``; the build ends once its uploads are done."""
        timeline = self.timelines[b.build_id]
        message = b.behaviour.failure_message(b.name)
        timeline.entries.append(Entry(at, "error", message, step))
        end = max(at, self._uploaded[b.build_id])
        if b.cancelled is not None and b.cancelled < end:
            timeline.cancel(b.cancelled)
            return
        timeline.end, timeline.ok, timeline.reason = end, False, (message, step)
        timeline.entries.append(Entry(end, "error", f"Build failed: {message}", None))
