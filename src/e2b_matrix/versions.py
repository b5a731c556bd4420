"""Which package releases a given Python can run: "latest" -> a concrete version.

The index is PyPI's JSON API (``<base>/<package>/json``), cached on disk for a
short time. The base URL comes from ``E2B_MATRIX_PYPI_URL``, else from pip's
own notion of PyPI; a ``file://`` base serves tests and air-gapped machines.
Versions and ``Requires-Python`` specifiers are compared with a small
parser of our own (release versions only; pre-releases are never "latest").
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from e2b_matrix import readlog
from e2b_matrix.errors import ConfigError

log = logging.getLogger(__name__)

_RELEASE = re.compile(r"^\d+(\.\d+)*$")
_CLAUSE = re.compile(r"^\s*(~=|==|!=|<=|>=|<|>|===)\s*([0-9][0-9a-zA-Z.*+!-]*)\s*$")
DEFAULT_TTL_S = 900.0


def parse_version(text: str) -> tuple[int, ...]:
    """'0.9.26' -> (0, 9, 26); trailing zeros dropped so 3.12 == 3.12.0."""
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def is_release(text: str) -> bool:
    return bool(_RELEASE.match(text))


def admits(specifier: str | None, python: str) -> bool:
    """Does a Requires-Python specifier (e.g. '>=3.12,<4') admit ``python``?

    Clauses it cannot parse admit (as pip would not refuse on our behalf).
    """
    if not specifier:
        return True
    py = parse_version(python)
    for clause in specifier.split(","):
        if not clause.strip():
            continue
        m = _CLAUSE.match(clause)
        if not m:
            continue
        op, ver = m.groups()
        if ver.endswith(".*"):
            prefix = parse_version(ver[:-2])
            match = py[: len(prefix)] == prefix or (py + (0,) * len(prefix))[: len(prefix)] == prefix
            if (op == "==") != match:
                return False
            continue
        try:
            v = parse_version(ver)
        except ValueError:
            continue
        ok = {
            ">=": py >= v, ">": py > v, "<=": py <= v, "<": py < v,
            "==": py == v, "===": py == v, "!=": py != v,
            "~=": py >= v and py[: len(v) - 1] == v[: len(v) - 1],
        }[op]
        if not ok:
            return False
    return True


class StaticIndex:
    """An index given as data: {package: {version: requires_python}} (tests)."""

    def __init__(self, releases: Mapping[str, Mapping[str, str | None]]):
        self._releases = {k: dict(v) for k, v in releases.items()}

    def releases(self, package: str) -> dict[str, str | None]:
        return dict(self._releases.get(package, {}))


def default_index_url() -> str:
    url = os.environ.get("E2B_MATRIX_PYPI_URL")
    if url:
        return url.rstrip("/")
    try:  # pip knows where PyPI is; we do not repeat it.
        from pip._internal.models.index import PyPI
    except Exception as exc:  # pragma: no cover - pip always ships in a venv
        raise ConfigError(f"set E2B_MATRIX_PYPI_URL to a JSON API base URL ({exc})",
                          key="E2B_MATRIX_PYPI_URL") from None
    return PyPI.pypi_url.rstrip("/")


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "e2b-matrix"


class PyPIIndex:
    """PyPI's JSON API with an on-disk cache of ``ttl`` seconds."""

    def __init__(self, url: str | None = None, cache_dir: Path | None = None,
                 ttl: float | None = None, timeout: float = 15.0):
        self._url = url.rstrip("/") if url else None
        self.cache_dir = cache_dir or default_cache_dir()
        if ttl is None:
            ttl = float(os.environ.get("E2B_MATRIX_INDEX_TTL", DEFAULT_TTL_S))
        self.ttl = ttl
        self.timeout = timeout
        self._memo: dict[str, dict[str, str | None]] = {}

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = default_index_url()
        return self._url

    def _cache_file(self, package: str) -> Path:
        safe = re.sub(r"[^a-z0-9]+", "_", f"{self.url}_{package}".lower())[-120:]
        return self.cache_dir / f"pypi-{safe}.json"

    def releases(self, package: str) -> dict[str, str | None]:
        if package in self._memo:
            return self._memo[package]
        cache = self._cache_file(package)
        local = self.url.startswith("file:")
        if not local:
            try:
                if time.time() - cache.stat().st_mtime < self.ttl:
                    text = cache.read_text()
                    data = json.loads(text)
                    readlog.note_file(cache, text, ttl=self.ttl)
                    self._memo[package] = data
                    return data
            except (OSError, ValueError):
                pass
        data = self._fetch(package)
        if not local:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp")
                text = json.dumps(data, sort_keys=True)
                tmp.write_text(text)
                os.replace(tmp, cache)
                readlog.note_file(cache, text, ttl=self.ttl)
            except OSError as exc:
                log.debug("cannot cache the index: %s", exc)
                readlog.taint("the package index could not be cached")
        self._memo[package] = data
        return data

    def _fetch(self, package: str) -> dict[str, str | None]:
        url = f"{self.url}/{package}/json"
        try:
            if url.startswith("file:"):  # a local index: no need for urllib.request's weight
                from urllib.parse import unquote, urlsplit

                path = unquote(urlsplit(url).path)
                with open(path, "rb") as f:
                    raw = f.read()
                readlog.note_file(path, raw)
                doc = json.loads(raw)
            else:
                import urllib.request

                with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                    doc = json.load(resp)
        except (OSError, ValueError) as exc:  # URLError is an OSError
            raise ConfigError(f"cannot read the package index for {package} ({exc}); "
                              "use --offline to reuse the versions in the lock",
                              key="nexus.version") from None
        out: dict[str, str | None] = {}
        for version, files in (doc.get("releases") or {}).items():
            files = [f for f in files or [] if not f.get("yanked")]
            if not files:
                continue
            specs = {f.get("requires_python") for f in files}
            out[version] = sorted(s for s in specs if s)[0] if any(specs) else None
        return out


def newest_for(index, package: str, python: str) -> str | None:
    """The newest release of ``package`` whose Requires-Python admits ``python``."""
    candidates = [v for v, spec in index.releases(package).items()
                  if is_release(v) and admits(spec, python)]
    return max(candidates, key=parse_version) if candidates else None


def requires_python(index, package: str, version: str) -> tuple[bool, str | None]:
    """(known, specifier) for one release; known is False when the index lacks it."""
    releases = index.releases(package)
    if version not in releases:
        return False, None
    return True, releases[version]
