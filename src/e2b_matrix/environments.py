"""Environments: the E2B deployments a project builds in (a staging team and a production team, E2B's
cloud and a self-hosted E2B), each with its endpoint, its key and its own lock.

They are named in the project file ``e2b-matrix.toml`` at the project root::

    default = "staging"                  # the one used when none is named (required with several)

    [environments.staging]               # no endpoint named: the process's (E2B_DOMAIN, E2B_API_URL)
    key = "E2B_API_KEY"                  # the variable that holds its key (the default)
    team_builds = 20                     # optional: its team's concurrent builds

    [environments.prod]
    domain = "e2b.app"                   # its endpoint: domain, or api_url (a self-hosted E2B, a proxy)
    key = "E2B_API_KEY_PROD"
    lock = "templates.prod.lock"         # default: templates.<name>.lock; the default one keeps templates.lock

``--env NAME`` or ``E2B_MATRIX_ENV`` selects one for every command. A project without the file has
one environment, ``default``: the process's E2B_DOMAIN or E2B_API_URL, E2B_API_KEY (else the e2b
CLI's config), and templates.lock, as before.

An environment that names its own key variable takes its key from that variable only: never
another environment's, never E2B_API_KEY, never the e2b CLI's config; a missing key is one line
naming the variable. An environment that names its endpoint is built there whatever the process
says: the endpoint is passed to the SDK explicitly, so the SDK's own fallbacks to the process
environment (E2B_API_URL, E2B_DOMAIN: e2b/connection_config.py) never send its key elsewhere, and
an E2B_SANDBOX_URL in the process is refused. One that names none uses the process's endpoint, as
a project without the file does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from e2b_matrix import files, names
from e2b_matrix.errors import ConfigError
from e2b_matrix.settings import DEFAULT_LOCK, Settings

PROJECT_FILE = "e2b-matrix.toml"
IMPLICIT = "default"  # the one environment of a project without a project file
LOCK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.lock")
RESERVED_LOCKS = frozenset({"templates.docker.lock"})  # the Docker backend's own
ENV_KEYS = frozenset({"domain", "api_url", "sandbox_url", "key", "lock", "team_builds"})


@attrs.frozen
class Environment:
    """One E2B deployment: where it is, which variable holds its key, which lock records its builds."""

    name: str
    domain: str = ""
    api_url: str = ""
    sandbox_url: str = ""
    key: str = "E2B_API_KEY"
    lock: str = DEFAULT_LOCK
    team_builds: int | None = None
    declared: bool = True  # named in the project file (False: the implicit one)
    default: bool = True

    @property
    def make_suffix(self) -> str:
        """What ``make build-all`` needs to build here: `` ENV=prod`` (nothing for the default)."""
        return "" if self.default else f" ENV={self.name}"


@attrs.frozen
class Environments:
    """The project's environments and which one is the default."""

    items: Mapping[str, Environment]
    default: str
    path: Path | None = None  # the project file, when there is one

    def select(self, name: str | None, source: str = "--env") -> Environment:
        """The environment ``name`` (None: the default); ConfigError naming ``source`` for an unknown one."""
        if name is None:
            return self.items[self.default]
        if name not in self.items:
            where = PROJECT_FILE if self.path else f"no {PROJECT_FILE}: the one environment is {IMPLICIT!r}"
            raise ConfigError(
                f"no environment {names.shown(name)} ({where}){names.did_you_mean(name, self.items)}", key=source
            )
        return self.items[name]

    def choose(self, option: str | None, variable: str | None) -> Environment:
        """The environment a command runs in: ``--env``'s (``option``), else E2B_MATRIX_ENV's
        (``variable``), else the default; an unknown one is refused naming where it was given."""
        return self.select(option or variable, "--env" if option else "E2B_MATRIX_ENV")


