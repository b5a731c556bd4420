"""E2B's rules the emulator follows: routes, names, tags, references, limits, cache keys, error bodies.

Each rule cites where E2B's code says it (repository e2b-dev/infra unless named).
Standard library and names.py only.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from e2b_matrix import names

# E2B's name and tag patterns (packages/shared/pkg/id/id.go) are names.ALIAS and names.TAG,
# matched whole: a trailing newline is refused.
# What Go's uuid.Parse accepts among strings a tag may be (tags "cannot be a UUID").
UUID_LIKE_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
FILES_HASH_RE = re.compile(r"[0-9a-f]{64}")
SANDBOX_ID_RE = re.compile(r"[a-z0-9]+")

DEFAULT_TAG = "default"
DEFAULT_CPU = 2
DEFAULT_MEMORY_MB = 1024
MAX_LOG_PAGE = 100  # E2B's status endpoint returns at most 100 log entries per call
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_REQUEST_RECORDS = 100_000
MAX_BODY_BYTES = 8 * 1024 * 1024  # JSON bodies; uploads use MAX_UPLOAD_BYTES
ENVD_VERSION = "0.6.13"  # packages/envd/pkg/version.go
CLIENT_ID = "6532622b"  # packages/shared/pkg/consts/sandboxes.go, kept for compatibility
SUPERSEDED_MESSAGE = "The build was canceled because it was superseded by a newer one."
CANCELLED_MESSAGE = "build was cancelled"  # orchestrator builderrors.ErrCanceled
NO_ROWS = "no rows in result set"  # what E2B's lookups report in their 404 messages
BUILD_LIMIT = 20  # tiers.concurrent_template_builds' default: the team's concurrent builds
ACTIVE_BUILD_WINDOW = 86400.0  # get_inprogress_builds.sql counts active rows of the last day only


def build_limit_message(limit: int) -> str:
    """E2B's 429 message for a team at its concurrent-build limit (register_build.go)."""
    return (
        f"you have reached the maximum number of concurrent template builds ({limit}). "
        "Please wait for existing builds to complete or contact support if you need more concurrent builds."
    )


# (method, route, path) of each route, as the SDK's generated client calls them (e2b/api/client/api/*).
ROUTE_PATTERNS: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("POST", "request_build", re.compile(r"^/v3/templates/?$")),
    ("POST", "assign_tags", re.compile(r"^/templates/tags/?$")),
    ("DELETE", "remove_tags", re.compile(r"^/templates/tags/?$")),
    ("GET", "alias", re.compile(r"^/templates/aliases/(?P<alias>[^/]+)$")),
    ("GET", "get_tags", re.compile(r"^/templates/(?P<tid>[^/]+)/tags$")),
    ("GET", "files", re.compile(r"^/templates/(?P<tid>[^/]+)/files/(?P<hash>[^/]+)$")),
    ("PUT", "upload", re.compile(r"^/upload/(?P<hash>[^/]+)$")),
    ("POST", "trigger", re.compile(r"^/v2/templates/(?P<tid>[^/]+)/builds/(?P<bid>[^/]+)$")),
    ("GET", "status", re.compile(r"^/templates/(?P<tid>[^/]+)/builds/(?P<bid>[^/]+)/status$")),
    ("POST", "create_sandbox", re.compile(r"^/v2/sandboxes/?$")),
    ("POST", "connect_sandbox", re.compile(r"^(?:/v2)?/sandboxes/(?P<sid>[^/]+)/connect$")),
    ("DELETE", "kill_sandbox", re.compile(r"^/sandboxes/(?P<sid>[^/]+)$")),
    ("DELETE", "delete_template", re.compile(r"^/templates/(?P<tid>[^/]+)$")),
)
#: Route names accepted by :meth:`E2BEmulator.inject` and :meth:`E2BEmulator.count`.
ROUTES = tuple(dict.fromkeys(route for _, route, _ in ROUTE_PATTERNS))


class Reply(Exception):
    """Raised inside a route handler to answer with an E2B-shaped error (:func:`error_body`)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# Inputs of the base layer's key that E2B takes from its own configuration
# (phases/base/hash.go): the hashing version, a provision-script version and the
# team's disk size.  Constants here, so only the image or parent build varies.
INDEX_VERSION = "v2"
PROVISION_VERSION = "e2b-emulator"
DISK_SIZE_MB = "10240"

# --------------------------------------------------------------------------- E2B's helpers


def parse_reference(value: str, invalid: str) -> tuple[str, str | None]:
    """E2B's ``id.ParseName`` of ``name[:tag]`` or ``template_id[:tag]``.

    Returns (identifier, tag), the tag None for ``default``; raises Reply 400 with
    E2B's wording after ``invalid`` (what the route calls a malformed reference).
    Namespaces (``team/name``) are not modelled.
    """
    identifier, sep, tag = value.partition(":")
    if sep and not names.TAG.fullmatch(tag):
        raise Reply(400, f"{invalid}: invalid tag: {tag}")
    if not names.ALIAS.fullmatch(identifier):
        raise Reply(400, f"{invalid}: invalid template ID: {identifier}")
    return identifier, (tag if sep and tag != DEFAULT_TAG else None)


def validate_tags(tags: Iterable[Any]) -> list[str]:
    """E2B's ``id.ValidateAndDeduplicateTags`` (in request order); Reply 400 if one is bad."""
    valid: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not names.TAG.fullmatch(tag):
            raise Reply(400, f"Invalid tag: invalid tag '{tag}': must match ^[a-z0-9-_.]+$")
        if UUID_LIKE_RE.fullmatch(tag):
            raise Reply(400, f"Invalid tag: invalid tag '{tag}': tag cannot be a UUID")
        if tag not in valid:
            valid.append(tag)
    return valid


def as_uuid(value: str) -> str | None:
    """``value`` as a canonical UUID string, or None (PostgreSQL's try_cast_uuid)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def template_id_for(name: str) -> str:
    """A stable template ID: E2B's are 20 lowercase alphanumerics."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"e2b-emulator/{name}").hex[:20]


def hash_keys(base: str, *keys: str) -> str:
    """E2B's layer-cache key: sha256 of ``base`` and each key, each after a ';'."""
    sha = hashlib.sha256(base.encode())
    for key in keys:
        sha.update(b";" + key.encode())
    return sha.hexdigest()


def go_seconds(seconds: float) -> str:
    """A duration truncated to seconds, formatted as Go's time.Duration.String()."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def check_limit(limit: Any) -> None:
    """A team's limit is a positive integer (E2B's tiers_concurrent_template_builds_check)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"build_limit must be an integer >= 1, got {limit!r}")


def error_body(status: int, message: str) -> bytes:
    """E2B's error body shape (model ``Error``: code, message)."""
    return json.dumps({"code": status, "message": message}).encode()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat()
