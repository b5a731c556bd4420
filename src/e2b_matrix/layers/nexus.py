"""nexus: the Nexus CLI (``nexus-ai-fs``) at an exact version.

``version = "latest"`` is resolved to a concrete release when a build is
planned: E2B caches a step by its text, so an unpinned install would be
served from cache forever. "latest" means the newest release the base's
Python can run; a pinned release it cannot run is an error naming both.
Offline (``--offline``), "latest" is the version in the lock, else the
newest in the index cache of any age.
"""

from e2b_matrix import names, versions
from e2b_matrix.errors import ConfigError
from e2b_matrix.model import Check, Layer, Param, pip

PACKAGE = "nexus-ai-fs"
KEY = "params.nexus.version"


def _steps(params, ctx):
    return (pip((f"{PACKAGE}=={params['version']}",)),)


def _checks(params, ctx):
    return (Check("nexus --version", command="nexus --version", expect=params["version"]),)


def _resolve(params, ctx, resolver):
    """Pin the version for the base's Python (``resolver`` knows the index and the lock)."""
    wanted, python = params["version"], ctx.python
    if wanted == "latest":
        locked = resolver.locked_layer_version("nexus") if resolver.offline else None
        if locked is not None:  # the lock is input: a version reaches a build step only as a version
            try:
                names.check_version(locked)
            except ValueError as exc:
                raise resolver.error(f"the lock's nexus version: {exc}", KEY) from None
        newest = locked or versions.newest_for(resolver.index, PACKAGE, python)
        if newest is None:
            raise resolver.error(f"no {PACKAGE} release runs on the base's Python {python}", KEY)
        return {**params, "version": newest}
    try:
        release = versions.find(resolver.index, PACKAGE, wanted)
    except ConfigError:
        if resolver.offline:  # nothing cached to check against: the lock or the build will tell
            return params
        raise
    if release is None:
        raise resolver.error(f"{PACKAGE} {wanted} is not a release in the package index", KEY)
    if not versions.admits(release.requires_python, python):
        raise resolver.error(f"{PACKAGE} {wanted} requires Python {release.requires_python}, "
                             f"but the base's Python is {python}", KEY)
    return params


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