def load(root: Path) -> Environments:
    """The environments of the project at ``root`` (its ``e2b-matrix.toml``, validated like every input)."""
    path = root / PROJECT_FILE
    parsed = files.load_toml(path, PROJECT_FILE)
    if parsed is None:
        return Environments({IMPLICIT: Environment(IMPLICIT, declared=False)}, IMPLICIT)
    doc = files.Table(parsed, PROJECT_FILE)
    doc.only({"default", "environments"})
    tables = doc.table("environments", required=True)
    if not tables.doc:
        raise tables.error("names no environment", "environments") from None
    default = doc.value("default", _env_name, None)
    if default is None and len(tables.doc) > 1:
        raise doc.error("missing key: with several environments, name the one used when none is given", "default")
    default = default or next(iter(tables.doc))
    if default not in tables.doc:
        raise doc.error(f"names no environment of [environments]{names.did_you_mean(default, tables.doc)}", "default")
    items = {name: _environment(tables, name, name == default) for name in tables.doc}
    _distinct_locks(tables, items)
    return Environments(items, default, path)


def _env_name(value: object) -> str:
    return names.matching(names.NAME, "an environment name (like prod)", False)(value)


def _environment(tables: files.Table, name: str, default: bool) -> Environment:
    tables.value_of(name, _env_name, name)
    t = tables.table(name)
    t.only(ENV_KEYS)
    if "domain" in t.doc and "api_url" in t.doc:
        raise t.error_at("give one endpoint: domain or api_url", "domain")
    if "sandbox_url" in t.doc and not ("domain" in t.doc or "api_url" in t.doc):
        raise t.error_at(
            "a sandbox_url goes with the environment's endpoint: name its domain or api_url", "sandbox_url"
        )
    lock = t.value("lock", _lock_name, DEFAULT_LOCK if default else f"templates.{name}.lock")
    if default and lock != DEFAULT_LOCK:
        raise t.error(f"the default environment keeps {DEFAULT_LOCK}", "lock")
    return Environment(
        name=name,
        domain=t.value("domain", names.check_host, ""),
        api_url=t.value("api_url", names.check_http_url, ""),
        sandbox_url=t.value("sandbox_url", names.check_http_url, ""),
        key=t.value("key", names.check_env_name, "E2B_API_KEY"),
        lock=lock,
        team_builds=t.value("team_builds", _team_builds, None),
        default=default,
    )


def _lock_name(value: object) -> str:
    if not isinstance(value, str) or not LOCK_NAME.fullmatch(value) or value in RESERVED_LOCKS:
        raise ValueError(
            f"{names.shown(value)} is not a lock file name of the project (like templates.prod.lock; "
            "not the Docker backend's)"
        )
    return value


def _team_builds(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise ValueError(f"expected an integer from 1 to 1000, got {names.shown(value)}")
    return value


def _distinct_locks(tables: files.Table, items: Mapping[str, Environment]) -> None:
    """Each environment's lock is its own file: two never conflict in a merge."""
    owner: dict[str, str] = {}
    for env in items.values():
        if env.lock in owner:
            raise tables.error_at(
                f"{env.lock} is the lock of {owner[env.lock]!r} too: each environment keeps its own",
                f"{names.show_key(env.name)}.lock",
            )
        owner[env.lock] = env.name


def apply(settings: Settings, env: Environment) -> Settings:
    """The settings a command runs with in ``env``: its endpoint, its key (from its variable only), its
    team's builds. The implicit environment is the process's settings as they are."""
    if not env.declared:
        return settings
    settings = attrs.evolve(
        settings.with_key_from(env.key, config_file=env.key == "E2B_API_KEY"),
        team_builds=env.team_builds or settings.team_builds,
        environment=env.name,
    )
    if not (env.domain or env.api_url):  # the process's endpoint
        return settings
    if settings.sandbox_url and not env.sandbox_url:
        raise ConfigError(
            f"is set, but environment {env.name!r} names its own endpoint ({PROJECT_FILE}): unset "
            "it, or name the environment's sandbox_url",
            key="E2B_SANDBOX_URL",
        )
    return attrs.evolve(
        settings,
        domain=env.domain or names.DEFAULT_DOMAIN,
        api_url=env.api_url or None,
        sandbox_url=env.sandbox_url or None,
    )
