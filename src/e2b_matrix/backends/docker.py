"""Build a variant as a local Docker image from the same layers (render.dockerfile).

For trying a template before pushing it to E2B, and for the end-to-end tests
here. Results go to templates.docker.lock: ``template_id`` is the image ID,
``image`` the tag ``e2b-matrix/<alias>:<build_id>`` (the pinned reference: a
tag no later build moves, so a rebuild of the same spec with --force leaves
the locked image where it is, and rollback and promote act on the image the
lock records), and a channel is the image tag ``e2b-matrix/<alias>:<channel>``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2b_matrix import files, render
from e2b_matrix.backends import REGISTRY, ChannelState, LogSink
from e2b_matrix.backends.docker_discovery import discover
from e2b_matrix.backends.docker_engine import DockerCancelled, DockerCLI, DockerError, DockerNotFound, DockerTimeout
from e2b_matrix.errors import BuildError, Cancelled, ConfigError
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.model import Base, BuildSpec, Check, Outcome, Removal
from e2b_matrix.settings import BUILD_TIMEOUT, DOCKER_BUILDKIT
from e2b_matrix.verify import CheckResult, VerifyReport, first_line, judge, run

if TYPE_CHECKING:
    from e2b_matrix.lock import TemplateLock
    from e2b_matrix.settings import Settings

REPOSITORY = "e2b-matrix"


_BUILD_TAG = re.compile(r"[0-9a-f]{16}")  # a build's own tag (image_tag); a channel's is its name


def _is_build_tag(tag: str) -> bool:
    return bool(_BUILD_TAG.fullmatch(tag.rpartition(":")[2]))


def _alias_of(tag: str) -> str:
    """``e2b-matrix/<alias>:<tag>`` -> ``<alias>``."""
    return tag.removeprefix(f"{REPOSITORY}/").rpartition(":")[0]


def image_tag(spec: BuildSpec, build_id: str) -> str:
    """The tag of one build: never moved, never reused (build IDs are random)."""
    return f"{REPOSITORY}/{spec.alias}:{build_id}"


def _read_ca(path: str) -> tuple[str, bytes]:
    try:
        data = files.read_bytes(path)
    except files.FileError as exc:
        raise ConfigError(f"cannot read CA certificate: {exc}", path=path, key="--ca-cert") from None
    if data is None:
        raise ConfigError("cannot read CA certificate: no such file", path=path, key="--ca-cert")
    if b"BEGIN CERTIFICATE" not in data:
        raise ConfigError("not a PEM certificate", path=path, key="--ca-cert")
    return Path(path).stem + ".crt", data


class DockerBackend:
    name = "docker"
    lock_file = REGISTRY[name].lock_file  # the registry line holds what the CLI reads without this module
    regenerate = REGISTRY[name].regenerate
    render_format = REGISTRY[name].render_format
    options = REGISTRY[name].options  # --ca-cert: the constructor's ca_certs

    def __init__(self, settings: Settings, ca_certs: Iterable[str] = ()):
        self.settings = settings
        self.ca_certs = tuple(sorted(_read_ca(p) for p in ca_certs))
        self._engine: DockerCLI | None = None
        self._discovering = threading.Lock()

    @property
    def engine(self) -> DockerCLI:
        """The docker CLI and builder the settings select, found on first use (one probe at a time) and
        kept once a daemon answered it: an answer found while none did is sought again next time."""
        with self._discovering:
            if self._engine is not None:
                return self._engine
            engine = DockerCLI(discover(self.settings.docker_cli, self.settings.docker_buildkit))
            if engine.discovery.daemon_answered:
                self._engine = engine
            return engine

    # -- what a spec is, here -----------------------------------------------------

    def base(self, params: Mapping[str, Any]) -> Base:
        return Base("image", params["image"], params["image_python"])

    def files(self) -> tuple[tuple[str, str], ...]:
        return tuple((f"ca/{n}", hashlib.sha256(data).hexdigest()) for n, data in self.ca_certs)

    def runs(self, check: Check) -> bool:
        return not check.stateful  # no kernel to keep Python state between cells

    def render(self, spec: BuildSpec) -> str:
        return render.dockerfile(spec)

    def check(self) -> None:
        """The discovery asked the daemon (``docker version``): a second question (``docker info``) would
        only repeat it; an answer without a daemon is never kept, so a call after one starts asks again."""
        found = self.engine.discovery
        if not found.daemon_answered:
            raise ConfigError(
                "no Docker daemon answers: start one (make docker-up runs dockerd here)", key="--backend docker"
            )
        if found.error:  # BuildKit required, and no docker CLI here offers it
            raise ConfigError(found.error, key=DOCKER_BUILDKIT.name)

    def staleness(self, entry: LockEntry) -> str | None:
        """Fresh only while the locked image is still there; ConfigError when the daemon cannot say
        (a daemon that did not answer is not an image that is gone)."""
        return self.gone(entry, entry.build_id)

    def gone(self, entry: LockEntry, build_id: str) -> str | None:
        """Why the image of build ``build_id`` of the entry is not there (gone, or its tag moved to
        another image), or None; ConfigError when the daemon cannot say."""
        image, image_id = self._image_of(entry, build_id)
        try:
            if image and self.engine.image_id(image) == image_id:
                return None
        except DockerNotFound:
            pass
        except DockerError as exc:
            raise ConfigError(
                f"cannot ask the Docker daemon about image {image}: {first_line(exc)}", key="--backend docker"
            ) from None
        return f"image {image or image_id} of build {build_id} is gone"

    def reference(self, entry: LockEntry) -> str:
        return entry.image or entry.template_id

    def channel_reference(self, entry: LockEntry, channel: str) -> str:
        return f"{REPOSITORY}/{entry.alias}:{channel}"

    # -- build and verify ----------------------------------------------------------

    def shares_in_flight(self) -> bool:
        """BuildKit runs an identical step of concurrent builds once; the legacy builder does not."""
        return self.engine.discovery.buildkit

    def build(
        self,
        spec: BuildSpec,
        *,
        force: bool,
        log: LogSink,
        cancel: threading.Event,
        progress: Callable[[int], None] | None = None,
    ) -> Outcome:
        if cancel.is_set():
            raise Cancelled("cancelled before it started")
        build_id = uuid.uuid4().hex[:16]
        tag = image_tag(spec, build_id)
        try:
            image_id = self.engine.build_image(
                self.render(spec),
                tag,
                context_files=self._context(spec),
                on_log=lambda line: log([line]),
                no_cache=force,
                labels={
                    "e2b-matrix.alias": spec.alias,
                    "e2b-matrix.variant": spec.name,
                    "e2b-matrix.fingerprint": spec.fingerprint,
                },
                cancel=cancel,
                timeout=self.settings.build_timeout,
            )
        except DockerCancelled:
            raise Cancelled("docker build stopped") from None
        except DockerTimeout:
            raise BuildError(
                f"{tag} was still building after {self.settings.build_timeout:g}s "
                f"({BUILD_TIMEOUT}); the docker build was stopped"
            ) from None
        except DockerError as exc:
            raise BuildError(f"docker build failed: {exc}") from None
        return Outcome(template_id=image_id, build_id=build_id, image=tag)

    def _context(self, spec: BuildSpec) -> dict[str, bytes]:
        """The files the spec's Dockerfile copies: the CA certificates and the requirements files."""
        return {
            **{f"ca/{n}": data for n, data in self.ca_certs},
            **{r.path: r.content for r in spec.requirements if r.content is not None},
        }

    def verify(self, spec: BuildSpec, built: LockEntry | Outcome) -> VerifyReport:
        def one(check: Check) -> CheckResult:
            assert check.command is not None, "a check without cells runs a command (model.Check)"
            code, output = self.engine.run_in_container(
                built.image, check.command, user=check.user, devices=check.devices
            )
            return judge(check, code, output)

        return run((c for c in spec.checks if self.runs(c)), one)

    # -- channels: image tags ------------------------------------------------------

    def leftovers(self, lock: TemplateLock, defined: set[str]) -> list[Removal]:
        """The images this backend built for the project (an alias of its lock or of its variants: the daemon
        may hold other projects' images too) that no build of the lock, of its history or behind a channel
        tag holds; ConfigError when no daemon answers."""
        if not self.engine.discovery.daemon_answered:  # found (asked) now unless a daemon answered before
            raise ConfigError("no Docker daemon answers: its images were not looked at", key="--backend docker")
        kept = {b.template_id or e.template_id for e in lock for b in e.history} | {e.template_id for e in lock}
        tags = self.engine.images(REPOSITORY)
        kept |= {image_id for tag, image_id in tags if not _is_build_tag(tag)}  # behind a channel tag
        ours = {e.alias for e in lock} | defined
        return [
            Removal("docker image", tag, "its build is in neither templates.docker.lock nor its history", ref=tag)
            for tag, image_id in tags
            if image_id not in kept and _is_build_tag(tag) and _alias_of(tag) in ours
        ]

    def remove(self, ref: str) -> str | None:
        """Remove image tag ``ref`` (the image goes with its last tag); None when it is gone."""
        try:
            self.engine.remove_image(ref)
        except DockerError as exc:
            return first_line(exc)
        return None

    def _image_of(self, entry: LockEntry, build_id: str) -> tuple[str, str]:
        """(the tag, the image ID) the lock records for build ``build_id`` of the entry."""
        if build_id == entry.build_id:
            return entry.image, entry.template_id
        for b in entry.history:
            if b.build_id == build_id and b.image:
                return b.image, b.template_id or entry.template_id
        raise ConfigError(f"no image of build {build_id} is recorded", key=entry.alias)

    def point(self, entry: LockEntry, channel: str, build_id: str) -> None:
        """Tag the image of that build by its ID: what the lock recorded, whatever a tag says now."""
        try:
            self.engine.tag_image(self._image_of(entry, build_id)[1], self.channel_reference(entry, channel))
        except DockerError as exc:
            raise BuildError(f"docker tag failed: {first_line(exc)}") from None

    def channels(self, entry: LockEntry) -> tuple[list[ChannelState], str | None]:
        gone = self.gone(entry, entry.build_id)
        if gone:
            return [], gone
        ids = {b.template_id or entry.template_id: b.build_id for b in reversed(entry.history)}
        ids[entry.template_id] = entry.build_id
        state = []
        for channel in entry.channels:
            try:
                image_id = self.engine.image_id(self.channel_reference(entry, channel))
            except DockerNotFound:
                state.append(ChannelState(channel, None))
                continue
            except DockerError as exc:
                raise ConfigError(
                    f"cannot ask the Docker daemon about channel {channel}: {first_line(exc)}", key="--backend docker"
                ) from None
            state.append(ChannelState(channel, ids.get(image_id, image_id)))
        return state, None
