"""The team's templates, builds and tags: E2B's envs, env_builds and env_build_assignments.

One :class:`Store` per emulator holds them, with the one lock that every route and
every reading takes (``store.lock``), the monotonic clock every time is read from, and
the epoch that turns those times into wall-clock ones. Its lookups follow E2B's API
(repository e2b-dev/infra: packages/api/internal/template/register_build.go,
handlers/template_tags.go, db/queries/templates/get_template_with_build_by_tag.sql; see
api.py's docstring, "Builds, tags and references"). The archives uploaded for builds are
kept apart, in :class:`Uploads`. Standard library only.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from e2b_matrix.emulator.rules import DEFAULT_TAG, Reply, as_uuid, parse_reference, template_id_for
from e2b_matrix.emulator.timing import Build, StepSimulation, Timeline, whole_build_timeline

if TYPE_CHECKING:
    from e2b_matrix.emulator.docker_steps import Image


@dataclass(frozen=True)
class Assignment:
    """A row of E2B's env_build_assignments: ``tag`` points at ``build_id``."""

    template_id: str
    build_id: str
    tag: str
    created: float  # monotonic


class Store:
    """This team's templates, their builds and tag assignments, and E2B's public templates.

    ``public_templates`` belong to another team: each has one ready build, tagged ``default``;
    ``standins`` are the Docker mode's images of them (by name). Every method expects the
    caller to hold :attr:`lock` (a reentrant lock: a method may take it again).
    """

    def __init__(self, clock: Callable[[], float], public_templates: Iterable[str], standins: Mapping[str, Image]):
        self.lock = threading.RLock()
        self.clock = clock  # the monotonic clock every time is read from (a test's fake one moves by itself)
        self.epoch = time.time() - clock()  # wall-clock = monotonic + epoch
        self.names: dict[str, str] = {}  # template ID -> name, this team's (one template per name)
        self.deleted: set[str] = set()  # template IDs deleted (never built again)
        self.public_ids = {name: template_id_for(f"public/{name}") for name in public_templates}
        self.public_names = {tid: name for name, tid in self.public_ids.items()}
        self.standins = dict(standins)
        # template ID -> its one (ready) build ID; in the Docker mode a stand-in's build ID follows its image,
        # so layers built on an older stand-in are not found in the cache (their keys hash the parent's build ID)
        self.public_builds = {
            tid: str(
                uuid.uuid5(
                    uuid.NAMESPACE_URL,
                    f"e2b-emulator/public/{tid}" + (f"/{standins[name].image}" if name in standins else ""),
                )
            )
            for name, tid in self.public_ids.items()
        }
        self.builds: dict[str, Build] = {}  # build ID -> build, in request order
        self.assignments: list[Assignment] = []  # oldest first
        self.images: dict[str, Image] = {}  # build ID -> its image, for a build the Docker mode ran
        self._timelines: dict[str, Timeline] | None = None  # memo, dropped on every change

    # -- the course of builds -------------------------------------------------------------

    def courses(self) -> dict[str, Timeline]:
        """The timeline of every build that started or failed (memoized until the next change)."""
        if self._timelines is None:
            courses: dict[str, Timeline] = {}
            stepped = []
            for b in self.builds.values():
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
            courses.update(StepSimulation(stepped, self.epoch).run())
            self._timelines = courses
        return self._timelines

    def course(self, b: Build) -> Timeline | None:
        return self.courses().get(b.build_id)

    def changed(self) -> None:
        """A build started, failed or was cancelled: the timelines must be recomputed."""
        self._timelines = None

    def state(self, b: Build, now: float) -> str:
        """E2B's status of ``b`` at monotonic ``now``: waiting, building, ready or error."""
        timeline = self.course(b)
        if timeline is None:
            return "waiting"
        if now < timeline.end:
            return "building"
        return "ready" if timeline.ok else "error"

    def active_until(self, b: Build) -> float:
        """When ``b`` ends (inf while it waits)."""
        timeline = self.course(b)
        return math.inf if timeline is None else timeline.end

    # -- templates --------------------------------------------------------------------

    def template_of(self, identifier: str) -> str:
        """E2B's alias resolution: the team's name, a public name, then a template ID; Reply 404 if none."""
        template_id = self.template_id_of(identifier)
        if template_id is not None:
            return template_id
        if identifier in self.public_ids:
            return self.public_ids[identifier]
        if identifier in self.names or identifier in self.public_builds:
            return identifier
        raise Reply(404, f"template '{identifier}' not found")

    def template_id_of(self, name: str) -> str | None:
        """The ID of this team's template ``name`` (None if there is none)."""
        return next((tid for tid, n in self.names.items() if n == name), None)

    def new_template_id(self, name: str) -> str:
        """A stable ID for a new template of ``name``; never one of a deleted template."""
        template_id, n = template_id_for(name), 0
        while template_id in self.deleted:
            n += 1
            template_id = template_id_for(f"{name}#{n}")
        return template_id

    def owned(self, identifier: str) -> str:
        """The ID of this team's template ``identifier``: Reply 404 if none, 403 if public."""
        template_id = self.template_of(identifier)
        if template_id in self.public_builds:
            raise Reply(403, f"You don't have access to sandbox template '{identifier}'")
        return template_id

    def name_of(self, template_id: str) -> str:
        """The name of a template: this team's, or a public one's."""
        return self.names.get(template_id) or self.public_names[template_id]

    def image_of(self, build_id: str) -> Image | None:
        """The Docker mode's image of a build: a public template's stand-in, or what the build made."""
        public = next((t for t, b in self.public_builds.items() if b == build_id), None)
        if public is not None:
            return self.standins.get(self.public_names[public])
        return self.images.get(build_id)

    def delete(self, template_id: str) -> None:
        """The template, its builds and tags are gone; its ID is never built again."""
        if self.names.pop(template_id, None) is not None:
            self.deleted.add(template_id)
        gone = {b for b, build in self.builds.items() if build.template_id == template_id}
        for b in gone:
            del self.builds[b]
        self.assignments = [a for a in self.assignments if a.build_id not in gone]
        self.changed()

    # -- tags and references ------------------------------------------------------------

    def tags_of(self, build_id: str) -> set[str]:
        return {a.tag for a in self.assignments if a.build_id == build_id}

    def resolve(self, template_id: str, tag: str | None, now: float) -> str | None:
        """The ID of the build of the newest assignment of ``tag`` (or a build ID) whose
        build is ready."""
        tag = tag or DEFAULT_TAG
        build_id = as_uuid(tag)
        if template_id in self.public_builds:
            public = self.public_builds[template_id]
            return public if tag == DEFAULT_TAG or build_id == public else None
        for a in reversed(self.assignments):
            if (
                a.template_id == template_id
                and (a.tag == tag or a.build_id == build_id)
                and self.state(self.builds[a.build_id], now) == "ready"
            ):
                return a.build_id
        return None

    def resolve_reference(self, reference: str, now: float, invalid: str) -> tuple[str, str]:
        """Resolve ``name[:tag]`` or ``template_id[:tag|:build_id]`` as E2B's sandbox and
        fromTemplate lookups do: (template ID, build ID), or Reply with E2B's status and
        message (``invalid`` prefixes the message for a malformed reference)."""
        identifier, tag = parse_reference(reference, invalid)
        template_id = self.template_of(identifier)
        build_id = self.resolve(template_id, tag, now)
        if build_id is None:
            raise Reply(404, f"tag '{tag or DEFAULT_TAG}' does not exist for template '{identifier}'")
        return template_id, build_id

    def find_build(self, template_id: str, build_id: str) -> Build | None:
        """E2B's GetTemplateBuildWithTemplate: the build of that template *ID* with an assignment."""
        build = self.builds.get(build_id)
        if build is None or build.template_id != template_id or not self.tags_of(build_id):
            return None
        return build


class Uploads:
    """The bucket E2B's upload links point at: each archive by its files hash, and how often it
    was put (under the store's lock)."""

    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._bodies: dict[str, bytes] = {}  # files hash -> uploaded body
        self._counts: dict[str, int] = {}

    def put(self, files_hash: str, body: bytes) -> None:
        with self._lock:
            self._bodies[files_hash] = body
            self._counts[files_hash] = self._counts.get(files_hash, 0) + 1

    def get(self, files_hash: str) -> bytes | None:
        with self._lock:
            return self._bodies.get(files_hash)

    def has(self, files_hash: str) -> bool:
        with self._lock:
            return files_hash in self._bodies

    def all(self) -> dict[str, bytes]:
        with self._lock:
            return dict(self._bodies)

    def count(self, files_hash: str | None = None) -> int:
        with self._lock:
            if files_hash is None:
                return sum(self._counts.values())
            return self._counts.get(files_hash, 0)
