"""Every environment variable e2b-matrix reads, declared once, read and validated once.

``Settings.from_env()`` reads them all at the start of a run; a bad value is
a ConfigError naming the variable (exit 2), before anything is read from the
project or sent anywhere. No other module reads ``os.environ`` for these
variables. The API key from ``~/.e2b/config.json`` is read only when a
command needs it (``Settings.require_key``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from e2b_matrix import files, names
from e2b_matrix.errors import ConfigError, CredentialsError
from e2b_matrix.retry import RetryPolicy

DEFAULT_DOMAIN = names.DEFAULT_DOMAIN
DEFAULT_LOCK = "templates.lock"
BUILD_TIMEOUT = "E2B_MATRIX_BUILD_TIMEOUT_S"
DOCKER_BUILDKIT = "E2B_MATRIX_DOCKER_BUILDKIT"
HOW_TO_LOGIN = (
    "set E2B_API_KEY, or run `e2b auth login` (it writes ~/.e2b/config.json); "
    "to build locally instead, use --backend docker (make build-all BACKEND=docker)"
)
HOUR, DAY = 3600.0, 86400.0
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


# -- parsers: text -> value, ValueError with what is wrong ----------------------


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of 1, true, yes, on, 0, false, no, off; got {text!r}")


def _number(kind: type, minimum: float, maximum: float, positive: bool = False) -> Callable[[str], Any]:
    """A parser of a number from ``minimum`` (above it when ``positive``) to ``maximum``: every
    number the tool takes is bounded where it is read, so no later sum, power or wait overflows."""

    def parse(text: str):
        try:
            value = kind(text.strip())
        except (ValueError, OverflowError):
            raise ValueError(
                f"expected {'an integer' if kind is int else 'a number'}, got {names.shown(text)}"
            ) from None
        if not math.isfinite(value) or value < minimum or value > maximum or (positive and value <= 0):
            low = f"{'>' if positive else '>='} {minimum:g}"
            raise ValueError(f"expected a number {low} and <= {maximum:g}, got {names.shown(text)}")
        return value

    return parse


def _buildkit(text: str) -> bool | None:
    return None if text.strip().lower() == "auto" else _flag(text)


def _reference(text: str) -> str:
    return names.check_lock_id(text)


def _path(text: str) -> str:
    return names.check_text(text)


# -- E2B_MATRIX_UV_ARGS: options for uv, and only options --------------------------

# What e2b-matrix passes uv itself (index.py): E2B_MATRIX_UV_ARGS may not set these.
UV_OWN = frozenset(
    {
        "-o",
        "--output-file",
        "-c",
        "--constraint",
        "--constraints",
        "-r",
        "--requirement",
        "--requirements",
        "--generate-hashes",
        "--python-version",
        "--python-platform",
        "-p",
        "--python",
        "-U",
        "--upgrade",
        "-P",
        "--upgrade-package",
        "--no-header",
        "--universal",
        "--no-deps",
        "--offline",
        "--no-python-downloads",
    }
)
# The `uv pip compile` options it may set (index, resolver, cache, output and config), each with
# whether it takes a value. Anything else is refused: a word that is no option would be read by
# uv as one more requirements file, and an option we do not know might take the next word as its
# value or change what the answer means (--no-deps, --emit-index-url, --directory).
UV_OPTIONS = {
    **dict.fromkeys(
        (
            "--index",
            "--default-index",
            "-i",
            "--index-url",
            "--extra-index-url",
            "-f",
            "--find-links",
            "--index-strategy",
            "--keyring-provider",
            "--allow-insecure-host",
            "--trusted-host",
            "--resolution",
            "--prerelease",
            "--exclude-newer",
            "--exclude-newer-package",
            "--no-binary",
            "--only-binary",
            "--no-build-isolation-package",
            "-C",
            "--config-setting",
            "-b",
            "--build-constraint",
            "--build-constraints",
            "--cache-dir",
            "--refresh-package",
            "--color",
            "--config-file",
        ),
        True,
    ),
    **dict.fromkeys(
        (
            "--no-index",
            "--native-tls",
            "--system-certs",
            "--no-build",
            "--no-build-isolation",
            "--no-sources",
            "-n",
            "--no-cache",
            "--refresh",
            "-q",
            "--quiet",
            "-v",
            "--verbose",
            "--no-progress",
            "--no-config",
        ),
        False,
    ),
}
_REPEATED = re.compile(r"-[qv]+")  # -qq, -vv


def _uv_word(word: str) -> str:
    """A word of E2B_MATRIX_UV_ARGS as an error shows it: never what a URL carries before its host."""
    if "@" in word and "://" in word:
        return f"{word.split('://', 1)[0]}://… (a URL)"
    return names.shown(word)


def _uv_args(text: str) -> tuple[str, ...]:
    """E2B_MATRIX_UV_ARGS as words (shell quoting): options of UV_OPTIONS and their values, nothing
    else; ValueError naming the first word that is not one."""
    import shlex

    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"cannot split it into words: {exc}") from None
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if flag in UV_OWN:
            raise ValueError(f"{flag} is set by e2b-matrix itself; give only index, resolver or cache options")
        if not word.startswith("-") or word == "-":
            raise ValueError(
                f"{_uv_word(word)} is not an option, and uv would read it as one more requirements "
                f"file: give options only (a folder of wheels is --find-links FOLDER)"
            )
        takes = False if _REPEATED.fullmatch(flag) else UV_OPTIONS.get(flag)
        if takes is None:
            raise ValueError(
                f"{_uv_word(flag)} is not one of the index, resolver and cache options e2b-matrix "
                f"passes to uv (such as --index-url, --find-links, --exclude-newer)"
            )
        if not takes and eq:
            raise ValueError(f"{flag} takes no value")
        if takes and not eq:
            if i + 1 == len(words) or words[i + 1].startswith("-"):
                raise ValueError(f"{flag} needs a value")
            i += 1
        elif takes and not value:
            raise ValueError(f"{flag} needs a value")
        i += 1
    return words


def _key(text: str) -> str | None:
    """An API key: surrounding whitespace stripped (a file saved on Windows), nothing odd inside."""
    key = text.strip()
    if not key:
        return None
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in key):
        raise ValueError("the key has a space, control or non-ASCII character inside it (not shown)")
    return key


@attrs.frozen
class Var:
    """One environment variable: its name, parser, default and what it does."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str

    def read(self, environ: Mapping[str, str]) -> Any:
        raw = environ.get(self.name)
        if raw is None or not raw.strip():  # set but blank is not set
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ConfigError(str(exc), key=self.name) from None


