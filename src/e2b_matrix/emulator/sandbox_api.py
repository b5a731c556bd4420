"""E2B's sandbox routes: create a sandbox on a resolved build, connect to it, kill it; its timeout.

As E2B's API answers them (repository e2b-dev/infra, packages/api/internal/handlers:
sandbox_create.go, sandbox_connect.go, sandbox_kill.go): a sandbox's reference
resolves as fromTemplate does (the store's ``resolve_reference``); the answer is
E2B's Sandbox model. In the timing mode a sandbox is a record the sandbox proxy
answers "nothing listens" for; in the Docker mode it is a container of its build's
image (sandboxes.py), removed when it is killed, when its timeout passes or when
the emulator stops. Paused sandboxes are not modelled.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from e2b_matrix.emulator.rules import (
    CLIENT_ID,
    DEFAULT_CPU,
    DEFAULT_MEMORY_MB,
    ENVD_VERSION,
    SANDBOX_ID_RE,
    Reply,
    json_bytes,
)
from e2b_matrix.emulator.store import Store

if TYPE_CHECKING:
    from e2b_matrix.emulator.docker_mode import DockerMode
    from e2b_matrix.emulator.docker_steps import Image
    from e2b_matrix.emulator.sandboxes import LiveSandbox

DEFAULT_TIMEOUT = 15  # seconds: E2B's API default (openapi.yml: NewSandbox.timeout)


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
class SandboxRecord:
    """A sandbox started on a resolved build (monotonic times; guarded by the store's lock)."""

    reference: str
    template_id: str
    build_id: str
    sandbox_id: str
    created: float
    killed: float | None = None
    live: LiveSandbox | None = None  # what the sandbox proxy serves
    expiry: threading.Timer | None = None  # the Docker mode: the sandbox's timeout


class SandboxRoutes:
    """The sandboxes the API made, and its routes that make, connect to and kill them."""

    def __init__(self, store: Store, docker: DockerMode | None) -> None:
        self._store, self._docker = store, docker
        self._sandboxes: dict[str, SandboxRecord] = {}

    def create(self, req: dict[str, Any]) -> tuple[int, bytes]:
        """POST /v2/sandboxes: resolve the reference to a ready build and start a sandbox on it
        (in the Docker mode, a container of the build's image)."""
        from e2b_matrix.emulator.sandboxes import LiveSandbox

        reference = req.get("templateID")
        if not isinstance(reference, str):
            raise Reply(400, "Error when parsing request: templateID is required")
        envs = req.get("envVars") or {}
        if not isinstance(envs, dict):
            raise Reply(400, "Error when parsing request: envVars must be an object")
        with self._store.lock:
            template_id, build_id = self._store.resolve_reference(
                reference, self._store.clock(), "Invalid template reference"
            )
            name, image = self._store.name_of(template_id), self._image(build_id)
            build = self._store.builds.get(build_id)
        live = LiveSandbox("i" + uuid.uuid4().hex[:20], image, envs={str(k): str(v) for k, v in envs.items()})
        if self._docker is not None:
            self._run(live, build.cpu_count if build else DEFAULT_CPU, build.memory_mb if build else DEFAULT_MEMORY_MB)
        with self._store.lock:
            sandbox = SandboxRecord(reference, template_id, build_id, live.sandbox_id, self._store.clock(), live=live)
            self._sandboxes[live.sandbox_id] = sandbox
            self._set_expiry(sandbox, req.get("timeout", DEFAULT_TIMEOUT))
            return 201, _answer(sandbox, name)

    def _image(self, build_id: str) -> Image | None:
        """The Docker mode: the image a sandbox of the build runs (Reply 500 when there is none)."""
        if self._docker is None:
            return None
        image = self._store.image_of(build_id)
        if image is None:
            raise Reply(
                500,
                f"Failed to create sandbox: the emulator has no image of build {build_id} "
                "(built in its timing mode, or a public template it has no stand-in of)",
            )
        return image

    def _run(self, live: LiveSandbox, cpus: int, memory_mb: int) -> None:
        """The Docker mode: the sandbox's container runs (Reply 500, the container removed, when not)."""
        from e2b_matrix.backends.docker_engine import DockerError
        from e2b_matrix.emulator.sandboxes import start_sandbox

        assert self._docker is not None
        docker = self._docker
        try:
            start_sandbox(docker.cli, live, owner=docker.owner, devices=docker.devices, cpus=cpus, memory_mb=memory_mb)
        except DockerError as exc:
            docker.cli.remove_container(f"e2b-emulator-sandbox-{live.sandbox_id}")
            raise Reply(500, f"Failed to create sandbox: {' '.join(str(exc).split())[:300]}") from None

    def connect(self, sandbox_id: str, req: dict[str, Any]) -> tuple[int, bytes]:
        """POST /v2/sandboxes/{id}/connect: a running sandbox, its timeout set anew (200); else 404
        (handlers/sandbox_connect.go: KeepAliveFor; paused sandboxes are not modelled)."""
        with self._store.lock:
            sandbox = self._running(sandbox_id)
            self._set_expiry(sandbox, req.get("timeout"))
            return 200, _answer(sandbox, self._store.name_of(sandbox.template_id))

    def kill(self, sandbox_id: str) -> tuple[int, bytes]:
        """DELETE /sandboxes/{id}: kill a running sandbox (204; its container is removed), else 404."""
        with self._store.lock:
            sandbox = self._running(sandbox_id)
            sandbox.killed = self._store.clock()
        self._stop(sandbox)
        return 204, b""

    def _running(self, sandbox_id: str) -> SandboxRecord:
        """The running sandbox of an ID (``<id>`` or ``<id>-<client id>``): Reply 400 or 404 when none."""
        parts = sandbox_id.split("-")
        if len(parts) > 2 or not SANDBOX_ID_RE.fullmatch(parts[0]):
            raise Reply(400, "Invalid sandbox ID")
        sandbox = self._sandboxes.get(parts[0])
        if sandbox is None or sandbox.killed is not None:
            raise Reply(404, f"Sandbox \"{parts[0]}\" doesn't exist or you don't have access to it")
        return sandbox

    def _set_expiry(self, sandbox: SandboxRecord, seconds: Any) -> None:
        """The Docker mode: the sandbox is killed ``seconds`` (an int) from now, as E2B kills it when
        its timeout passes (caller holds the lock)."""
        if self._docker is None or not isinstance(seconds, int) or isinstance(seconds, bool):
            return
        if sandbox.expiry is not None:
            sandbox.expiry.cancel()
        sandbox.expiry = threading.Timer(max(seconds, 0), self._expire, (sandbox.sandbox_id,))
        sandbox.expiry.daemon = True
        sandbox.expiry.start()

    def _expire(self, sandbox_id: str) -> None:
        """The sandbox's timeout passed: E2B kills it."""
        with self._store.lock:
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is None or sandbox.killed is not None:
                return
            sandbox.killed = self._store.clock()
        self._stop(sandbox)

    def _stop(self, sandbox: SandboxRecord) -> None:
        if sandbox.expiry is not None:
            sandbox.expiry.cancel()
        if self._docker is not None and sandbox.live is not None:
            from e2b_matrix.emulator.sandboxes import stop_sandbox

            stop_sandbox(self._docker.cli, sandbox.live)

    def stop(self) -> None:
        """The emulator stops: every running sandbox is killed (the Docker mode: its container removed)."""
        with self._store.lock:
            running = [s for s in self._sandboxes.values() if s.killed is None]
            for s in running:
                s.killed = self._store.clock()
        for s in running:
            self._stop(s)

    # -- readings ---------------------------------------------------------------------------

    def in_use(self, template_id: str) -> bool:
        """Does a sandbox of the template run (caller holds the lock)?"""
        return any(s.template_id == template_id and s.killed is None for s in self._sandboxes.values())

    def live(self, sandbox_id: str) -> LiveSandbox | None:
        """The running sandbox the proxy serves for ``sandbox_id`` (None when unknown or killed)."""
        with self._store.lock:
            sandbox = self._sandboxes.get(sandbox_id)
            return sandbox.live if sandbox is not None and sandbox.killed is None else None

    def container_of(self, sandbox_id: str) -> str | None:
        """The Docker mode: the name of a running sandbox's container (None when killed or timed)."""
        live = self.live(sandbox_id)
        return None if live is None else live.container

    def snapshots(self) -> list[SandboxSnapshot]:
        """Every sandbox created, oldest first."""
        epoch = self._store.epoch
        with self._store.lock:
            return [
                SandboxSnapshot(
                    reference=s.reference,
                    template_id=s.template_id,
                    build_id=s.build_id,
                    sandbox_id=s.sandbox_id,
                    created_at=s.created + epoch,
                    killed_at=None if s.killed is None else s.killed + epoch,
                )
                for s in self._sandboxes.values()
            ]


def _answer(sandbox: SandboxRecord, name: str) -> bytes:
    """E2B's Sandbox model of a sandbox of the template ``name``."""
    return json_bytes(
        {
            "templateID": sandbox.template_id,
            "sandboxID": sandbox.sandbox_id,
            "clientID": CLIENT_ID,
            "envdVersion": ENVD_VERSION,
            "alias": name,
            "domain": None,
        }
    )
