"""Build a variant as a local Docker image from the same layers (render.dockerfile).

For trying a template before pushing it to E2B, and for the end-to-end tests
here. Results go to templates.docker.lock: template_id is the image ID,
image the tag (e2b-matrix/<alias>:<fingerprint prefix>).
"""

from __future__ import annotations

import threading
import uuid

from e2b_matrix.backends import BuildError, Cancelled, LogSink, Outcome
from e2b_matrix.backends import docker_engine as engine
from e2b_matrix.errors import ConfigError
from e2b_matrix.model import BuildSpec
from e2b_matrix.render import dockerfile


def image_tag(spec: BuildSpec) -> str:
    return f"e2b-matrix/{spec.alias}:{spec.fingerprint.removeprefix('sha256:')[:12]}"


class DockerBackend:
    name = "docker"
    lock_header = "make build-all BACKEND=docker"

    def __init__(self, ca_certs: tuple[tuple[str, bytes], ...] = ()):
        self.ca_certs = ca_certs

    def secrets(self) -> list[str]:
        return []

    def check(self) -> None:
        if not engine.daemon_available():
            raise ConfigError("no Docker daemon answers: start one (make docker-up runs dockerd here)",
                              key="--backend docker")

    def is_current(self, spec: BuildSpec, entry) -> bool:
        """Fresh only while the locked image is still there."""
        try:
            return bool(entry.image) and engine.image_id(entry.image) == entry.template_id
        except engine.DockerError:
            return False

    def build(self, spec: BuildSpec, *, force: bool, log: LogSink, cancel: threading.Event,
              retry=None) -> Outcome:
        if cancel.is_set():
            raise Cancelled("cancelled before it started")
        tag = image_tag(spec)
        context = {f"ca/{name}": data for name, data in self.ca_certs}
        labels = {"e2b-matrix.alias": spec.alias, "e2b-matrix.variant": spec.name,
                  "e2b-matrix.fingerprint": spec.fingerprint}
        try:
            image_id = engine.build_image(dockerfile(spec), tag, context_files=context,
                                          on_log=lambda line: log([line]), no_cache=force, labels=labels,
                                          cancel=cancel)
        except engine.DockerCancelled:
            raise Cancelled("docker build stopped") from None
        except engine.DockerError as exc:
            raise BuildError(f"docker build failed: {exc}") from None
        return Outcome(template_id=image_id, build_id=uuid.uuid4().hex[:16], image=tag)