VARS = {
    v.name: v
    for v in (
        Var("E2B_API_KEY", _key, None, "the E2B API key (else teamApiKey in ~/.e2b/config.json)"),
        Var(
            "E2B_DOMAIN",
            names.check_host,
            DEFAULT_DOMAIN,
            "the E2B deployment (a self-hosted E2B); recorded in the lock",
        ),
        Var(
            "E2B_API_URL",
            names.check_http_url,
            None,
            "the API's URL when it is not https://api.<domain> (tests, emulators)",
        ),
        Var(
            "E2B_SANDBOX_URL",
            names.check_http_url,
            None,
            "one URL for all sandbox traffic (the SDK's; a local E2B's sandbox proxy)",
        ),
        Var(
            "E2B_MATRIX_ENV",
            lambda text: names.check_name(text.strip()),
            None,
            "the environment of e2b-matrix.toml every command uses (--env wins)",
        ),
        Var("E2B_TEMPLATE_ID", _reference, None, "wins over the lock in `resolve` and TemplateResolver"),
        Var("E2B_MATRIX_LOCK", _path, DEFAULT_LOCK, "the lock TemplateResolver reads when given no path"),
        Var("E2B_MATRIX_RETRY_ATTEMPTS", _number(int, 1, 100), 5, "attempts per build, above the SDK's own retries"),
        Var("E2B_MATRIX_RETRY_BASE_S", _number(float, 0, HOUR), 1.0, "first backoff delay"),
        Var("E2B_MATRIX_RETRY_MAX_DELAY_S", _number(float, 0, HOUR), 30.0, "longest backoff delay"),
        Var(
            "E2B_MATRIX_RETRY_TOTAL_S", _number(float, 0, DAY, positive=True), 300.0, "time a build may spend retrying"
        ),
        Var(
            BUILD_TIMEOUT,
            _number(float, 0, DAY, positive=True),
            3600.0,
            "seconds a build may run before it fails (E2B's own limit is an hour)",
        ),
        Var(
            "E2B_MATRIX_TEAM_BUILDS",
            _number(int, 1, 1000),
            20,
            "the team's concurrent E2B builds (its tier's limit): build's default --jobs and its ceiling",
        ),
        Var("E2B_MATRIX_NO_LOG_FILES", _flag, False, "write no log files"),
        Var("E2B_MATRIX_DOCKER_CLI", _path, None, "the docker binary (default: one that drives BuildKit, else docker)"),
        Var(DOCKER_BUILDKIT, _buildkit, None, "auto (default), 1 or 0: use BuildKit for Docker builds"),
        Var(
            "E2B_MATRIX_UV_ARGS",
            _uv_args,
            (),
            'options for every uv question, compile and "latest" (an index, --exclude-newer); options only',
        ),
        Var("E2B_MATRIX_UV", _path, None, "the uv binary (default: the one of the installed uv package)"),
    )
}


