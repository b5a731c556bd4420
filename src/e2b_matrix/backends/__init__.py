"""Backends: one small interface, ``build(spec, ...) -> Outcome``.

``e2b`` builds on E2B through the SDK; ``docker`` builds a local image from
the same layers. Both are imported only when a build runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import attrs

from e2b_matrix.errors import MatrixError
from e2b_matrix.model import BuildSpec


@attrs.frozen(slots=False)
class Outcome:
    template_id: str
    build_id: str
    image: str = ""
    domain: str = ""


class BuildError(MatrixError):
    """The build itself failed (E2B said error, docker build failed): not retried."""


class TransientError(MatrixError):
    """Worth another attempt: 429, 5xx, a reset connection, a timeout."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(MatrixError):
    """Stopped on request (fail-fast, Ctrl-C) before the build finished."""


LogSink = Callable[[list[str]], None]


class Backend(Protocol):
    name: str
    lock_header: str

    def check(self) -> None:
        """Fail at once (CredentialsError, ConfigError) when this backend cannot build."""

    def is_current(self, spec: BuildSpec, entry) -> bool:
        """Is the artifact in the lock entry still there (Docker images can be removed)?"""

    def build(self, spec: BuildSpec, *, force: bool, log: LogSink, cancel: threading.Event,
              retry=None) -> Outcome:
        """Build one spec; raise BuildError, TransientError, Cancelled or CredentialsError.

        ``retry`` (a RetryPolicy) is for failures after the build started,
        retried in place; a TransientError means "submit again".
        """


def get_backend(name: str, **options) -> Backend:
    if name == "e2b":
        from e2b_matrix.backends.e2b import E2BBackend

        return E2BBackend(**options)
    if name == "docker":
        from e2b_matrix.backends.docker import DockerBackend

        return DockerBackend(**options)
    raise ValueError(f"unknown backend {name!r}")
