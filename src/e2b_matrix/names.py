"""Every rule a name or a value must follow, in one place.

Each ``check_*`` returns the value or raises ValueError with a message that
says what is wrong without the "where": the caller (the config loader, the
settings, ``--set``) adds the file, key or variable. Patterns are matched
whole with ``fullmatch``: ``$`` would let a trailing newline through.
"""

from __future__ import annotations

import re

ALIAS = re.compile(r"[a-z0-9-_]+")                 # E2B template names
TAG = re.compile(r"[a-z0-9-_.]+")                  # E2B tags
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")         # our variant and layer names
AXIS = re.compile(r"[a-z_][a-z0-9_]*")             # [matrix] axes
PYTHON = re.compile(r"3\.\d{1,2}")
VERSION = re.compile(r"\d+(\.\d+)*")
PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*(==[A-Za-z0-9._+!-]+)?")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
USER = re.compile(r"[a-z_][a-z0-9_-]*\$?")
TEMPLATE_REF = re.compile(r"([a-z0-9][a-z0-9_-]*/)?[a-z0-9][a-z0-9_-]*(:[a-z0-9_.-]+)?")
IMAGE_REF = re.compile(r"[a-z0-9][a-z0-9._/:@-]*", re.IGNORECASE)
# What the lock's IDs may hold: what E2B, Docker and a shell take as one word.
LOCK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE)
# The channel a bare alias means: only `promote` moves it.
DEFAULT_CHANNEL = "default"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # newline and tab allowed


def type_name(value) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a float",
            list: "a list", tuple: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def control_char(value: str, multiline: bool = False) -> str | None:
    """The first control character in ``value`` (newline and tab allowed when ``multiline``), as shown."""
    m = (_CONTROL_BUT_LINES if multiline else _CONTROL).search(value)
    return None if m is None else repr(m.group())[1:-1]


def check_text(value, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    bad = control_char(value, multiline)
    if bad:
        raise ValueError(f"contains a control character ({bad})")
    return value


def nonempty_text(value) -> str:
    if not check_text(value).strip():
        raise ValueError("must not be empty")
    return value


def matching(pattern: re.Pattern, what: str, show_pattern: bool = True):
    """A check that the whole value matches ``pattern``."""
    hint = f" (must match ^{pattern.pattern}$)" if show_pattern else ""

    def check(value) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type_name(value)}")
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}{hint}")
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


def check_image(value) -> str:
    return _image(nonempty_text(value))


def check_package(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a package name")
    return _package(value)


def check_python(value) -> str:
    if not isinstance(value, str) or not PYTHON.fullmatch(value):
        raise ValueError(f'expected a Python version like "3.12", got {value!r}')
    return value


def check_tag(value) -> str:
    """An E2B tag: not shaped like a UUID (E2B refuses those)."""
    check_tag_shape(value)
    if UUID.fullmatch(value):
        raise ValueError(f"{value!r} looks like a UUID, which E2B refuses as a tag")
    return value


def check_variant_tag(value) -> str:
    """A tag every build of the variant moves: never the channel a bare alias means."""
    check_tag(value)
    if value == DEFAULT_CHANNEL:
        raise ValueError(f"{value!r} is the channel a bare alias means: only `promote` moves it")
    return value


def check_version_or_latest(value) -> str:
    if value == "latest":
        return value
    if not isinstance(value, str) or not VERSION.fullmatch(value):
        raise ValueError(f'expected "latest" or an exact version like "0.5.6", got {value!r}')
    return value


def check_packages(value) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of package names, got {type_name(value)}")
    return tuple(check_package(item) for item in value)


def check_lock_id(value) -> str:
    """A template or build ID as the lock may hold it: one printable word."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    if not LOCK_ID.fullmatch(value):
        raise ValueError("must be one word of letters, digits and ._:/@+- (no spaces, quotes or control characters)")
    return value