def read(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One variable, parsed and validated (for callers that need only one, like the server's resolver)."""
    return VARS[name].read(os.environ if environ is None else environ)


@attrs.frozen
class Settings:
    """What the environment says, validated. Build one with ``Settings.from_env()``."""

    api_key: str | None = attrs.field(default=None, repr=False)
    domain: str = DEFAULT_DOMAIN
    api_url: str | None = None
    template_id: str | None = None
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    build_timeout: float = 3600.0
    team_builds: int = 20
    log_files: bool = True
    docker_cli: str | None = None
    docker_buildkit: bool | None = None
    home: Path = attrs.field(factory=Path.home)
    uv_args: tuple[str, ...] = ()
    uv: str | None = None
    sandbox_url: str | None = None
    environment: str | None = None  # E2B_MATRIX_ENV; then the environment applied (environments.py)
    key_var: str = "E2B_API_KEY"  # the variable the key comes from
    key_file: bool = True  # may ~/.e2b/config.json answer when that variable is unset
    environ: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)  # the process's, as read

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, home: Path | None = None) -> Settings:
        env = os.environ if environ is None else environ
        v = {name: var.read(env) for name, var in VARS.items()}
        home = Path(home) if home is not None else Path(env.get("HOME") or Path.home())
        return cls(
            api_key=v["E2B_API_KEY"],
            domain=v["E2B_DOMAIN"],
            api_url=v["E2B_API_URL"],
            template_id=v["E2B_TEMPLATE_ID"],
            retry=RetryPolicy(
                v["E2B_MATRIX_RETRY_ATTEMPTS"],
                v["E2B_MATRIX_RETRY_BASE_S"],
                v["E2B_MATRIX_RETRY_MAX_DELAY_S"],
                v["E2B_MATRIX_RETRY_TOTAL_S"],
            ),
            build_timeout=v[BUILD_TIMEOUT],
            team_builds=v["E2B_MATRIX_TEAM_BUILDS"],
            log_files=not v["E2B_MATRIX_NO_LOG_FILES"],
            docker_cli=v["E2B_MATRIX_DOCKER_CLI"],
            docker_buildkit=v[DOCKER_BUILDKIT],
            home=home,
            uv_args=v["E2B_MATRIX_UV_ARGS"],
            uv=v["E2B_MATRIX_UV"],
            sandbox_url=v["E2B_SANDBOX_URL"],
            environment=v["E2B_MATRIX_ENV"],
            environ=dict(env),
        )

    def with_key_from(self, var: str, config_file: bool) -> Settings:
        """These settings with the key from variable ``var`` only (and the e2b CLI's config when
        ``config_file``); a key with something odd inside is one line naming ``var``."""
        return attrs.evolve(
            self, api_key=Var(var, _key, None, "").read(self.environ), key_var=var, key_file=config_file
        )

    def key(self) -> str | None:
        """The key variable's (E2B_API_KEY, or an environment's own), else ``teamApiKey`` in
        ~/.e2b/config.json when allowed; None when neither has one."""
        if self.api_key or not self.key_file:
            return self.api_key
        path = self.home / ".e2b" / "config.json"
        where = f"{path}: teamApiKey"
        try:
            text = files.read_text(path)
        except files.FileError as exc:
            raise ConfigError(str(exc), path=path) from None
        if text is None:
            return None
        try:
            data = files.parse_json(text)
        except ValueError as exc:
            raise ConfigError(str(exc), path=path) from None
        raw = data.get("teamApiKey") if isinstance(data, dict) else None
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise ConfigError("expected a string", key=where)
        try:
            return _key(raw)
        except ValueError as exc:
            raise ConfigError(str(exc), key=where) from None

    def require_key(self) -> str:
        key = self.key()
        if not key:
            if self.key_var != "E2B_API_KEY" or not self.key_file:
                raise CredentialsError(
                    f"no E2B API key: {self.key_var} is not set (environment {self.environment} takes its key from it)"
                )
            raise CredentialsError(f"no E2B API key: {HOW_TO_LOGIN}")
        return key

    def secrets(self) -> list[str]:
        """What must never be printed or stored: the key, wherever it came from, and the value of every
        variable whose name says it is a secret (each environment's key variable among them)."""
        from e2b_matrix.secrets import MIN_SECRET_LEN, SECRET_NAME

        named = [
            v.strip() for k, v in self.environ.items() if SECRET_NAME.search(k) and len(v.strip()) >= MIN_SECRET_LEN
        ]
        try:
            return [k for k in (self.api_key, self.key(), *named) if k]
        except ConfigError:
            return [k for k in (self.api_key, *named) if k]
