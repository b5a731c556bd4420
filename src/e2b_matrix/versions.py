"""Which package releases a given Python can run: "latest" -> a concrete version.

The index is PyPI's JSON API (``<base>/<package>/json``), cached on disk for
``E2B_MATRIX_INDEX_TTL`` seconds. Versions and ``Requires-Python`` are
compared with ``packaging``: post-releases are releases; pre-releases, dev
releases and yanked files never make "latest" (a pinned version may be any).
A ``file://`` base serves tests and air-gapped machines.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import attrs

from e2b_matrix import files
from e2b_matrix.errors import ConfigError

log = logging.getLogger(__name__)


@attrs.frozen
class Release:
    """One release as the index describes it."""

    version: str
    requires_python: str | None = None
    yanked: bool = False


def _pypi_json_base() -> str:
    # The one private API we use: pip knows where the public index is, and we
    # do not repeat its address. E2B_MATRIX_PYPI_URL overrides it.
    try:
        from pip._internal.models.index import PyPI
    except Exception as exc:  # pragma: no cover - pip ships in every venv
        raise ConfigError(f"set it to a JSON API base URL ({exc})", key="E2B_MATRIX_PYPI_URL") from None
    return PyPI.pypi_url.rstrip("/")


class StaticIndex:
    """An index given as data: {package: {version: requires_python}} (tests)."""

    def __init__(self, releases):
        self._releases = {p: [Release(v, rp) for v, rp in rs.items()] for p, rs in releases.items()}

    def releases(self, package: str) -> list[Release]:
        return list(self._releases.get(package, []))


class PyPIIndex:
    """PyPI's JSON API with an on-disk cache of ``ttl`` seconds; ``offline`` uses the cache at any age."""

    def __init__(self, url: str | None = None, cache_dir: Path | None = None, ttl: float = 900.0,
                 timeout: float = 15.0, offline: bool = False):
        self._url = url.rstrip("/") if url else None
        self.cache_dir = cache_dir
        self.ttl = ttl
        self.timeout = timeout
        self.offline = offline
        self.asked: list[str] = []  # URLs fetched in this run (what `plan` tells the user)
        self._memo: dict[str, list[Release]] = {}

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = _pypi_json_base()
        return self._url

    def _cache_file(self, package: str) -> Path | None:
        if self.cache_dir is None or self.url.startswith("file:"):
            return None
        safe = re.sub(r"[^a-z0-9]+", "_", f"{self.url}_{package}".lower())[-120:]
        return self.cache_dir / f"pypi-{safe}.json"

    def releases(self, package: str) -> list[Release]:
        """Every release of ``package`` (empty when it has none); ConfigError when the index cannot say."""
        if package not in self._memo:
            cache = self._cache_file(package)
            found = self._from_cache(cache, any_age=self.offline)
            if found is None:
                if self.offline:
                    raise ConfigError(f"{package} is not in the index cache and --offline forbids asking "
                                      "the package index", key="--offline")
                found = self._fetch(package)
                self._store(cache, found)
            self._memo[package] = found
        return self._memo[package]

    def _from_cache(self, cache: Path | None, any_age: bool) -> list[Release] | None:
        if cache is None:
            return None
        try:
            if not any_age and time.time() - cache.stat().st_mtime >= self.ttl:
                return None
            text = files.read_text(cache)
            if text is None:
                return None
            return [Release(v, rp, bool(y)) for v, rp, y in files.parse_json(text)]
        except (OSError, ValueError, TypeError):  # unreadable or corrupt: discard it and ask again
            log.info("discarding the index cache %s (unreadable or corrupt)", cache)
            try:
                cache.unlink()
            except OSError:
                pass
            return None

    def _store(self, cache: Path | None, found: list[Release]) -> None:
        if cache is None:
            return
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps([[r.version, r.requires_python, r.yanked] for r in found])
            files.atomic_write(cache, data.encode())
        except OSError as exc:
            log.info("cannot cache the index: %s", exc)

    def _fetch(self, package: str) -> list[Release]:
        url = f"{self.url}/{package}/json"
        self.asked.append(url)
        try:
            if url.startswith("file:"):
                from urllib.parse import unquote, urlsplit

                raw = files.read_bytes(unquote(urlsplit(url).path))
                if raw is None:
                    raise FileNotFoundError("no such file")
            else:
                import urllib.request

                with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                    raw = resp.read(files.MAX_FILE_BYTES + 1)
                if len(raw) > files.MAX_FILE_BYTES:
                    raise files.too_large(len(raw))
            doc = files.parse_json(raw)
        except (OSError, ValueError) as exc:  # URLError is an OSError
            raise ConfigError(f"cannot read the package index for {package} ({exc}); "
                              "use --offline to reuse the versions in the lock", key=url) from None
        return parse_releases(doc, url)


def parse_releases(doc, url: str) -> list[Release]:
    """The releases of a JSON API answer; ConfigError naming the URL when it has another shape."""
    releases = doc.get("releases") if isinstance(doc, dict) else None
    if not isinstance(releases, dict):
        raise ConfigError('not a package index answer (expected an object with a "releases" object)', key=url)
    out = []
    for version, dists in releases.items():
        if not isinstance(dists, list) or not all(isinstance(d, dict) for d in dists):
            raise ConfigError(f"release {version!r}: expected a list of files", key=url)
        live = [d for d in dists if not d.get("yanked")]
        specs = sorted({d.get("requires_python") for d in (live or dists) if isinstance(d.get("requires_python"), str)
                        and d.get("requires_python")})
        if dists:
            out.append(Release(version, specs[0] if specs else None, yanked=not live))
    return out


def _version(text: str):
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def admits(specifier: str | None, python: str) -> bool:
    """Does a Requires-Python specifier admit ``python`` (a release like "3.12")?

    A specifier ``packaging`` cannot parse admits nothing: guessing could pick
    a release that does not install.
    """
    if not specifier:
        return True
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        spec = SpecifierSet(specifier)
    except InvalidSpecifier:
        return False
    return spec.contains(python, prereleases=True)


def newest_for(index, package: str, python: str) -> str | None:
    """The newest final (or post) release of ``package``, not yanked, whose Requires-Python admits ``python``."""
    best = None
    for r in index.releases(package):
        v = _version(r.version)
        if v is None or v.is_prerelease or r.yanked or not admits(r.requires_python, python):
            continue
        if best is None or v > best[0]:
            best = (v, r.version)
    return best[1] if best else None


def find(index, package: str, version: str) -> Release | None:
    """The release ``version`` (by equal version: 1.0 == 1.0.0), or None when the index lacks it."""
    wanted = _version(version)
    for r in index.releases(package):
        if r.version == version or (wanted is not None and _version(r.version) == wanted):
            return r
    return None

