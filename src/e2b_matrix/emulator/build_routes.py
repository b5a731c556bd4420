"""E2B's build routes: request a build, upload its files, start it, follow its status.

As E2B's API answers them (repository e2b-dev/infra, packages/api/internal:
template/register_build.go; handlers: template_request_build_v3.go,
template_layer_files_upload.go, template_start_build_v2.go,
template_build_status.go; see api.py's docstring, "Builds, tags and references"
and "Timing"). Every route but the upload runs under the store's lock, at one
instant ``now``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from e2b_matrix.emulator.limit import BuildLimit
from e2b_matrix.emulator.plans import Planner
from e2b_matrix.emulator.rules import (
    DEFAULT_CPU,
    DEFAULT_MEMORY_MB,
    DEFAULT_TAG,
    FILES_HASH_RE,
    MAX_LOG_PAGE,
    NO_ROWS,
    SUPERSEDED_MESSAGE,
    Reply,
    as_uuid,
    json_bytes,
    validate_tags,
)
from e2b_matrix.emulator.store import Assignment, Store, Uploads
from e2b_matrix.emulator.timing import Build, Failure, Timeline
from e2b_matrix.names import ALIAS

if TYPE_CHECKING:
    from e2b_matrix.emulator.docker_mode import DockerMode


class BuildRoutes:
    """The routes of E2B's build flow over the store; ``url`` gives the API's base URL (the upload links')."""

    def __init__(
        self,
        store: Store,
        uploads: Uploads,
        limit: BuildLimit,
        planner: Planner,
        docker: DockerMode | None,
        url: Callable[[], str],
    ) -> None:
        self._store, self._uploads, self._limit, self._planner = store, uploads, limit, planner
        self._docker, self._url = docker, url

    # -- POST /v3/templates ------------------------------------------------------------

    def request_build(self, req: dict[str, Any], now: float) -> tuple[int, bytes]:
        """POST /v3/templates: validate, check the team's build limit, supersede waiting builds,
        assign tags, answer 202."""
        store = self._store
        name, base, tags = _name_and_tags(req)
        template_id = store.template_id_of(base) or store.new_template_id(base)
        self._limit.check(template_id, tags, now)
        cpu, memory = _resources(req)
        store.names[template_id] = base
        self._supersede(template_id, tags, now)
        build_id = str(uuid.uuid4())
        store.builds[build_id] = Build(
            name=name,
            base_name=base,
            template_id=template_id,
            build_id=build_id,
            tags=tags,
            cpu_count=cpu,
            memory_mb=memory,
            request_body=copy.deepcopy(req),
            behaviour=self._planner.behaviour(name, base),
            requested=now,
        )
        store.assignments.extend(Assignment(template_id, build_id, tag, now) for tag in tags)
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

    def _supersede(self, template_id: str, tags: list[str], now: float) -> None:
        """E2B's InvalidateUnstartedTemplateBuilds: the template's waiting builds sharing a tag fail."""
        for old in self._store.builds.values():
            waiting = old.template_id == template_id and self._store.state(old, now) == "waiting"
            if waiting and self._store.tags_of(old.build_id) & set(tags):
                old.failure = Failure(now, SUPERSEDED_MESSAGE, None, superseded=True)
                self._store.changed()

    # -- files ----------------------------------------------------------------------------

    def file_link(self, template_id: str, files_hash: str) -> tuple[int, bytes]:
        """GET /templates/{id}/files/{hash}: where to upload, and whether it's cached."""
        if not FILES_HASH_RE.fullmatch(files_hash):
            raise Reply(400, "Invalid files hash")
        if template_id not in self._store.names:
            raise Reply(404, f"Error when getting template: {NO_ROWS}")
        url = f"{self._url()}/upload/{quote(files_hash, safe='')}"
        return 201, json_bytes({"present": self._uploads.has(files_hash), "url": url})

    def upload(self, files_hash: str, body: bytes) -> tuple[int, bytes]:
        """PUT /upload/{hash}: store the archive (like a presigned bucket URL)."""
        self._uploads.put(files_hash, body)
        return 200, b""

    # -- POST /v2/templates/{id}/builds/{bid} ------------------------------------------------

    def trigger(self, template_id: str, build_id: str, start: dict[str, Any], now: float) -> tuple[int, bytes]:
        """POST /v2/templates/{id}/builds/{bid}: cancel running rivals, then start the build."""
        steps = start.get("steps", [])
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise Reply(400, "Invalid request body: steps must be a list of objects")
        if as_uuid(build_id) is None:
            raise Reply(400, f"Invalid build ID: {build_id}")
        build = self._store.find_build(template_id, build_id)
        if build is None:
            raise Reply(404, f"Error when getting template: {NO_ROWS}")
        self._cancel_rivals(build, now)
        if self._store.state(build, now) != "waiting":
            raise Reply(400, "build is not in waiting state")
        source_error = self._source(build, start, now)
        build.start_body, build.triggered = copy.deepcopy(start), now
        if build.failure is None and build.behaviour.duration is None:
            build.plan, build.upload_delay = self._planner.plan(build, start), self._planner.upload_delay
            if self._docker is not None:
                self._docker.run_build(build, start, self._store, self._uploads)
        self._store.changed()
        if source_error is not None:
            raise Reply(500, f"Error when starting template build: {source_error}")
        return 202, b""

    def _cancel_rivals(self, build: Build, now: float) -> None:
        """E2B's CheckAndCancelConcurrentBuilds: the template's running builds sharing a tag end."""
        tags = self._store.tags_of(build.build_id)
        for other in self._store.builds.values():
            if (
                other is not build
                and other.template_id == build.template_id
                and self._store.state(other, now) == "building"
                and self._store.tags_of(other.build_id) & tags
            ):
                other.cancelled = now
                if other.live is not None:
                    other.live.cancel(now)
                self._store.changed()

    def _source(self, build: Build, start: dict[str, Any], now: float) -> str | None:
        """Resolve the build's source: the error of a start body with none or both (the build fails
        and the start is answered 500); a fromTemplate that resolves to nothing fails at "base"."""
        has_image, has_template = start.get("fromImage") is not None, bool(start.get("fromTemplate"))
        if has_image == has_template:
            problem = "cannot specify both" if has_image else "must specify either"
            source_error = f"failed to set template source: {problem} fromImage or fromTemplate"
            build.failure = Failure(now, f"error when building env: {source_error}", None, superseded=False)
            return source_error
        if has_template:
            try:
                _, build.parent_build_id = self._store.resolve_reference(
                    str(start["fromTemplate"]), now, "invalid template reference"
                )
            except Reply as refused:  # E2B accepts the start and fails the build at "base"
                build.failure = Failure(now, refused.message, "base", superseded=False)
        return None

    # -- GET .../status --------------------------------------------------------------------

    def status(self, template_id: str, build_id: str, query: dict[str, list[str]], now: float) -> tuple[int, bytes]:
        """GET .../status?logsOffset=N&limit=M: status and a page of log entries."""
        canonical = as_uuid(build_id)
        if canonical is None:
            raise Reply(400, "Invalid build id")
        build = self._store.find_build(template_id, canonical)
        if build is None:
            raise Reply(400, f"Build '{canonical}' not found")
        offset, limit = _page(query)
        status = self._store.state(build, now)
        info: dict[str, Any] = {
            "templateID": template_id,
            "buildID": build_id,
            "status": status,
            "logs": [],
            "logEntries": [],
        }
        timeline = self._store.course(build)
        if status == "waiting" or timeline is None:
            return 200, json_bytes(info)
        page = [e for e in timeline.entries if e.time <= now][offset : offset + limit]
        info["logEntries"] = [e.to_json(self._store.epoch) for e in page]
        if status == "error" and timeline.reason is not None:
            info["reason"] = self._reason(timeline, page)
        return 200, json_bytes(info)

    def _reason(self, timeline: Timeline, page: list[Any]) -> dict[str, Any]:
        """A failed build's reason; for a failed step, with this page's warnings and errors of it."""
        assert timeline.reason is not None
        message, step = timeline.reason
        reason: dict[str, Any] = {"message": message}
        if step is not None:
            reason["step"] = step
            reason["logEntries"] = [
                e.to_json(self._store.epoch) for e in page if e.step == step and e.level in ("warn", "error")
            ]
        return reason

    def stop(self) -> None:
        """The emulator stops: every build running in Docker is cancelled."""
        with self._store.lock:
            live = [b.live for b in self._store.builds.values() if b.live is not None]
        for course in live:
            course.cancel(self._store.clock())


def _name_and_tags(req: dict[str, Any]) -> tuple[str, str, list[str]]:
    """The requested name, its template's name, and the build's tags (``default`` when none)."""
    name = req.get("name") or req.get("alias")
    if not isinstance(name, str) or not name:
        raise Reply(400, "Name is required")
    base, sep, name_tag = name.partition(":")
    if not ALIAS.fullmatch(base):
        raise Reply(400, f"Invalid template name '{base}': must match ^[a-z0-9-_]+$")
    extra_tags = req.get("tags") or []
    if not isinstance(extra_tags, list):
        raise Reply(400, "Invalid request body: tags must be a list of strings")
    tags = validate_tags(([name_tag] if sep and name_tag != DEFAULT_TAG else []) + extra_tags)
    return name, base, tags or [DEFAULT_TAG]


def _resources(req: dict[str, Any]) -> tuple[int, int]:
    """The build's CPU count and memory (MB), as E2B accepts them."""
    cpu = req.get("cpuCount", DEFAULT_CPU)
    if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 1 or cpu > 32 or (cpu != 1 and cpu % 2):
        raise Reply(400, f"Invalid cpuCount {cpu!r}: must be 1 or an even number up to 32")
    memory = req.get("memoryMB", DEFAULT_MEMORY_MB)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 128 or memory % 2:
        raise Reply(400, f"Invalid memoryMB {memory!r}: must be an even number >= 128")
    return cpu, memory


def _page(query: dict[str, list[str]]) -> tuple[int, int]:
    """The log page asked for: (logsOffset, limit), the limit at most MAX_LOG_PAGE."""
    try:
        offset = max(0, int(query.get("logsOffset", ["0"])[0]))
        limit = min(MAX_LOG_PAGE, max(0, int(query.get("limit", [str(MAX_LOG_PAGE)])[0])))
    except ValueError:
        raise Reply(400, "logsOffset and limit must be integers") from None
    return offset, limit
