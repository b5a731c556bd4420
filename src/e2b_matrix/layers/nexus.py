"""nexus: the Nexus CLI (``nexus-ai-fs``) at an exact version.

``version = "latest"`` is resolved to a concrete release when a build is
planned: E2B caches a step by its text, so an unpinned install would be
served from cache forever. "latest" means the newest release the base's
Python can run; a pinned release it cannot run is an error naming both.
"""


from e2b_matrix.layers import checks as c
from e2b_matrix.model import Check, Layer, Param, pip
from e2b_matrix import versions

PACKAGE = "nexus-ai-fs"
KEY = "params.nexus.version"


def _steps(params, ctx):
    return (pip((f"{PACKAGE}=={params['version']}",)),)


def _checks(params, ctx):
    return (Check("nexus --version", command="nexus --version", expect=params["version"]),)


def _resolve(params, ctx, resolver):
    """Pin the version for the base's Python (``resolver`` knows the index and the lock)."""
    wanted = params["version"]
    python = ctx.python
    if wanted == "latest":
        if resolver.offline:
            locked = resolver.locked_layer_version("nexus")
            if not locked:
                raise resolver.error('"latest" cannot be resolved offline: this variant has no lock entry '
                                     "to reuse (run once without --offline)", KEY)
            return {**params, "version": locked}
        newest = versions.newest_for(resolver.index, PACKAGE, python)
        if newest is None:
            raise resolver.error(f"no {PACKAGE} release runs on the base's Python {python}", KEY)
        return {**params, "version": newest}
    if not resolver.offline:
        known, spec = versions.requires_python(resolver.index, PACKAGE, wanted)
        if not known:
            raise resolver.error(f"{PACKAGE} {wanted} is not a release in the package index", KEY)
        if not versions.admits(spec, python):
            raise resolver.error(f"{PACKAGE} {wanted} requires Python {spec}, but the base's Python is {python}",
                                 KEY)
    return params


LAYER = Layer(
    name="nexus",
    version="1",
    description="Nexus AI FS (nexus-ai-fs) at a pinned or resolved version",
    requires=("base",),
    params=(Param("version", "latest", '"latest" or an exact nexus-ai-fs version', c.version_or_latest),),
    steps=_steps,
    checks=_checks,
    recorded_version=lambda params: params["version"],
    resolve=_resolve,
)


