"""nexus: the Nexus CLI (``nexus-ai-fs``) at an exact version.

``version = "latest"`` is resolved to a concrete release when a build is
planned: E2B caches a step by its text, so an unpinned install would be
served from cache forever. "latest" is the newest release the base's Python
can run, as uv answers it with the run's index settings (index.py); a pinned
version is checked the same way: not a release, or one the base's Python
cannot run, is an error naming both versions. Offline (``--offline``),
"latest" is the version in the lock, else what uv's cache answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from e2b_matrix import names
from e2b_matrix.index import UvFailed
from e2b_matrix.model import Check, Context, Layer, Param, Step, pip
from e2b_matrix.pins import PLATFORM

if TYPE_CHECKING:
    from e2b_matrix.resolve import Resolver

PACKAGE = "nexus-ai-fs"
KEY = "params.nexus.version"


def _steps(params: Mapping[str, Any], ctx: Context) -> tuple[Step, ...]:
    return (pip((f"{PACKAGE}=={params['version']}",)),)


# The installed distribution's version, as pip recorded it: the CLI's own ``--version`` is not
# it (nexus-ai-fs 0.9.21 to 0.9.26 all print 0.9.20), so it only has to run.
INSTALLED = f"python3 -c \"from importlib.metadata import version; print('{PACKAGE}', version('{PACKAGE}'))\""


def _checks(params: Mapping[str, Any], ctx: Context) -> tuple[Check, ...]:
    return (
        Check(f"{PACKAGE} version", command=INSTALLED, version=params["version"]),
        Check("nexus --version", command="nexus --version"),
    )


def _resolve(params: dict[str, Any], ctx: Context, resolver: Resolver) -> dict[str, Any]:
    """Pin the version for the base's Python (``resolver`` knows the index and the lock)."""
    wanted, python, index = params["version"], ctx.python, resolver.index
    assert index is not None, "resolving nexus needs a package index (resolve.build_spec's index)"
    if wanted == "latest":
        locked = resolver.locked_layer_version("nexus") if resolver.offline else None
        if locked is not None:  # the lock is input: a version reaches a build step only as a version
            try:
                return {**params, "version": names.check_version(locked)}
            except ValueError as exc:
                raise resolver.error(f"the lock's nexus version: {exc}", KEY) from None
        try:
            newest = index.newest(PACKAGE, python, PLATFORM)
        except UvFailed as exc:
            raise resolver.error(_unanswered(exc, f"the newest {PACKAGE} for Python {python}"), KEY) from None
        if newest is None:
            raise resolver.error(f"no {PACKAGE} release runs on the base's Python {python}", KEY)
        return {**params, "version": newest}
    try:
        problem = index.problem(PACKAGE, wanted, python, PLATFORM)
    except UvFailed as exc:
        if exc.offline_miss:  # nothing cached to check against: the lock or the build will tell
            return params
        raise resolver.error(_unanswered(exc, f"{PACKAGE} {wanted} for Python {python}"), KEY) from None
    if problem:
        raise resolver.error(problem, KEY)
    return params


def _unanswered(exc: UvFailed, question: str) -> str:
    if exc.offline_miss:
        return f"uv's cache cannot say {question}, and --offline forbids asking the package index"
    return f"uv cannot say {question}: {exc.reason}; --offline reuses the version in the lock"


LAYER = Layer(
    name="nexus",
    version="1",
    description="Nexus AI FS (nexus-ai-fs) at a pinned or resolved version",
    requires=("base",),
    params=(Param("version", "latest", '"latest" or an exact nexus-ai-fs version', names.check_version_or_latest),),
    steps=_steps,
    checks=_checks,
    recorded_version=lambda params: params["version"],
    resolve=_resolve,
)
