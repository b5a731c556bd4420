"""Every rule a name or a value must follow, in one place.

Each ``check_*`` returns the value or raises ValueError with a message that
says what is wrong without the "where": the caller (the config loader, the
settings, ``--set``) adds the file, key or variable. Patterns are matched
whole with ``fullmatch``: ``$`` would let a trailing newline through.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

ALIAS = re.compile(r"[a-z0-9-_]+")  # E2B template names
TAG = re.compile(r"[a-z0-9-_.]+")  # E2B tags
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # our variant and layer names
AXIS = re.compile(r"[a-z_][a-z0-9_]*")  # [matrix] axes
PYTHON = re.compile(r"3\.\d{1,2}")
VERSION = re.compile(r"\d+(\.\d+)*")
PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*(==[A-Za-z0-9._+!-]+)?")
PROJECT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # a Python project's name (PEP 508)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
USER = re.compile(r"[a-z_][a-z0-9_-]*\$?")
TEMPLATE_REF = re.compile(r"([a-z0-9][a-z0-9_-]*/)?[a-z0-9][a-z0-9_-]*(:[a-z0-9_.-]+)?")
IMAGE_REF = re.compile(r"[a-z0-9][a-z0-9._/:@-]*", re.IGNORECASE)
# What the lock's IDs may hold: what E2B, Docker and a shell take as one word.
LOCK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")
FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
# A layer's version as the lock records it ("1", nexus-ai-fs's "0.9.26"): one word, nothing a shell reads.
LAYER_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]{0,63}")
INPUT_KEY = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,127}")  # "nexus.version", "cpu_count"
HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?")
DEFAULT_DOMAIN = "e2b.app"
UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE)
# The channel a bare alias means: only `promote` moves it.
DEFAULT_CHANNEL = "default"

# C0, DEL and C1 (a lone \x9b starts a terminal escape sequence as \x1b[ does)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # newline and tab allowed


def printable(text: str, lines: bool = False) -> str:
    """``text`` with every control character escaped as Python writes it (``\\n``, ``\\x1b``), so that
    what a line says stays one line and no terminal sequence reaches a screen; ``lines``: newlines
    and tabs are kept (a message made of lines). Every line the tool prints passes through this."""
    pattern = _CONTROL_BUT_LINES if lines else _CONTROL
    if not pattern.search(text):
        return text
    return pattern.sub(lambda m: repr(m.group())[1:-1], text)


def type_name(value: object) -> str:
    """What a value read from TOML (or JSON) is, as an error message says it."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return "a local date-time (no timezone)"
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        list: "an array",
        tuple: "an array",
        dict: "a table",
        dt.datetime: "a date-time",
        dt.date: "a date",
        dt.time: "a time",
    }.get(type(value), type(value).__name__)


def control_char(value: str, multiline: bool = False) -> str | None:
    """The first control character in ``value`` (newline and tab allowed when ``multiline``), as shown."""
    m = (_CONTROL_BUT_LINES if multiline else _CONTROL).search(value)
    return None if m is None else repr(m.group())[1:-1]


