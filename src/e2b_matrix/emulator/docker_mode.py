"""The Docker mode: what an emulator needs to run builds' steps and sandboxes in Docker.

``DockerMode.prepare()`` checks the daemon, makes (or finds) the stand-ins of
E2B's public templates (standin.py) and returns what ``E2BEmulator(docker=...)``
takes. Every container it makes carries this emulator's owner label, so
:meth:`DockerMode.close` removes whatever is left when it stops; images (the
layer cache, the stand-ins) stay for the next run.
"""

from __future__ import annotations

import contextlib
import copy
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from e2b_matrix.backends.docker_discovery import discover
from e2b_matrix.backends.docker_engine import DockerCLI, DockerError
from e2b_matrix.emulator import standin
from e2b_matrix.emulator.docker_shell import Context
from e2b_matrix.emulator.docker_steps import OWNER_LABEL, DockerSteps, Image, Job
from e2b_matrix.emulator.timing import Build, LiveCourse

if TYPE_CHECKING:
    from e2b_matrix.emulator.store import Store, Uploads

FUSE = "/dev/fuse"  # E2B's sandboxes have it (the fuse layer's checks mount with it)


class DockerUnavailable(Exception):
    """The Docker mode cannot run here: no daemon, or no base to make a stand-in from (says why)."""


@dataclass
class DockerMode:
    """The Docker CLI, the public templates' images and the step executor of one emulator."""

    cli: DockerCLI
    public: dict[str, Image]  # E2B public template name -> its stand-in's image
    owner: str
    devices: tuple[str, ...]
    steps: DockerSteps

    @classmethod
    def prepare(
        cls, cli: DockerCLI | None = None, on_log: Callable[[str], None] | None = None, base: str = standin.DEBIAN_BASE
    ) -> DockerMode:
        """Ready to run: DockerUnavailable when no daemon answers or a stand-in cannot be made."""
        cli = cli or DockerCLI(discover())
        if not cli.daemon_available(timeout=10):
            raise DockerUnavailable("no Docker daemon answers `docker info` (make docker-up starts one)")
        try:
            made = standin.code_interpreter(cli, on_log, base)
        except standin.StandinError as exc:
            raise DockerUnavailable(str(exc)) from None
        image = Image(made.image, Context(made.user, made.workdir, made.envs), None, made.code_interpreter)
        return cls._made(cli, {made.template: image}, (FUSE,) if os.path.exists(FUSE) else ())

    @classmethod
    def _made(cls, cli: DockerCLI, public: dict[str, Image], devices: tuple[str, ...]) -> DockerMode:
        owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return cls(cli, public, owner, devices, DockerSteps(cli, owner, devices))

    def fork(self) -> DockerMode:
        """The same daemon and stand-ins under a new owner: what one emulator uses (E2BEmulator
        forks the mode it is given), so stopping it removes its own containers only."""
        return self._made(self.cli, self.public, self.devices)

    def run_build(self, build: Build, start: dict[str, Any], store: Store, uploads: Uploads) -> None:
        """Start executing ``build``'s steps (the caller holds the store's lock; the plan is made):
        its course is what happens, its image is recorded when it is ready."""
        parent = None if build.parent_build_id is None else store.image_of(build.parent_build_id)
        course = LiveCourse(build, store.lock, store.epoch)
        build.live = course

        def done(image: Image, build_id: str = build.build_id) -> None:
            with store.lock:
                store.images[build_id] = image

        self.steps.start(
            Job(course, build.plan, copy.deepcopy(start), parent, uploads.get, build.cpu_count, build.memory_mb, done)
        )

    def close(self) -> None:
        """Remove every container this emulator made that is still there."""
        try:
            names = self.cli.containers(f"{OWNER_LABEL}={self.owner}")
        except DockerError:
            return
        for name in names:
            with contextlib.suppress(DockerError):
                self.cli.remove_container(name)