def check_text(value: object, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    bad = control_char(value, multiline)
    if bad:
        raise ValueError(f"contains a control character ({bad})")
    return value


def nonempty_text(value: object) -> str:
    text = check_text(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # a bare TOML key


def show_key(key: str) -> str:
    """A table key as an error message may show it: plain when it is a bare TOML key, else quoted and escaped."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def near(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest ``word`` when one is near enough to be a typo of it: the one did-you-mean."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return close[0] if close else None


def listing(choices: Iterable[str], limit: int = 25) -> str:
    """Choices as an error lists them: sorted, comma separated, at most ``limit`` of them."""
    items = sorted(set(choices))
    more = f", … ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """What an error about an unknown ``word`` adds: "; did you mean 'x'?" for a near match among
    ``choices``, else " (known: a, b, ...)", else "" when there are none."""
    choices = list(choices)
    close = near(word, choices)
    if close is not None:
        return f"; did you mean {close!r}?"
    return f" (known: {listing(choices)})" if choices else ""


def shown(value: object, limit: int = 60) -> str:
    """A value as an error message shows it: repr (control characters escaped), cut to ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "…" + text[-1]


Check = Callable[[object], str]  # a check_*: any value in, the value as a string out (else ValueError)


def matching(pattern: re.Pattern[str], what: str, show_pattern: bool = True) -> Check:
    """A check that the whole value matches ``pattern``."""
    hint = f" (must match ^{pattern.pattern}$)" if show_pattern else ""

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type_name(value)}")
        if not pattern.fullmatch(value):
            raise ValueError(f"{shown(value)} is not {what}{hint}")
        return value

    check.__name__ = f"check_{what.replace(' ', '_')}"
    return check


check_alias = matching(ALIAS, "a valid E2B template name")
check_name = matching(NAME, "a valid variant name")
check_layer_name = matching(NAME, "a valid layer name")
check_axis = matching(AXIS, "a matrix axis (a lowercase identifier)", False)
check_template_ref = matching(TEMPLATE_REF, 'an E2B template name or ID (like "code-interpreter-v1")', False)
_image = matching(IMAGE_REF, 'an image reference (like "debian:bookworm")', False)
check_env_name = matching(ENV_NAME, "an environment variable name", False)
check_user = matching(USER, "a user name", False)
_package = matching(PACKAGE, "a package name", False)
check_tag_shape = matching(TAG, "a valid E2B tag")


check_fingerprint = matching(FINGERPRINT, "a fingerprint (sha256: and 64 hex digits)", False)
check_layer_version = matching(LAYER_VERSION, "a layer version (one word of letters, digits and ._+!-)", False)
check_input_key = matching(INPUT_KEY, "an input's name (like nexus.version)", False)


MAX_PORT = 65535


def _check_port(port: int | None) -> None:
    if port is not None and not 1 <= port <= MAX_PORT:
        raise ValueError(f"port {port} is not a TCP port (1 to {MAX_PORT})")


def check_host(value: object) -> str:
    """A host name, with an optional port of 1 to 65535: ``e2b.app``, ``e2b.example.com:8443``."""
    if not isinstance(value, str) or not HOST.fullmatch(value):
        raise ValueError(f"expected a host name like {DEFAULT_DOMAIN}, got {shown(value)}")
    _, colon, port = value.partition(":")
    _check_port(int(port) if colon else None)
    return value


# A URL's user information (``scheme://user:password@host``): a password there is a secret
# wherever the URL goes (printed, logged, recorded in the lock), so no URL we take may hold one.
URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#@]*)@")


def shown_url(value: str) -> str:
    """A URL as a message may show it: its user information masked (``http://***@host``), control
    characters escaped, cut to 100 characters."""
    return shown(URL_USERINFO.sub(r"\1***@", value), 100)


def check_url(value: object, schemes: tuple[str, ...] = ("http", "https", "file")) -> str:
    """A base URL (no query or fragment, no space or control character, no user or password, a port
    of 1 to 65535), without a trailing slash. A message never shows a password the value holds."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    if control_char(value) or " " in value:
        raise ValueError("contains a space or control character")
    if URL_USERINFO.search(value) or "@" in value.partition("://")[2].partition("/")[0]:
        raise ValueError(
            f"{shown_url(value)} holds a user name or password (not shown): a URL is printed, "
            "logged and recorded, so it takes no credentials"
        )
    try:
        parts = urlsplit(value)
        _check_port(parts.port)  # urlsplit raises ValueError above 65535
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "file"):
        raise ValueError(
            f"expected an {'http(s)' if 'file' not in schemes else 'http(s) or file'}:// URL, got {shown_url(value)}"
        )
    if parts.query or parts.fragment:
        raise ValueError("a base URL takes no query or fragment")
    return value.rstrip("/")


def check_http_url(value: object) -> str:
    return check_url(value, ("http", "https"))


# A Python or Debian package as an inventory records it: pip's canonical names, Debian's names
# (libstdc++6), versions of both kinds (1.0.post1+local, 1:2.36-9+deb12u4, 3.0~rc1).
PACKAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
PACKAGE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~:!-]{0,127}")
check_package_name = matching(PACKAGE_NAME, "a package name", False)
check_package_version = matching(PACKAGE_VERSION, "a package version", False)


def check_image(value: object) -> str:
    return _image(nonempty_text(value))


def check_package(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a package name")
    return _package(value)


def check_python(value: object) -> str:
    if not isinstance(value, str) or not PYTHON.fullmatch(value):
        raise ValueError(f'expected a Python version like "3.12", got {value!r}')
    return value


def check_tag(value: object) -> str:
    """An E2B tag: not shaped like a UUID (E2B refuses those)."""
    tag = check_tag_shape(value)
    if UUID.fullmatch(tag):
        raise ValueError(f"{tag!r} looks like a UUID, which E2B refuses as a tag")
    return tag


def check_variant_tag(value: object) -> str:
    """A tag every build of the variant moves: never the channel a bare alias means."""
    tag = check_tag(value)
    if tag == DEFAULT_CHANNEL:
        raise ValueError(f"{tag!r} is the channel a bare alias means: only `promote` moves it")
    return tag


def check_version(value: object) -> str:
    if not isinstance(value, str) or not VERSION.fullmatch(value):
        raise ValueError(f'expected an exact version like "0.5.6", got {shown(value)}')
    return value


def check_version_or_latest(value: object) -> str:
    if isinstance(value, str) and (value == "latest" or VERSION.fullmatch(value)):
        return value
    raise ValueError(f'expected "latest" or an exact version like "0.5.6", got {shown(value)}')


def check_packages(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of package names, got {type_name(value)}")
    return tuple(check_package(item) for item in value)


def check_timestamp(value: object) -> dt.datetime:
    """A date-time with a timezone, as UTC; ValueError for a naive one or one outside 1970 to 9999 in UTC
    (``0001-01-01 00:00:00+05:00`` is no time a build was made, and converting it overflows)."""
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise ValueError(f"expected a date-time with a timezone, got {shown(value)}")
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:
        utc = None
    if utc is None or utc < dt.datetime(1970, 1, 1, tzinfo=dt.UTC):
        raise ValueError(f"{value.isoformat()} is outside the times e2b-matrix records (1970 to 9999, in UTC)")
    return utc


def check_lock_id(value: object) -> str:
    """A template or build ID as the lock may hold it: one printable word."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    if not LOCK_ID.fullmatch(value):
        raise ValueError("must be one word of letters, digits and ._:/@+- (no spaces, quotes or control characters)")
    return value
